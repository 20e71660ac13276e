"""The guided start's dialog ("Start with my imagery…"): the analyst gives the folder of their
imagery (the active raster layer's folder is proposed); the plugin says what it made of the
bands (primary = RGB, the other bands of the same files as auxiliary sources) and how long
training may take; Start runs the chain (core/quick_start.py) with one progress bar, the
remaining time and Cancel; at the end the dock has the model and the index and the map tool
is on. An interrupted start is offered again (Resume)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.band_profiles import SourceProposal, propose
from mrhash_qgis.contract.protocol import IndexResult, ScanRequest, ScanResult
from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import EngineClient, EngineRequest
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path
from mrhash_qgis.core.quick_start import TRAIN, QuickStart, QuickStartPlan, max_samples
from mrhash_qgis.ui.index_dialog import suggested_index_folder
from mrhash_qgis.ui.train_wizard import default_model_folder, layout_words, unused_model_path


def imagery_folder(iface) -> str:
    """The folder to propose: the active raster layer's, else the last one indexed."""
    layer = iface.activeLayer()
    if isinstance(layer, QgsRasterLayer) and Path(layer_path(layer)).is_file():
        return str(Path(layer_path(layer)).parent)
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsRasterLayer) and Path(layer_path(layer)).is_file():
            return str(Path(layer_path(layer)).parent)
    return settings.LAST_FOLDER.get()


class QuickStartDialog(QDialog):
    """`ready(model, index)` once both are built."""

    ready = pyqtSignal(str, str)

    def __init__(self, iface, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash — start with my imagery"))
        self.setMinimumWidth(560)
        self.iface, self.client = iface, client
        self.chain = QuickStart(client, self)
        self.chain.stepped.connect(self._stepped)
        self.chain.finished.connect(self._finished)
        self.chain.failed.connect(self._failed)
        self.proposal: SourceProposal | None = None
        self.n_rasters = 0
        self._scan: EngineRequest | None = None
        self._layout_text = ""  # what the plugin made of the folder's bands
        self.resume_plan = QuickStartPlan.remembered()

        layout = QVBoxLayout(self)
        intro = QLabel(tr("MrHash learns what your imagery looks like, then indexes it, so "
                          "that a click on the map finds the places most like the one you "
                          "clicked. Give the folder of your imagery:"))
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setDialogTitle(tr("The folder of your imagery"))
        self.minutes_spin = QSpinBox()
        self.minutes_spin.setRange(1, 240)
        self.minutes_spin.setSuffix(tr(" min"))
        self.minutes_spin.setValue(settings.QUICK_START_MINUTES.get())
        self.minutes_spin.setToolTip(tr(
            "How long learning your imagery may take on this computer. A large folder is "
            "learnt from a sample of its tiles; every tile is indexed."))
        self.minutes_spin.valueChanged.connect(lambda _minutes: self._show_plan())
        form.addRow(tr("Your imagery"), self.folder_widget)
        form.addRow(tr("Time to learn it"), self.minutes_spin)
        layout.addLayout(form)
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        layout.addWidget(self.plan_label)
        more = QLabel(tr("Other sources (SAR, another satellite, STAC) or settings: MrHash › "
                         "Train model…"))
        more.setWordWrap(True)
        more.setStyleSheet("color: #555")
        layout.addWidget(more)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        self.resume_button = QPushButton(tr("Resume"))
        self.resume_button.clicked.connect(self.resume)
        self.start_button = QPushButton(tr("Start"))
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton(tr("Close"))
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.resume_button)
        buttons.addStretch(1)
        for button in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.folder_widget.fileChanged.connect(self._folder_changed)
        self._running(False)
        if self.resume_plan is not None:
            self.status_label.setText(tr(
                "The start with {folder} stopped before it was done ({stage}). Resume goes "
                "on from there.").format(folder=self.resume_plan.folder, stage=tr(
                    "learning") if self.resume_plan.stage == TRAIN else tr("indexing")))
        self.folder_widget.setFilePath(imagery_folder(iface))

    @property
    def busy(self) -> bool:
        return self.chain.running

    # the folder and what the plugin makes of it
    def _folder_changed(self, folder: str) -> None:
        self.proposal, self.n_rasters = None, 0
        self._show_plan()
        if not folder.strip():
            return
        if not Path(folder).is_dir():
            self.plan_label.setText(tr("{folder} is not a folder on this computer.").format(
                folder=folder) if Path(folder).is_absolute() else "")
            return
        self.plan_label.setText(tr("Looking at the rasters of {folder}…").format(
            folder=Path(folder).name))
        self._scan = self.client.submit(ScanRequest(folder), finished=self._scanned,
                                        failed=self._scan_failed)

    def _scanned(self, answer: dict) -> None:
        if self.sender() is not self._scan:  # an answer for a folder typed earlier
            return
        result = ScanResult.from_result(answer)
        sources, errors = result.sources, result.errors
        if not sources:
            reason = (tr(" ({n} unreadable, e.g. {error})").format(
                n=len(errors), error=errors[0].error) if errors else "")
            self.plan_label.setText(tr(
                "No raster MrHash can read in {folder}{reason}. Choose the folder that holds "
                "your GeoTIFF, JP2 or VRT files.").format(folder=result.folder, reason=reason))
            return
        layout = sources[0].band_layout()
        self.n_rasters = len(sources)
        self.proposal = propose(layout) if layout is not None else None
        self._show_plan(layout_words(layout) if layout is not None else "")

    def _scan_failed(self, _code: str, message: str) -> None:
        if self.sender() is self._scan:
            self.plan_label.setText(tr("Cannot read this folder: {message}").format(
                message=message))

    def _show_plan(self, layout_text: str = "") -> None:
        proposal = self.proposal
        ready = proposal is not None and not self.chain.running
        self.start_button.setEnabled(ready)
        if proposal is None:
            return
        self._layout_text = layout_text or self._layout_text
        describe = proposal.layout.describe if proposal.layout else str
        lines = [tr("{n} raster(s). {layout}").format(n=self.n_rasters, layout=self._layout_text),
                 tr("Queries look at bands {bands}.").format(bands=describe(proposal.primary))]
        if proposal.auxiliary:
            lines.append(tr("Learning also uses the other bands of the same files: "
                            "{groups}.").format(groups="; ".join(
                                f"{name} {describe(bands)}" for name, bands in
                                proposal.auxiliary)))
        lines.append(tr("Learning takes about {minutes} min (at most {tiles:,} tiles), then "
                        "every tile is indexed.").format(
            minutes=self.minutes_spin.value(), tiles=max_samples(self.minutes_spin.value())))
        self.plan_label.setText("<br>".join(lines))
        self.adjustSize()  # the dialog grows with what it says, never cuts it

    # the chain
    def plan(self) -> QuickStartPlan | None:
        folder = self.folder_widget.filePath()
        if self.proposal is None or not Path(folder).is_dir():
            return None
        name = Path(folder).name or "imagery"
        model_folder = default_model_folder()
        model_folder.mkdir(parents=True, exist_ok=True)
        model = unused_model_path(model_folder, f"{name}_mrhash")
        index = suggested_index_folder(folder)
        return QuickStartPlan.of(folder, self.proposal, str(model), index,
                                 self.minutes_spin.value())

    def start(self) -> None:
        plan = self.plan()
        if plan is None:
            return
        settings.QUICK_START_MINUTES.put(self.minutes_spin.value())
        settings.LAST_FOLDER.put(plan.folder)
        self._begin(plan)

    def resume(self) -> None:
        if self.resume_plan is not None:
            self._begin(self.resume_plan)

    def _begin(self, plan: QuickStartPlan) -> None:
        self.resume_plan = None
        self._running(True)
        self.progress.setValue(0)
        self.chain.start(plan)

    def cancel(self) -> None:
        self.status_label.setText(tr("Cancelling… (what is done is kept: Start with my "
                                     "imagery resumes it)"))
        self.chain.cancel()

    def shutdown(self) -> None:
        self.chain.cancel()
        self.close()

    def _running(self, on: bool) -> None:
        self.progress.setVisible(on or self.progress.value() > 0)
        self.cancel_button.setVisible(on)
        self.start_button.setVisible(not on)
        self.resume_button.setVisible(not on and self.resume_plan is not None)
        self.folder_widget.setEnabled(not on)
        self.minutes_spin.setEnabled(not on)
        self._show_plan()

    def _stepped(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(100 * fraction))
        self.status_label.setText(message)

    def _finished(self, model: str, index: str, result: IndexResult) -> None:
        self._running(False)
        text = tr("Your imagery is indexed ({n:,} tiles). Click the map on it to find similar "
                  "places.").format(n=result.n_tiles)
        self.status_label.setText(text)
        self.ready.emit(model, index)
        self.iface.messageBar().pushMessage("MrHash", text, Qgis.MessageLevel.Success, 10)
        self.close()

    def _failed(self, code: str, message: str) -> None:
        self.resume_plan = QuickStartPlan.remembered()
        self._running(False)
        if code == protocol.CANCELLED:
            self.status_label.setText(tr("Stopped. Resume goes on where it stopped."))
            return
        self.status_label.setText(tr("The start stopped: {message}. Resume tries again from "
                                     "there.").format(message=message))
