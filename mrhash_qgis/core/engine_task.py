"""One engine job (train, index) as a QgsTask: it shows in QGIS's task manager with the
engine's progress, cancelling it there (or from a dialog) cancels the job in the worker, and it
outlives the dialog that started it, so closing a window never loses the work."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.protocol import IndexRequest, TrainRequest
from mrhash_qgis.core.engine_client import EngineClient, EngineError
from mrhash_qgis.core.i18n import tr


class EngineTask(QgsTask):
    """`run()` blocks on the request in the task's thread; the signals reach their slots in
    the main thread: `progressEvent(event)` for every progress line, then `done(result)` or
    `error(code, message, fix)` (fix: EngineError.fix, '' when the engine names none)."""

    done = pyqtSignal(dict)
    error = pyqtSignal(str, str, str)
    progressEvent = pyqtSignal(dict)  # noqa: N815 (Qt signal naming)

    def __init__(self, description: str, client: EngineClient,
                 request: TrainRequest | IndexRequest):
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.client, self.request = client, request
        self.result: dict | None = None
        self.failure: EngineError | None = None
        self.last_event: dict = {}  # the latest progress line (its eta_s says when it ends)

    def start(self) -> EngineTask:
        """Hand the task to QGIS's task manager, which runs it and deletes it when done."""
        QgsApplication.taskManager().addTask(self)
        return self

    @property
    def running(self) -> bool:
        return self.status() in (QgsTask.TaskStatus.Queued, QgsTask.TaskStatus.OnHold,
                                 QgsTask.TaskStatus.Running)

    def _on_progress(self, event: dict) -> None:
        self.last_event = event
        if event.get("fraction") is not None:
            self.setProgress(100.0 * float(event["fraction"]))
        self.progressEvent.emit(event)

    def run(self) -> bool:
        try:
            self.result = self.client.call(self.request.METHOD, self.request.to_params(),
                                           on_progress=self._on_progress,
                                           is_cancelled=self.isCanceled)
            return True
        except EngineError as error:
            self.failure = error
            return False

    def finished(self, ok: bool) -> None:
        if ok:
            self.done.emit(self.result or {})
        else:
            error = self.failure or EngineError(protocol.CANCELLED, tr("cancelled by the user"))
            self.error.emit(error.code, error.message, error.fix)
