"""Build-index dialog: folder, model, index location, tiling. The build runs as a QgsTask
(progress in the task manager, working cancel); the tile footprints are added when done."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
)

from mrhash_qgis.core import settings
from mrhash_qgis.core.bands import parse_bands
from mrhash_qgis.core.engine_client import EngineClient, EngineError, log
from mrhash_qgis.core.index_footprints import footprints_layer


class EngineTask(QgsTask):
    """One engine request as a QgsTask: progress mirrors the engine's, cancelling the task
    cancels the job in the worker. `done(result)` / `error(message)` fire in the main thread."""

    done = pyqtSignal(dict)
    error = pyqtSignal(str, str)  # code, message
    progressEvent = pyqtSignal(dict)  # noqa: N815 (Qt signal naming)

    def __init__(self, description: str, client: EngineClient, method: str, params: dict):
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.client, self.method, self.params = client, method, params
        self.result: dict | None = None
        self.failure: EngineError | None = None

    def _on_progress(self, event: dict) -> None:
        if event.get("fraction") is not None:
            self.setProgress(100.0 * float(event["fraction"]))
        self.progressEvent.emit(event)

    def run(self) -> bool:
        try:
            self.result = self.client.call(self.method, self.params,
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
            error = self.failure or EngineError("cancelled", "cancelled by the user")
            self.error.emit(error.code, error.message)


class IndexDialog(QDialog):
    indexBuilt = pyqtSignal(str)  # noqa: N815 (Qt signal naming)

    def __init__(self, iface, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MrHash — build index")
        self.setMinimumWidth(520)
        self.iface, self.client = iface, client
        self.task: EngineTask | None = None
        self.footprints = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setFilePath(settings.get("last/folder"))
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilter("MrHash model (*.safetensors)")
        self.model_widget.setFilePath(settings.get("last/model"))
        self.index_widget = QgsFileWidget()
        self.index_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.fileChanged.connect(self._suggest_index)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSpecialValueText("model patch size")
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(0, 4096)
        self.stride_spin.setSpecialValueText("= tile size")
        self.rebuild_check = QCheckBox("Rebuild from scratch (otherwise only new/changed files)")
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText("the model's bands")
        self.bands_edit.setToolTip(
            "Bands of these rasters the model encodes, 1-based numbers or names (e.g. 1,2,3 "
            "for RGB files when the model was trained on bands 4,3,2 of 13-band files). "
            "Empty: the bands the model was trained on.")
        form.addRow("Rasters folder", self.folder_widget)
        form.addRow("Model", self.model_widget)
        form.addRow("Index folder", self.index_widget)
        form.addRow("Tile size (px)", self.tile_spin)
        form.addRow("Stride (px)", self.stride_spin)
        form.addRow("Bands", self.bands_edit)
        form.addRow("", self.rebuild_check)
        layout.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Close)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Build index")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.close)
        layout.addWidget(self.buttons)
        self._suggest_index(self.folder_widget.filePath())

    def _suggest_index(self, folder: str) -> None:
        if folder and not self.index_widget.filePath():
            self.index_widget.setFilePath(str(Path(folder).with_name(Path(folder).name + "_index")))

    def params(self) -> dict:
        params = {"folder": self.folder_widget.filePath(), "model": self.model_widget.filePath(),
                  "index": self.index_widget.filePath(),
                  "rebuild": self.rebuild_check.isChecked()}
        if self.tile_spin.value():
            params["tile_size"] = self.tile_spin.value()
        if self.stride_spin.value():
            params["stride"] = self.stride_spin.value()
        bands = parse_bands(self.bands_edit.text())
        if bands:
            params["bands"] = bands
        return params

    def start(self) -> EngineTask | None:
        params = self.params()
        missing = [name for name, key in (("rasters folder", "folder"), ("model", "model"),
                                          ("index folder", "index")) if not params[key]]
        if missing:
            self.status_label.setText("Choose the " + ", ".join(missing) + ".")
            return None
        settings.put("last/folder", params["folder"])
        settings.put("last/model", params["model"])
        self.task = EngineTask(f"MrHash: index {Path(params['folder']).name}", self.client,
                               "index", params)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.progressEvent.connect(
            lambda event: self.status_label.setText(event.get("message", "")))
        self.task.done.connect(self._done)
        self.task.error.connect(self._failed)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status_label.setText("Indexing… (progress also in the task manager)")
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def _done(self, result: dict) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        self.progress.setValue(100)
        skipped, kept = result.get("skipped", []), result.get("kept", [])
        for verb, items in (("skipped", skipped), ("kept", kept)):
            for item in items:
                log(f"index {verb} {item.get('path')}: {item.get('error')}",
                    Qgis.MessageLevel.Warning)
        text = (f"{result.get('n_tiles')} tiles indexed (added {result.get('added')}, "
                f"removed {result.get('removed')}, unchanged {result.get('unchanged')})")
        if skipped:
            text += (f"; {len(skipped)} file(s) skipped, e.g. {skipped[0].get('error')} "
                     "(all in the MrHash log)")
        if kept:
            text += (f"; the tiles of {len(kept)} raster(s) in folders that are gone or "
                     "unreadable were kept (tick Rebuild to drop them)")
        skipped = skipped or kept
        self.status_label.setText(text)
        index = result.get("index", self.index_widget.filePath())
        settings.put("last/index", index)
        try:
            self.footprints = footprints_layer(index)
            QgsProject.instance().addMapLayer(self.footprints)
        except ValueError as error:
            log(str(error), Qgis.MessageLevel.Warning)
        level = Qgis.MessageLevel.Warning if skipped else Qgis.MessageLevel.Success
        self.iface.messageBar().pushMessage("MrHash", text, level, 10 if skipped else 5)
        self.indexBuilt.emit(index)

    def _failed(self, code: str, message: str) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        text = "Indexing cancelled." if code == "cancelled" else f"Indexing failed: {message}"
        self.status_label.setText(text)
        level = Qgis.MessageLevel.Info if code == "cancelled" else Qgis.MessageLevel.Critical
        self.iface.messageBar().pushMessage("MrHash", text, level, 8)
