"""Build-index dialog: folder, model, index location, tiling. The build runs as a QgsTask
(progress in the task manager, working cancel; it goes on when the dialog is closed); the tile
footprints are added when done. The engine's errors are said in the dialog's own words: where
the engine names the fix `rebuild` (its CLI message says `--rebuild`), the dialog points at its
Rebuild checkbox."""

from __future__ import annotations

import os
import re
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject
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

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.bands import parse_bands
from mrhash_qgis.contract.index_layout import IndexReader, IndexUnreadable
from mrhash_qgis.contract.protocol import IndexRequest, IndexResult
from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import FIX_REBUILD, EngineClient, log
from mrhash_qgis.core.engine_task import EngineTask
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.index_footprints import add_footprints_layer

# The engine's messages are written for its command line; in the dialog the same advice is a
# checkbox or a button.
_REBUILD_CLI = re.compile(r"(?:rebuild (?:it|the index) with )?`?mrhash index --rebuild`?"
                          r"|--rebuild")
_RERUN_CLI = re.compile(r"run `mrhash index` again")


def in_dialog_words(message: str, fix: str) -> str:
    """An engine error for the dialog: CLI flags replaced by the dialog's controls; with
    fix == rebuild and no such advice in the message, the advice is added."""
    message, advised = _REBUILD_CLI.subn(tr("tick Rebuild from scratch"), message)
    message = _RERUN_CLI.sub(tr("press Build index again"), message)
    if fix == FIX_REBUILD and not advised:
        message += tr(" (tick Rebuild from scratch and build again)")
    return message


def suggested_index_folder(archive: str) -> str:
    """Where to put the index of a rasters folder: `<archive>_index` beside it, or in the
    saved project's folder, or the profile's `mrhash/indexes/` when the archive's parent
    cannot be written; "" while `archive` is not an existing folder (typed half-way)."""
    folder = Path(archive).expanduser()
    if not archive.strip() or not folder.is_absolute() or not folder.name or not folder.is_dir():
        return ""
    name = f"{folder.name}_index"
    project = QgsProject.instance().absolutePath()
    for parent in (folder.parent, Path(project) if project else None):
        if parent is not None and os.access(parent, os.W_OK):
            return str(parent / name)
    return str(Path(QgsApplication.qgisSettingsDirPath()) / "mrhash" / "indexes" / name)


def index_model(index: str) -> str:
    """The model an existing index was built with ("" when the folder holds no index or
    the model is not where it was)."""
    if not index or not Path(index).is_dir():
        return ""
    try:
        model = IndexReader(index).meta().get("model_path") or ""
    except IndexUnreadable:
        return ""
    return model if Path(model).is_file() else ""


class IndexDialog(QDialog):
    indexBuilt = pyqtSignal(str)  # noqa: N815 (Qt signal naming)

    def __init__(self, iface, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash — build index"))
        self.setMinimumWidth(520)
        self.iface, self.client = iface, client
        self.task: EngineTask | None = None
        self.footprints = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setFilePath(settings.LAST_FOLDER.get())
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilter(tr("MrHash model (*.safetensors)"))
        self.model_widget.setFilePath(settings.LAST_MODEL.get())
        self.index_widget = QgsFileWidget()
        self.index_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self._suggested = ""  # the index folder this dialog suggested (replaced as typed)
        self._model_chosen = False  # the model was given for this dialog (a new training)
        self.folder_widget.fileChanged.connect(self._suggest_index)
        self.index_widget.fileChanged.connect(self._index_changed)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSpecialValueText(tr("model patch size"))
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(0, 4096)
        self.stride_spin.setSpecialValueText(tr("= tile size"))
        self.rebuild_check = QCheckBox(tr("Rebuild from scratch (otherwise only new/changed "
                                          "files)"))
        self.rebuild_check.toggled.connect(self._rebuild_toggled)
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText(tr("the model's bands"))
        self.bands_edit.setToolTip(tr(
            "Bands of these rasters the model encodes, 1-based numbers or names (e.g. 1,2,3 "
            "for RGB files when the model was trained on bands 4,3,2 of 13-band files). "
            "Empty: the bands the model was trained on."))
        form.addRow(tr("Rasters folder"), self.folder_widget)
        form.addRow(tr("Model"), self.model_widget)
        form.addRow(tr("Index folder"), self.index_widget)
        form.addRow(tr("Tile size (px)"), self.tile_spin)
        form.addRow(tr("Stride (px)"), self.stride_spin)
        self.dask_check = QCheckBox(tr("Run on a Dask cluster at"))
        self.dask_edit = QLineEdit(settings.DASK_ADDRESS.get())
        self.dask_edit.setPlaceholderText(tr("tcp://scheduler:8786, or local:4 for 4 processes "
                                             "here"))
        self.dask_edit.setToolTip(tr(
            "Encode the tiles on the workers of a running Dask cluster (this machine still "
            "writes the index). Every worker must reach the rasters at the same paths as "
            "this machine: a shared drive or URLs."))
        self.dask_edit.setEnabled(False)
        self.dask_check.toggled.connect(self.dask_edit.setEnabled)
        self.dask_check.setChecked(settings.DASK_ON.get())
        form.addRow(tr("Bands"), self.bands_edit)
        form.addRow(self.dask_check, self.dask_edit)
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
        self.build_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.build_button.setText(tr("Build index"))
        self.cancel_button = self.buttons.addButton(tr("Cancel indexing"),
                                                    QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.close)
        layout.addWidget(self.buttons)
        self._suggest_index(self.folder_widget.filePath())

    @property
    def busy(self) -> bool:
        """A build started here is still running (in the background once closed)."""
        return self.task is not None

    def _suggest_index(self, folder: str) -> None:
        """The index folder follows the archive typed or chosen last, until the user gives
        one of their own; nothing is suggested for a path that is not a folder (yet)."""
        current = self.index_widget.filePath()
        if current and current != self._suggested:
            return
        self._suggested = suggested_index_folder(folder)
        self.index_widget.setFilePath(self._suggested)

    def _index_changed(self, index: str) -> None:
        """Updating an index: its own model, unless the user chose one for this dialog."""
        model = index_model(index)
        if model and (not self.model_widget.filePath() or not self._model_chosen):
            self.model_widget.setFilePath(model)
            self._model_chosen = False

    def _rebuild_toggled(self, _checked: bool) -> None:
        self._point_at_rebuild(False)

    def _point_at_rebuild(self, on: bool) -> None:
        """Make the Rebuild checkbox stand out when it is the fix (until it is toggled)."""
        font = self.rebuild_check.font()
        font.setBold(on)
        self.rebuild_check.setFont(font)
        if on:
            self.rebuild_check.setFocus()

    def request(self) -> IndexRequest:
        bands = parse_bands(self.bands_edit.text())
        return IndexRequest(self.folder_widget.filePath(), self.model_widget.filePath(),
                            self.index_widget.filePath(), self.tile_spin.value() or None,
                            self.stride_spin.value() or None,
                            rebuild=self.rebuild_check.isChecked(),
                            bands=list(bands) if bands else None,
                            dask=(self.dask_edit.text().strip() or None)
                            if self.dask_check.isChecked() else None)

    def start(self) -> EngineTask | None:
        request = self.request()
        missing = [name for name, value in ((tr("rasters folder"), request.folder),
                                            (tr("model"), request.model),
                                            (tr("index folder"), request.index)) if not value]
        if missing:
            self.status_label.setText(tr("Choose the {fields}.").format(
                fields=", ".join(missing)))
            return None
        if self.dask_check.isChecked() and not request.dask:
            self.status_label.setText(tr("Give the Dask scheduler's address, or untick the "
                                         "cluster."))
            return None
        settings.LAST_FOLDER.put(request.folder)
        settings.LAST_MODEL.put(request.model)
        settings.DASK_ADDRESS.put(self.dask_edit.text().strip())
        settings.DASK_ON.put(self.dask_check.isChecked())
        self.task = EngineTask(tr("MrHash: index {folder}").format(
            folder=Path(request.folder).name), self.client, request)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.progressEvent.connect(
            lambda event: self.status_label.setText(event.get("message", "")))
        self.task.done.connect(self._done)
        self.task.error.connect(self._failed)
        self._building(True)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status_label.setText(tr("Indexing… (progress also in the task manager)"))
        return self.task.start()

    def use_model(self, model: str) -> None:
        """The model this dialog indexes with (e.g. the one just trained): kept over the
        chosen index's own model."""
        self.model_widget.setFilePath(model)
        self._model_chosen = True

    def cancel(self) -> None:
        if self.task is not None:
            self.status_label.setText(tr("Cancelling… (what was indexed so far is kept)"))
            self.task.cancel()

    def _building(self, on: bool) -> None:
        self.build_button.setEnabled(not on)
        self.cancel_button.setVisible(on)

    def shutdown(self) -> None:
        """The plugin unloads: stop the build and close."""
        if self.task is not None:
            self.task.cancel()
        self.close()

    def _done(self, answer: dict) -> None:
        self.task = None
        self._building(False)
        self.progress.setValue(100)
        result = IndexResult.from_result(answer)
        skipped, kept = result.skipped, result.kept
        for verb, items in (("skipped", skipped), ("kept", kept)):
            for item in items:
                log(f"index {verb} {item.path}: {item.error}", Qgis.MessageLevel.Warning)
        text = tr("{n} tiles indexed (added {added}, removed {removed}, unchanged "
                  "{unchanged})").format(n=result.n_tiles, added=result.added,
                                         removed=result.removed, unchanged=result.unchanged)
        if skipped:
            text += tr("; {n} file(s) skipped, e.g. {error} (all in the MrHash log)").format(
                n=len(skipped), error=skipped[0].error)
        if kept:
            text += tr("; the tiles of {n} raster(s) in folders that are gone or unreadable "
                       "were kept (tick Rebuild to drop them)").format(n=len(kept))
        self.status_label.setText(text)
        index = result.index
        settings.LAST_INDEX.put(index)
        try:
            self.footprints = add_footprints_layer(index)
        except (OSError, ValueError) as error:
            log(str(error), Qgis.MessageLevel.Warning)
        warn = bool(skipped or kept)
        level = Qgis.MessageLevel.Warning if warn else Qgis.MessageLevel.Success
        self.iface.messageBar().pushMessage("MrHash", text, level, 10 if warn else 5)
        self.indexBuilt.emit(index)

    def _failed(self, code: str, message: str, fix: str) -> None:
        self.task = None
        self._building(False)
        self.progress.setVisible(False)  # nothing was built: no bar stuck part-way
        if code == protocol.CANCELLED:
            text = tr("Indexing cancelled.")
        else:
            text = tr("Indexing failed: {message}").format(message=in_dialog_words(message, fix))
        self.status_label.setText(text)
        self._point_at_rebuild(fix == FIX_REBUILD and not self.rebuild_check.isChecked())
        level = Qgis.MessageLevel.Info if code == protocol.CANCELLED else Qgis.MessageLevel.Critical
        self.iface.messageBar().pushMessage("MrHash", text, level, 8)
