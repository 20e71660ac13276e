"""The guided start: from a folder of the analyst's imagery to a model and an index chosen in
the dock, as one chain of engine jobs (train, then index), each an `EngineTask` with progress,
remaining time and cancel. The plan is remembered (settings) at every step, so a start that
was cancelled or cut short by closing QGIS resumes where it stopped: a trained model is never
trained again, and the index build is itself resumable."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qgis.PyQt.QtCore import QObject, pyqtSignal

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.band_profiles import SourceProposal
from mrhash_qgis.contract.choices import DEFAULT_AE_EPOCHS, DEFAULT_EPOCHS
from mrhash_qgis.contract.protocol import (
    IndexRequest,
    IndexResult,
    SourceEntry,
    TrainOptions,
    TrainRequest,
    TrainResult,
)
from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import EngineClient
from mrhash_qgis.core.engine_task import EngineTask
from mrhash_qgis.core.i18n import tr

TRAIN, INDEX, DONE = "train", "index", "done"
# the time a training with the default settings takes on 2 CPU cores, 4 sources, measured
# (docs/BENCHMARKS.md: 1,700 tiles in 121 s idle, 10,920 in 374 s): seconds per tile of the
# feature pass, per autoencoder and per hash step (64 tiles, the views); the optimiser steps
# of each stage are capped (TrainConfig.max_steps), so big samples cost mostly their features
FEATURE_S, AE_STEP_S, HASH_STEP_S, FIXED_S = 0.027, 0.02, 0.1, 12.0
BATCH, MAX_STEPS = 64, 1000
MIN_SAMPLES = 256
MAX_SAMPLES_LIMIT = 1_000_000
# the share of the whole start's progress bar each stage takes
TRAIN_SHARE = 0.8


def training_seconds(n: int) -> float:
    """About how long training on n tiles takes with the default settings here."""
    per_epoch = -(-n // BATCH)
    steps = {epochs: min(epochs, max(1, MAX_STEPS // per_epoch)) * per_epoch
             for epochs in (DEFAULT_AE_EPOCHS, DEFAULT_EPOCHS)}
    return (FIXED_S + n * FEATURE_S + steps[DEFAULT_AE_EPOCHS] * AE_STEP_S
            + steps[DEFAULT_EPOCHS] * HASH_STEP_S)


def max_samples(minutes: int) -> int:
    """The most tiles a training within `minutes` can learn from (at least MIN_SAMPLES)."""
    low, high = MIN_SAMPLES, MAX_SAMPLES_LIMIT
    while low < high:  # training_seconds grows with n: the largest n within the budget
        middle = (low + high + 1) // 2
        if training_seconds(middle) <= 60.0 * minutes:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class QuickStartPlan:
    """What the guided start does, JSON-serialisable: train a model on `folder` (primary
    `primary` bands, auxiliary = `aux_bands` groups of the same files) within `minutes`,
    save it as `model`, index `folder` into `index`. `stage` is the next step."""

    folder: str
    model: str
    index: str
    primary: list[int]
    aux_bands: list[tuple[str, list[int]]] = field(default_factory=list)
    minutes: int = 5
    stage: str = TRAIN

    @classmethod
    def of(cls, folder: str, proposal: SourceProposal, model: str, index: str,
           minutes: int) -> QuickStartPlan:
        return cls(folder, model, index, list(proposal.primary),
                   [(name, list(bands)) for name, bands in proposal.auxiliary], minutes)

    def train_request(self) -> TrainRequest:
        return TrainRequest(self.model, SourceEntry.local([self.folder], self.primary,
                                                          "primary"),
                            aux_bands=[(name, list(bands)) for name, bands in self.aux_bands],
                            options=TrainOptions(max_samples=max_samples(self.minutes), seed=0))

    def index_request(self) -> IndexRequest:
        return IndexRequest(self.folder, self.model, self.index)

    def save(self) -> None:
        settings.QUICK_START.put(json.dumps(asdict(self)))

    @staticmethod
    def forget() -> None:
        settings.QUICK_START.put("")

    @classmethod
    def remembered(cls) -> QuickStartPlan | None:
        """The start that was under way (None when none, or its folder is gone)."""
        try:
            data = json.loads(settings.QUICK_START.get() or "null")
            plan = cls(**data) if isinstance(data, dict) else None
        except (TypeError, ValueError):
            return None
        if plan is None or plan.stage == DONE or not Path(plan.folder).is_dir():
            return None
        plan.aux_bands = [(str(name), list(bands)) for name, bands in plan.aux_bands]
        return plan


class QuickStart(QObject):
    """Runs a plan: `stepped(fraction, message)` for the whole chain, then `finished(model,
    index, result)` or `failed(code, message)` (code `cancelled` when the user stopped)."""

    stepped = pyqtSignal(float, str)
    finished = pyqtSignal(str, str, object)  # model, index, the IndexResult
    failed = pyqtSignal(str, str)

    def __init__(self, client: EngineClient, parent=None):
        super().__init__(parent)
        self.client = client
        self.plan: QuickStartPlan | None = None
        self.task: EngineTask | None = None

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, plan: QuickStartPlan) -> None:
        """Run `plan` from its stage: a model already trained by an earlier run (its file is
        written only once complete) is not trained again."""
        self.plan = plan
        if plan.stage == TRAIN and Path(plan.model).is_file():
            plan.stage = INDEX
        plan.save()
        self._run_stage()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _run_stage(self) -> None:
        plan = self.plan
        if plan.stage == TRAIN:
            request, name = plan.train_request(), tr("MrHash: learn your imagery")
            self.stepped.emit(0.0, tr("Step 1 of 2 · reading your imagery…"))
        else:
            request, name = plan.index_request(), tr("MrHash: index your imagery")
            self.stepped.emit(TRAIN_SHARE, tr("Step 2 of 2 · indexing your imagery…"))
        self.task = EngineTask(name, self.client, request)
        self.task.progressEvent.connect(self._progress)
        self.task.done.connect(self._stage_done)
        self.task.error.connect(self._stage_failed)
        self.task.start()

    def _progress(self, event: dict) -> None:
        if self.plan is None or self.task is None:
            return
        fraction = float(event.get("fraction") or 0.0)
        training = self.plan.stage == TRAIN
        overall = fraction * TRAIN_SHARE if training else TRAIN_SHARE + fraction * (
            1 - TRAIN_SHARE)
        step = (tr("Step 1 of 2 · learning your imagery") if training
                else tr("Step 2 of 2 · indexing your imagery"))
        text = step
        if event.get("eta_s") is not None:
            text += tr(" · about {time} left").format(time=duration_words(float(event["eta_s"])))
        self.stepped.emit(overall, text)

    def _stage_done(self, result: dict) -> None:
        self.task = None
        plan = self.plan
        if plan.stage == TRAIN:
            plan.model = TrainResult.from_result(result).model or plan.model
            settings.LAST_MODEL.put(plan.model)
            plan.stage = INDEX
            plan.save()
            self._run_stage()
            return
        plan.stage = DONE
        QuickStartPlan.forget()
        settings.LAST_INDEX.put(plan.index)
        self.stepped.emit(1.0, tr("Done."))
        self.finished.emit(plan.model, plan.index, IndexResult.from_result(result))

    def _stage_failed(self, code: str, message: str, _fix: str) -> None:
        self.task = None
        self.failed.emit(code, message if code != protocol.CANCELLED else tr("cancelled"))


def duration_words(seconds: float) -> str:
    """"40 s", "3 min", "1 h 10 min": a remaining time the way people say it."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return tr("{n} s").format(n=int(round(seconds / 5.0) * 5) or 5)
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return tr("{n} min").format(n=minutes)
    return tr("{h} h {m} min").format(h=minutes // 60, m=minutes % 60)
