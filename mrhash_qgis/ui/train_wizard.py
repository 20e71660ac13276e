"""Training wizard: 1 primary source + bands, 2 auxiliary sources (their overlap with the
primary drawn on the canvas), 3 parameters, 4 training with progress, live loss and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWizard,
    QWizardPage,
)

from mrhash_qgis.core import settings
from mrhash_qgis.core.bands import parse_bands
from mrhash_qgis.core.engine_client import EngineClient, EngineRequest, log
from mrhash_qgis.core.hits_layer import geometry_from_geojson
from mrhash_qgis.map_tool import polygon_band
from mrhash_qgis.ui.loss_plot import LossPlot

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
BITS = (16, 32, 64, 128)
DEVICES = ("auto", "cpu", "cuda")
PRIMARY_COLOUR, AUX_COLOURS = QColor("#1d4e89"), ("#e07a1f", "#7b2cbf", "#2a9d8f", "#c1121f")


@dataclass
class SourceChoice:
    """A source picked in the wizard: a raster layer's file or a folder."""

    path: str
    bands: list[int] | None = None
    footprint: QgsGeometry | None = None  # outline in EPSG:4326 when known

    def spec(self, name: str | None = None) -> dict:
        spec: dict = {"folder": self.path} if Path(self.path).is_dir() else {"paths": [self.path]}
        if self.bands:
            spec["bands"] = self.bands
        if name:
            spec["name"] = name
        return spec


def layer_outline(layer: QgsRasterLayer) -> QgsGeometry:
    geometry = QgsGeometry.fromRect(layer.extent())
    geometry.transform(QgsCoordinateTransform(layer.crs(), WGS84, QgsProject.instance()))
    return geometry


class SourcePicker(QVBoxLayout):
    """A raster layer (with a checkable band list) or a folder (bands typed as 1-based list)."""

    def __init__(self, allow_bands: bool = True):
        super().__init__()
        self.layer_radio, self.folder_radio = QRadioButton("Raster layer"), QRadioButton("Folder")
        self.layer_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.layer_radio)
        group.addButton(self.folder_radio)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.band_list = QListWidget()
        self.band_list.setMaximumHeight(160)
        self.band_edit = QLineEdit()
        self.band_edit.setPlaceholderText("bands, 1-based, e.g. 4,3,2 (empty: all)")
        for row in ((self.layer_radio, self.layer_combo), (self.folder_radio, self.folder_widget)):
            line = QHBoxLayout()
            line.addWidget(row[0])
            line.addWidget(row[1], 1)
            self.addLayout(line)
        if allow_bands:
            self.addWidget(QLabel("Bands"))
            self.addWidget(self.band_list)
            self.addWidget(self.band_edit)
        self.addStretch(1)
        self.layer_combo.layerChanged.connect(self._fill_bands)
        self.layer_radio.toggled.connect(self._show_mode)
        self._fill_bands(self.layer_combo.currentLayer())
        self._show_mode()

    def _show_mode(self) -> None:
        layer_mode = self.layer_radio.isChecked()
        self.layer_combo.setEnabled(layer_mode)
        self.band_list.setVisible(layer_mode)
        self.folder_widget.setEnabled(not layer_mode)
        self.band_edit.setVisible(not layer_mode)

    def _fill_bands(self, layer) -> None:
        self.band_list.clear()
        if isinstance(layer, QgsRasterLayer):
            for band in range(1, layer.bandCount() + 1):
                item = QListWidgetItem(layer.bandName(band))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if band <= 3
                                   else Qt.CheckState.Unchecked)
                self.band_list.addItem(item)

    def use_folder(self, folder: str, bands: str = "") -> None:
        self.folder_radio.setChecked(True)
        self.folder_widget.setFilePath(folder)
        self.band_edit.setText(bands)

    def choice(self) -> SourceChoice | None:
        if self.folder_radio.isChecked():
            folder = self.folder_widget.filePath()
            return SourceChoice(folder, parse_bands(self.band_edit.text())) if folder else None
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            return None
        bands = [i + 1 for i in range(self.band_list.count())
                 if self.band_list.item(i).checkState() == Qt.CheckState.Checked]
        all_bands = len(bands) == layer.bandCount()
        return SourceChoice(layer.source().split("|")[0], None if all_bands else bands,
                            layer_outline(layer))


class PrimaryPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("1 · Primary source")
        self.setSubTitle("The imagery you will query with: a raster layer or a folder of rasters.")
        self.picker = SourcePicker()
        self.setLayout(self.picker)
        self.picker.folder_widget.fileChanged.connect(self.completeChanged)
        self.picker.layer_combo.layerChanged.connect(self.completeChanged)
        self.picker.layer_radio.toggled.connect(self.completeChanged)

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return self.picker.choice() is not None


class AuxiliaryPage(QWizardPage):
    """Auxiliary sources; their footprints and the primary's are drawn on the map canvas."""

    def __init__(self, client: EngineClient, canvas):
        super().__init__()
        self.setTitle("2 · Auxiliary sources")
        self.setSubTitle("Other sources of the same place (other bands, SAR, another sensor). "
                         "They teach the model; queries need only the primary.")
        self.client, self.canvas = client, canvas
        self.sources: list[SourceChoice] = []
        self.bands: list = []  # QgsRubberBand
        self._footprints: dict[str, QgsGeometry | None] = {}  # folder -> outline (None: pending)
        self._scans: list[EngineRequest] = []
        layout = QVBoxLayout(self)
        self.picker = SourcePicker(allow_bands=False)
        layout.addLayout(self.picker)
        buttons = QHBoxLayout()
        self.add_button, self.remove_button = QPushButton("Add"), QPushButton("Remove")
        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.list = QListWidget()
        layout.addWidget(self.list)
        self.overlap_label = QLabel("No auxiliary source: the model learns from the primary only.")
        self.overlap_label.setWordWrap(True)
        layout.addWidget(self.overlap_label)

    def primary(self) -> SourceChoice | None:
        return self.wizard().primary_page.picker.choice() if self.wizard() else None

    def add_source(self, choice: SourceChoice) -> None:
        self.sources.append(choice)
        kind = "folder" if Path(choice.path).is_dir() else "raster"
        item = QListWidgetItem(f"aux{len(self.sources)} · {kind} · {Path(choice.path).name}")
        item.setToolTip(choice.path)
        self.list.addItem(item)
        self.refresh_overlap()

    def add_current(self) -> None:
        choice = self.picker.choice()
        if choice is not None:
            self.add_source(choice)

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.list.takeItem(row)
            self.sources.pop(row)
            self.refresh_overlap()

    def footprint(self, choice: SourceChoice) -> QgsGeometry | None:
        """A layer's outline, or a folder's (union of its rasters, asked once to the engine's
        `scan`, asynchronously: None until it answers)."""
        if choice.footprint is not None or choice.path in self._footprints:
            return choice.footprint or self._footprints[choice.path]
        self._footprints[choice.path] = None
        path = choice.path
        self._scans.append(self.client.request(
            "scan", {"folder": path}, finished=lambda result: self._scanned(path, result),
            failed=lambda _code, message: log(f"scan {path}: {message}",
                                              Qgis.MessageLevel.Warning)))
        return None

    def _scanned(self, path: str, result: dict) -> None:
        outlines = [geometry_from_geojson(s["footprint_wgs84"]["wkt"])
                    for s in result.get("sources", []) if s.get("footprint_wgs84")]
        if outlines:
            self._footprints[path] = QgsGeometry.unaryUnion(outlines)
        self.refresh_overlap()

    def refresh_overlap(self) -> None:
        """Redraw footprints and report how much of the primary each source covers."""
        self.clear_canvas()
        primary = self.primary()
        primary_outline = self.footprint(primary) if primary is not None else None
        lines = []
        for i, source in enumerate(self.sources):
            colour = QColor(AUX_COLOURS[i % len(AUX_COLOURS)])
            name = Path(source.path).name
            outline = self.footprint(source)
            if outline is None:
                lines.append(f"{name}: footprint pending…")
                continue
            self._draw(outline, colour, fill=True)
            if primary_outline is not None:
                covered = primary_outline.intersection(outline).area()
                share = 100.0 * covered / max(primary_outline.area(), 1e-12)
                lines.append(f"{name}: covers {share:.0f}% of the primary")
        if primary_outline is not None:  # on top, dashed: visible where sources coincide
            self._draw(primary_outline, PRIMARY_COLOUR, fill=False).setLineStyle(
                Qt.PenStyle.DashLine)
        if lines:
            self.overlap_label.setText("\n".join(lines))

    def _draw(self, geometry: QgsGeometry, colour: QColor, fill: bool):
        band = polygon_band(self.canvas, colour, 90 if fill else 0)
        band.setWidth(4 if fill else 2)
        band.setToGeometry(geometry, WGS84)
        self.bands.append(band)
        return band

    def clear_canvas(self) -> None:
        for band in self.bands:
            self.canvas.scene().removeItem(band)
        self.bands.clear()

    def initializePage(self) -> None:  # noqa: N802 (Qt API)
        self.refresh_overlap()

    def cleanupPage(self) -> None:  # noqa: N802 (Qt API)
        self.clear_canvas()


class ParamsPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("3 · Parameters")
        self.setSubTitle("Small values train fast; more epochs and bits retrieve better.")
        form = QFormLayout(self)
        self.bits_combo = QComboBox()
        self.bits_combo.addItems([str(b) for b in BITS])
        self.bits_combo.setCurrentText("64")
        self.clusters_spin = self._spin(2, 1000, 16)
        self.epochs_spin = self._spin(1, 1000, 10)
        self.ae_epochs_spin = self._spin(1, 1000, 30)
        self.patch_spin = self._spin(16, 1024, 64)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(settings.get("engine/device", "auto"))
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_widget.setFilter("MrHash model (*.safetensors)")
        form.addRow("Hash bits", self.bits_combo)
        form.addRow("Clusters (pseudo-labels)", self.clusters_spin)
        form.addRow("Hash epochs", self.epochs_spin)
        form.addRow("Autoencoder epochs", self.ae_epochs_spin)
        form.addRow("Patch size (px)", self.patch_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("Save model as", self.output_widget)
        self.output_widget.fileChanged.connect(self.completeChanged)

    @staticmethod
    def _spin(low: int, high: int, value: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        return spin

    def initializePage(self) -> None:  # noqa: N802 (Qt API)
        if not self.output_widget.filePath():
            primary = self.wizard().primary_page.picker.choice()
            if primary is not None:
                base = Path(primary.path)
                stem = base.name if base.is_dir() else base.stem
                self.output_widget.setFilePath(str(base.parent / f"{stem}_mrhash.safetensors"))

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return bool(self.output_widget.filePath())


class TrainPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("4 · Training")
        self.setSubTitle("The engine trains in its own process; QGIS stays responsive.")
        self.request: EngineRequest | None = None
        self.result: dict | None = None
        layout = QVBoxLayout(self)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.plot = LossPlot()
        self.plot.setToolTip(
            "The autoencoder's reconstruction loss should fall. The hash losses are KL "
            "divergences to pseudo-label targets that are re-sharpened every epoch, so they "
            "need not fall: a rise means sharper targets, not a failed training.")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumHeight(90)
        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel training")
        self.index_button = QPushButton("Index with this model…")
        self.index_button.setEnabled(False)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.index_button)
        for widget in (self.progress, self.status_label, self.plot, self.log_view):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.cancel_button.clicked.connect(self.cancel)

    def initializePage(self) -> None:  # noqa: N802 (Qt API)
        self.wizard().start_training()

    def cancel(self) -> None:
        if self.request is not None and not self.request.done:
            self.request.cancel()
            self.status_label.setText("Cancelling…")

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return self.result is not None


class TrainWizard(QWizard):
    modelTrained = pyqtSignal(str)    # noqa: N815 (Qt signal naming)
    indexRequested = pyqtSignal(str)  # noqa: N815
    trainingFailed = pyqtSignal(str)  # noqa: N815
    trainingProgress = pyqtSignal(dict)  # noqa: N815

    def __init__(self, iface, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MrHash — train a model")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setMinimumSize(620, 520)
        self.iface, self.client = iface, client
        self.primary_page = PrimaryPage()
        self.auxiliary_page = AuxiliaryPage(client, iface.mapCanvas())
        self.params_page = ParamsPage()
        self.train_page = TrainPage()
        for page in (self.primary_page, self.auxiliary_page, self.params_page, self.train_page):
            self.addPage(page)
        self.train_page.index_button.clicked.connect(
            lambda: self.indexRequested.emit(self.params()["output"]))
        self.finished.connect(lambda _code: self._stop())

    def params(self) -> dict:
        primary = self.primary_page.picker.choice()
        page = self.params_page
        return {
            "primary": primary.spec() if primary else {},
            "auxiliary": [s.spec(f"aux{i}") for i, s in enumerate(self.auxiliary_page.sources, 1)],
            "bits": int(page.bits_combo.currentText()),
            "clusters": page.clusters_spin.value(),
            "epochs": page.epochs_spin.value(),
            "ae_epochs": page.ae_epochs_spin.value(),
            "patch_size": page.patch_spin.value(),
            "device": page.device_combo.currentText(),
            "seed": 0,
            "output": page.output_widget.filePath(),
        }

    def start_training(self) -> EngineRequest:
        page = self.train_page
        page.result = None
        page.plot.clear()
        page.progress.setValue(0)
        page.index_button.setEnabled(False)
        page.cancel_button.setEnabled(True)
        page.status_label.setText("Starting…")
        self.auxiliary_page.clear_canvas()
        page.request = self.client.request("train", self.params(), progress=self._on_progress,
                                           finished=self._on_finished, failed=self._on_failed)
        return page.request

    def _on_progress(self, event: dict) -> None:
        self.trainingProgress.emit(event)
        page = self.train_page
        if event.get("fraction") is not None:
            page.progress.setValue(int(100 * float(event["fraction"])))
        if event.get("loss") is not None:
            page.plot.add(float(event["loss"]), str(event.get("stage") or "loss"))
        if event.get("kl_code") is not None:
            # the total hash loss may rise as its target is re-sharpened each epoch; the
            # code's KL to that target is the part that shapes the codes
            page.plot.add(float(event["kl_code"]), "code KL", same_epoch=True)
        text = event.get("message", "")
        if event.get("eta_s") is not None:
            text += f" · about {event['eta_s']:.0f} s left"
        page.status_label.setText(text)
        if event.get("epoch") is not None and event.get("loss") is not None:
            parts = f"loss {event['loss']:.4f}"
            if event.get("kl_code") is not None:
                parts += f" (code KL {event['kl_code']:.4f})"
            page.log_view.appendPlainText(
                f"{event.get('stage', '')} epoch {event['epoch']}: {parts}")

    def _on_finished(self, result: dict) -> None:
        page = self.train_page
        page.result = result
        page.progress.setValue(100)
        page.cancel_button.setEnabled(False)
        page.index_button.setEnabled(True)
        model = result.get("model", "")
        text = f"Model saved: {model} ({result.get('seconds', 0):.0f} s)"
        if result.get("previous"):
            text += (f". The model it replaced is kept as {result['previous']} (indexes "
                     "built with it still use it)")
        page.status_label.setText(text)
        settings.put("last/model", model)
        page.completeChanged.emit()
        self.modelTrained.emit(model)

    def _on_failed(self, code: str, message: str) -> None:
        page = self.train_page
        page.cancel_button.setEnabled(False)
        text = "Training cancelled." if code == "cancelled" else f"Training failed: {message}"
        page.status_label.setText(text)
        if code != "cancelled":
            self.iface.messageBar().pushMessage("MrHash", text, Qgis.MessageLevel.Critical, 10)
        self.trainingFailed.emit(text)

    def _stop(self) -> None:
        self.train_page.cancel()
        self.auxiliary_page.clear_canvas()
