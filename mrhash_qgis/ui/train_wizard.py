"""Training wizard: 1 primary source + bands, 2 auxiliary sources (their overlap with the
primary drawn on the canvas; local rasters and folders, the project's web raster layers —
XYZ, WMS, WMTS, WCS — and items of a STAC catalogue, pulled by the engine over each primary
footprint), 3 parameters (remembered between runs; the model's path checked
before training), 4 training with progress, live loss and cancel.

Training runs as a QgsTask (core/engine_task.py): it is in QGIS's task manager with its
progress and cancel, and it outlives the wizard. Closing the wizard while it trains asks
whether to keep it running in the background (a message-bar message says where the model is
when it ends), to stop it, or to go back to the wizard; Back is locked while it trains."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox, QgsMessageBar
from qgis.PyQt.QtCore import QStandardPaths, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QAbstractButton,
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.band_profiles import BandLayout, propose
from mrhash_qgis.contract.bands import parse_bands
from mrhash_qgis.contract.choices import BITS, DEVICES
from mrhash_qgis.contract.protocol import (
    ScanRequest,
    ScanResult,
    SourceEntry,
    TrainOptions,
    TrainRequest,
    TrainResult,
)
from mrhash_qgis.core import settings
from mrhash_qgis.core.band_layout import band_description, band_label, layer_layout
from mrhash_qgis.core.engine_client import EngineClient, EngineRequest, log
from mrhash_qgis.core.engine_task import EngineTask
from mrhash_qgis.core.environment import PLUGIN_DIR
from mrhash_qgis.core.hits_layer import geometry_from_geojson
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path
from mrhash_qgis.core.settings import TrainSettings
from mrhash_qgis.core.web_sources import layer_source
from mrhash_qgis.map_tool import polygon_band
from mrhash_qgis.ui.loss_plot import LossPlot
from mrhash_qgis.ui.stac_dialog import StacDialog

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
PRIMARY_COLOUR, AUX_COLOURS = QColor("#1d4e89"), ("#e07a1f", "#7b2cbf", "#2a9d8f", "#c1121f")
MODEL_SUFFIX = ".safetensors"
# the answers to "Training is running" when the wizard is closed (object names, for tests)
KEEP, STOP, BACK = "keep", "stop", "back"


def default_model_folder() -> Path:
    """Where a new model goes unless the user says otherwise: the folder of the last model,
    else the saved project's folder, else MrHash/ in the user's documents (or home) — never
    the plugin's or QGIS's folder, which updates replace (and the engine's working folder
    is the plugin's, so a relative path would land there)."""
    last = settings.TrainSettings.load().output_dir
    if last and Path(last).is_dir():
        return Path(last)
    project = QgsProject.instance().absolutePath()
    if project:
        return Path(project)
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return (Path(documents) if documents and Path(documents).is_dir() else Path.home()) / "MrHash"


def unused_model_path(folder: Path, stem: str) -> Path:
    """folder/stem.safetensors, or stem_2, stem_3, ... where that model exists: a new
    training never takes an existing model's name unasked (indexes may need it)."""
    candidate, number = folder / f"{stem}{MODEL_SUFFIX}", 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}_{number}{MODEL_SUFFIX}"
    return candidate


def model_path_problem(path: str) -> str | None:
    """Why a model cannot be saved as `path`, in words that name it, or None. Checked by
    writing a probe file: permissions, read-only mounts and full shares all show."""
    if not path.strip():
        return tr("Choose where to save the model.")
    target = Path(path).expanduser()
    if not target.is_absolute():
        return tr("Give the model's full path, e.g. {example}.").format(
            example=default_model_folder() / (target.name or "model" + MODEL_SUFFIX))
    if target.is_dir():
        return tr("{path} is a folder: give a file name in it, e.g. {example}.").format(
            path=target, example=target / ("model" + MODEL_SUFFIX))
    folder = target.parent
    for install in (PLUGIN_DIR, Path(QgsApplication.pkgDataPath())):
        if folder.resolve().is_relative_to(install.resolve()):
            return tr("{path} is inside {install}, which updates replace: save the model in "
                      "another folder.").format(path=target, install=install)
    if not folder.is_dir():
        reason = tr("it is a file") if folder.exists() else tr("it does not exist")
        return tr("Cannot save the model as {path}: the folder {folder} is not usable "
                  "({reason}).").format(path=target, folder=folder, reason=reason)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return tr("Cannot save the model as {path}: the folder {folder} cannot be written "
                  "({reason}).").format(path=target, folder=folder,
                                        reason=error.strerror or error)
    return None


@dataclass
class SourceChoice:
    """A source picked in the wizard: a raster layer's file, a folder, or a remote source
    (`remote`: the engine's entry for a web layer, {url}, or a STAC catalogue, {stac, assets,
    ...}; `path` is then what the list shows)."""

    path: str
    bands: list[int] | None = None
    footprint: QgsGeometry | None = None  # outline in EPSG:4326 when known
    remote: dict | None = None

    @property
    def kind(self) -> str:
        if self.remote is not None:
            return tr("STAC") if "stac" in self.remote else tr("web layer")
        return tr("folder") if Path(self.path).is_dir() else tr("raster")

    def entry(self, name: str | None = None) -> SourceEntry:
        """The protocol's source entry of this choice."""
        if self.remote is not None:
            bands = self.bands if "stac" not in self.remote else None
            return SourceEntry.from_params({**self.remote, "name": name, "bands": bands}, name
                                           or self.path)
        return SourceEntry.local([self.path], self.bands, name)


@dataclass
class BandGroup:
    """Bands of the primary files themselves as one auxiliary source (the engine reads them
    from each primary raster: the same place by construction)."""

    name: str
    bands: list[int]


def layer_outline(layer: QgsRasterLayer) -> QgsGeometry:
    geometry = QgsGeometry.fromRect(layer.extent())
    geometry.transform(QgsCoordinateTransform(layer.crs(), WGS84, QgsProject.instance()))
    return geometry


class SourcePicker(QWidget):
    """A raster layer (with a checkable band list, the RGB bands ticked where the file says
    which they are) or a folder (bands typed as a 1-based list). A widget, not a bare
    layout: its band widgets have a parent from the start, so showing or hiding them never
    puts a window of their own on the screen."""

    changed = pyqtSignal()

    def __init__(self, allow_bands: bool = True, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.allow_bands = allow_bands
        self.layer_radio, self.folder_radio = (QRadioButton(tr("Raster layer")),
                                             QRadioButton(tr("Folder")))
        self.layer_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.layer_radio)
        group.addButton(self.folder_radio)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.band_label = QLabel(tr("Bands"))
        self.band_list = QListWidget()
        self.band_list.setMaximumHeight(160)
        self.band_edit = QLineEdit()
        self.band_edit.setPlaceholderText(tr("bands, 1-based, e.g. 4,3,2 (empty: all)"))
        self.layout_label = QLabel("")
        self.layout_label.setWordWrap(True)
        for row in ((self.layer_radio, self.layer_combo), (self.folder_radio, self.folder_widget)):
            line = QHBoxLayout()
            line.addWidget(row[0])
            line.addWidget(row[1], 1)
            layout.addLayout(line)
        for widget in (self.band_label, self.band_list, self.band_edit, self.layout_label):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.layer_combo.layerChanged.connect(self._fill_bands)
        self.layer_radio.toggled.connect(self._show_mode)
        self.folder_widget.fileChanged.connect(lambda _path: self.changed.emit())
        self._fill_bands(self.layer_combo.currentLayer())
        self._show_mode()

    def _show_mode(self) -> None:
        layer_mode = self.layer_radio.isChecked()
        self.layer_combo.setEnabled(layer_mode)
        self.folder_widget.setEnabled(not layer_mode)
        self.band_label.setVisible(self.allow_bands)
        self.layout_label.setVisible(self.allow_bands and layer_mode)
        self.band_list.setVisible(self.allow_bands and layer_mode)
        self.band_edit.setVisible(self.allow_bands and not layer_mode)
        self.changed.emit()

    def _fill_bands(self, layer) -> None:
        self.band_list.clear()
        self.layout_label.setText("")
        if isinstance(layer, QgsRasterLayer):
            layout = layer_layout(layer)
            primary = propose(layout).primary
            for band in range(1, layer.bandCount() + 1):
                item = QListWidgetItem(band_label(layout, band, band_description(layer, band)))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if band in primary
                                   else Qt.CheckState.Unchecked)
                self.band_list.addItem(item)
            self.layout_label.setText(layout_words(layout))
        self.changed.emit()

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
        web = layer_source(layer)
        if web is not None:  # XYZ/WMS/WMTS/WCS: the engine reads what GDAL makes of it
            return SourceChoice(layer.name(), None if all_bands else bands,
                                layer_outline(layer), {"url": web})
        return SourceChoice(layer_path(layer), None if all_bands else bands,
                            layer_outline(layer))


def layout_words(layout: BandLayout) -> str:
    """What the plugin made of a file's bands, for the analyst to check."""
    if not layout.product and not any(layout.roles):
        return tr("The file does not say what its bands are: tick the ones to use.")
    product = layout.product or tr("named bands")
    if layout.assumed:
        return tr("Looks like {product}, judging by the band count: check the bands.").format(
            product=product)
    return tr("Read from the file: {product}.").format(product=product)


class PrimaryPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle(tr("1 · Primary source"))
        self.setSubTitle(tr("The imagery you will query with: a raster layer or a folder of "
                            "rasters."))
        self.picker = SourcePicker()
        QVBoxLayout(self).addWidget(self.picker)
        self.picker.changed.connect(self.completeChanged)

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return self.picker.choice() is not None


class AuxiliaryPage(QWizardPage):
    """Auxiliary sources; their footprints and the primary's are drawn on the map canvas.
    `layoutRead(folder)`: the engine's scan said what a folder's bands are."""

    layoutRead = pyqtSignal(str)  # noqa: N815 (Qt signal naming)

    def __init__(self, client: EngineClient, canvas):
        super().__init__()
        self.setTitle(tr("2 · Auxiliary sources"))
        self.setSubTitle(tr("Other sources of the same place (other bands, SAR, another "
                            "sensor). They teach the model; queries need only the primary."))
        self.client, self.canvas = client, canvas
        # in the list's order: other rasters / web / STAC sources, and band groups of the
        # primary files themselves
        self.entries: list[SourceChoice | BandGroup] = []
        self.bands: list = []  # QgsRubberBand
        self._footprints: dict[str, QgsGeometry | None] = {}  # folder -> outline (None: pending)
        self.layouts: dict[str, BandLayout] = {}  # folder -> what its rasters' bands are
        # folder of each scan in flight; its replies go to methods, not lambdas, so that Qt
        # drops them when the wizard is gone before the engine answers
        self._scans: dict[EngineRequest, str] = {}
        layout = QVBoxLayout(self)

        same = QGroupBox(tr("Other bands of the primary files"))
        same_row = QHBoxLayout(same)
        self.same_list = QListWidget()
        self.same_list.setMaximumHeight(130)
        self.same_list.setToolTip(tr("Tick the bands of one auxiliary source (e.g. the "
                                     "near-infrared band), name it, then Add these bands"))
        same_buttons = QVBoxLayout()
        self.group_name_edit = QLineEdit()
        self.group_name_edit.setPlaceholderText(tr("name, e.g. nir"))
        self.add_bands_button = QPushButton(tr("Add these bands"))
        self.add_bands_button.clicked.connect(self.add_ticked_bands)
        self.suggest_button = QPushButton(tr("Add the suggested groups"))
        self.suggest_button.clicked.connect(self.add_suggested)
        self.suggest_label = QLabel("")
        self.suggest_label.setWordWrap(True)
        for widget in (self.group_name_edit, self.add_bands_button, self.suggest_button,
                       self.suggest_label):
            same_buttons.addWidget(widget)
        same_buttons.addStretch(1)
        same_row.addWidget(self.same_list, 1)
        same_row.addLayout(same_buttons, 1)
        layout.addWidget(same)
        self.same_group = same

        other = QGroupBox(tr("Other rasters, web layers or a STAC catalogue"))
        other_layout = QVBoxLayout(other)
        self.picker = SourcePicker(allow_bands=False)
        other_layout.addWidget(self.picker)
        buttons = QHBoxLayout()
        self.add_button, self.remove_button = QPushButton(tr("Add")), QPushButton(tr("Remove"))
        self.stac_button = QPushButton(tr("STAC catalogue…"))
        self.stac_button.setToolTip(tr("Other images of each place from a STAC catalogue: "
                                       "the engine finds the items covering every primary "
                                       "footprint and pulls the bands asked for"))
        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        self.stac_button.clicked.connect(self.open_stac)
        self.stac_dialog = None
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.stac_button)
        buttons.addStretch(1)
        other_layout.addLayout(buttons)
        layout.addWidget(other)

        list_row = QHBoxLayout()
        list_row.addWidget(QLabel(tr("Auxiliary sources")), 1)
        list_row.addWidget(self.remove_button)
        layout.addLayout(list_row)
        self.list = QListWidget()
        self.list.setMinimumHeight(70)
        layout.addWidget(self.list, 1)
        self.overlap_label = QLabel(tr("No auxiliary source: the model learns from the "
                                       "primary only."))
        self.overlap_label.setWordWrap(True)
        layout.addWidget(self.overlap_label)

    @property
    def sources(self) -> list[SourceChoice]:
        """The auxiliary sources that are other files (not bands of the primary's)."""
        return [e for e in self.entries if isinstance(e, SourceChoice)]

    @property
    def band_groups(self) -> list[BandGroup]:
        return [e for e in self.entries if isinstance(e, BandGroup)]

    def primary(self) -> SourceChoice | None:
        return self.wizard().primary_page.picker.choice() if self.wizard() else None

    def add_source(self, choice: SourceChoice) -> None:
        self.entries.append(choice)
        name = choice.path if choice.remote is not None else Path(choice.path).name
        item = QListWidgetItem(f"aux{len(self.sources)} · {choice.kind} · {name}")
        item.setToolTip(choice.path)
        self.list.addItem(item)
        self.refresh_overlap()

    def add_band_group(self, group: BandGroup) -> None:
        """Bands of the primary files as one auxiliary source (a name already used is
        replaced)."""
        for row, entry in reversed(list(enumerate(self.entries))):
            if isinstance(entry, BandGroup) and entry.name == group.name:
                self.entries.pop(row)
                self.list.takeItem(row)
        self.entries.append(group)
        layout = self.primary_layout()
        words = layout.describe(group.bands) if layout else ",".join(map(str, group.bands))
        item = QListWidgetItem(tr("{name} · bands of the primary files · {bands}").format(
            name=group.name, bands=words))
        self.list.addItem(item)
        self.refresh_overlap()

    def add_current(self) -> None:
        choice = self.picker.choice()
        if choice is not None:
            self.add_source(choice)

    def primary_layout(self) -> BandLayout | None:
        """What the primary's bands are: read from its layer, or from the engine's scan of
        its folder (None until that answers)."""
        primary_page = self.wizard().primary_page if self.wizard() else None
        if primary_page is None:
            return None
        picker = primary_page.picker
        layer = picker.layer_combo.currentLayer()
        if picker.layer_radio.isChecked():
            return layer_layout(layer) if isinstance(layer, QgsRasterLayer) else None
        primary = picker.choice()
        if primary is None:
            return None
        self.footprint(primary)  # scans the folder once: its layout comes with the reply
        return self.layouts.get(primary.path)

    def _primary_bands(self) -> tuple[int, ...]:
        primary = self.primary()
        layout = self.primary_layout()
        if primary is not None and primary.bands:
            return tuple(b for b in primary.bands if isinstance(b, int))
        return propose(layout).primary if layout else ()

    def refresh_bands(self) -> None:
        """The band list and the suggestion follow the primary (its bands are left out)."""
        self.same_list.clear()
        layout = self.primary_layout()
        if layout is None:
            self.suggest_label.setText(tr("Reading the primary's bands…")
                                       if self.primary() else "")
            self.suggest_button.setEnabled(False)
            return
        primary = set(self._primary_bands())
        for band in range(1, layout.count + 1):
            if band in primary:
                continue
            item = QListWidgetItem(band_label(layout, band))
            item.setData(Qt.ItemDataRole.UserRole, band)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.same_list.addItem(item)
        # shown only where the primary files have bands left to learn from
        self.same_group.setVisible(self.same_list.count() > 0)
        groups = self.suggested()
        self.suggest_button.setEnabled(bool(groups))
        self.suggest_label.setText(tr("Suggested: {groups}").format(groups=", ".join(
            g.name for g in groups)) if groups else tr("The primary files have no other "
                                                        "bands."))
        self.suggest_label.setToolTip("\n".join(f"{g.name}: {layout.describe(g.bands)}"
                                                for g in groups))

    def suggested(self) -> list[BandGroup]:
        layout = self.primary_layout()
        if layout is None:
            return []
        primary = self._primary_bands()
        proposal = propose(layout)
        return [BandGroup(name, [b for b in bands if b not in primary])
                for name, bands in proposal.auxiliary if set(bands) - set(primary)]

    def add_suggested(self) -> None:
        for group in self.suggested():
            self.add_band_group(group)

    def add_ticked_bands(self) -> None:
        bands = [self.same_list.item(i).data(Qt.ItemDataRole.UserRole)
                 for i in range(self.same_list.count())
                 if self.same_list.item(i).checkState() == Qt.CheckState.Checked]
        if not bands:
            self.overlap_label.setText(tr("Tick the bands of the source first."))
            return
        name = self.group_name_edit.text().strip() or f"bands{len(self.band_groups) + 1}"
        self.add_band_group(BandGroup(re.sub(r"[^A-Za-z0-9_-]+", "_", name), bands))
        self.group_name_edit.clear()
        for i in range(self.same_list.count()):
            self.same_list.item(i).setCheckState(Qt.CheckState.Unchecked)

    def search_bbox(self) -> tuple[float, float, float, float]:
        """Where to look for STAC items: the primary's outline, else the canvas extent
        (EPSG:4326)."""
        primary = self.primary()
        outline = self.footprint(primary) if primary is not None else None
        if outline is None or outline.isEmpty():
            outline = QgsGeometry.fromRect(self.canvas.extent())
            outline.transform(QgsCoordinateTransform(
                self.canvas.mapSettings().destinationCrs(), WGS84, QgsProject.instance()))
        box = outline.boundingBox()
        return (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())

    def open_stac(self) -> StacDialog:
        """The STAC dialog (modeless: the items it finds are drawn on the canvas)."""
        self.stac_dialog = StacDialog(self.client, self.canvas, self.search_bbox, self)
        self.stac_dialog.accepted.connect(self._stac_chosen)
        self.stac_dialog.show()
        return self.stac_dialog

    def _stac_chosen(self) -> None:
        dialog = self.stac_dialog
        source = dialog.source()
        label = f"{source['stac']} @{','.join(source['assets'])}"
        self.add_source(SourceChoice(label, footprint=dialog.coverage(), remote=source))

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.list.takeItem(row)
            self.entries.pop(row)
            self.refresh_overlap()

    def footprint(self, choice: SourceChoice) -> QgsGeometry | None:
        """A layer's outline, or a folder's (union of its rasters, asked once to the engine's
        `scan`, asynchronously: None until it answers)."""
        if choice.footprint is not None or choice.path in self._footprints:
            return choice.footprint or self._footprints[choice.path]
        self._footprints[choice.path] = None
        path = choice.path
        request = self.client.submit(ScanRequest(path), finished=self._scanned,
                                     failed=self._scan_failed)
        self._scans[request] = path  # before the reply: it is queued to this thread
        return None

    def _scan_failed(self, _code: str, message: str) -> None:
        log(f"scan {self._scans.pop(self.sender(), '')}: {message}", Qgis.MessageLevel.Warning)

    def _scanned(self, result: dict) -> None:
        path = self._scans.pop(self.sender())
        sources = ScanResult.from_result(result).sources
        outlines = [geometry_from_geojson(s.footprint_wgs84["wkt"])
                    for s in sources if s.footprint_wgs84.get("wkt")]
        if outlines:
            self._footprints[path] = QgsGeometry.unaryUnion(outlines)
        layout = sources[0].band_layout() if sources else None
        if layout is not None:
            self.layouts[path] = layout
            self.layoutRead.emit(path)
        self.refresh_overlap()
        self.refresh_bands()

    def refresh_overlap(self) -> None:
        """Redraw footprints and report how much of the primary each source covers."""
        self.clear_canvas()
        primary = self.primary()
        primary_outline = self.footprint(primary) if primary is not None else None
        lines = []
        for i, source in enumerate(self.sources):
            colour = QColor(AUX_COLOURS[i % len(AUX_COLOURS)])
            name = source.path if source.remote is not None else Path(source.path).name
            if source.remote is not None and source.footprint is None:
                lines.append(tr("{name}: read over each primary footprint").format(name=name))
                continue
            outline = self.footprint(source)
            if outline is None:
                lines.append(tr("{name}: footprint pending…").format(name=name))
                continue
            self._draw(outline, colour, fill=True)
            if primary_outline is None:
                lines.append(tr("{name}: drawn; the primary's footprint is pending…").format(
                    name=name))
            else:
                covered = primary_outline.intersection(outline).area()
                share = 100.0 * covered / max(primary_outline.area(), 1e-12)
                lines.append(tr("{name}: covers {share}% of the primary").format(
                    name=name, share=f"{share:.0f}"))
        if primary_outline is not None:  # on top, dashed: visible where sources coincide
            self._draw(primary_outline, PRIMARY_COLOUR, fill=False).setLineStyle(
                Qt.PenStyle.DashLine)
        lines += [tr("{name}: bands of the primary files, the same places").format(
            name=group.name) for group in self.band_groups]
        self.overlap_label.setText("\n".join(lines) if lines else tr(
            "No auxiliary source: the model learns from the primary only."))

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
        self.refresh_bands()

    def cleanupPage(self) -> None:  # noqa: N802 (Qt API)
        self.clear_canvas()


class ParamsPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle(tr("3 · Parameters"))
        self.setSubTitle(tr("Small values train fast; more epochs and bits retrieve better."))
        remembered = TrainSettings.load()
        form = QFormLayout(self)
        self.bits_combo = QComboBox()
        self.bits_combo.addItems([str(b) for b in BITS])
        self.bits_combo.setCurrentText(str(remembered.bits))
        self.clusters_spin = self._spin(2, 1000, remembered.clusters)
        self.epochs_spin = self._spin(1, 1000, remembered.epochs)
        self.ae_epochs_spin = self._spin(1, 1000, remembered.ae_epochs)
        self.patch_spin = self._spin(16, 1024, remembered.patch_size)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(remembered.device)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_widget.setFilter(tr("MrHash model (*.safetensors)"))
        self.problem_label = QLabel("")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #b00020")
        form.addRow(tr("Hash bits"), self.bits_combo)
        form.addRow(tr("Clusters (pseudo-labels)"), self.clusters_spin)
        form.addRow(tr("Hash epochs"), self.epochs_spin)
        form.addRow(tr("Autoencoder epochs"), self.ae_epochs_spin)
        form.addRow(tr("Patch size (px)"), self.patch_spin)
        form.addRow(tr("Device"), self.device_combo)
        form.addRow(tr("Save model as"), self.output_widget)
        form.addRow("", self.problem_label)
        # slots are methods, not lambdas: Qt drops them with the page (the file widget
        # signals while it is destroyed)
        self.output_widget.fileChanged.connect(self._output_changed)

    @staticmethod
    def _spin(low: int, high: int, value: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        return spin

    def _output_changed(self, _path: str) -> None:
        self.problem_label.setText("")
        self.completeChanged.emit()

    def chosen(self) -> TrainSettings:
        output = self.output_widget.filePath()
        return TrainSettings(int(self.bits_combo.currentText()), self.clusters_spin.value(),
                             self.epochs_spin.value(), self.ae_epochs_spin.value(),
                             self.patch_spin.value(), self.device_combo.currentText(),
                             str(Path(output).parent) if output else "")

    def initializePage(self) -> None:  # noqa: N802 (Qt API)
        if self.output_widget.filePath():
            return
        primary = self.wizard().primary_page.picker.choice()
        base = Path(primary.path) if primary is not None else Path("model")
        stem = base.name if base.is_dir() else base.stem
        folder = default_model_folder()
        try:  # the default MrHash/ folder is made on first use
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # said by the path check, with the folder's name
            log(f"cannot create {folder}: {error}", Qgis.MessageLevel.Warning)
        self.output_widget.setFilePath(str(unused_model_path(folder, f"{stem}_mrhash")))

    def validatePage(self) -> bool:  # noqa: N802 (Qt API)
        problem = model_path_problem(self.output_widget.filePath())
        self.problem_label.setText(problem or "")
        return problem is None

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return bool(self.output_widget.filePath())


def report_text(report: dict | None) -> str:
    """The engine's label-free model report in a few plain lines (empty without one)."""
    if not report:
        return ""
    lines = [tr("<b>Model report</b> (no labels needed): {verdict}").format(
        verdict=report.get("verdict", ""))]
    codes, bits = report.get("codes") or {}, report.get("bit_correlation") or {}
    balance, clusters = report.get("bit_balance") or {}, report.get("clusters") or {}
    if codes:
        lines.append(tr("{distinct:,} distinct codes for {n:,} tiles; the largest group "
                        "sharing one code holds {tie} of them.").format(
            distinct=codes.get("distinct", 0), n=report.get("n_tiles", 0),
            tie=f"{100 * codes.get('largest_tie_fraction', 0):.1f}%"))
    if balance and bits:
        lines.append(tr("Bits: {dead} of {n} nearly constant; mean |correlation| between bits "
                        "{corr}.").format(dead=balance.get("dead_bits", 0),
                                          n=report.get("bits", 0),
                                          corr=f"{bits.get('mean_abs', 0):.2f}"))
    if clusters:
        largest = f"{100 * clusters.get('largest_fraction', 0):.0f}%"
        lines.append(tr("Clusters: {empty} of {k} empty; the largest holds {largest} of the "
                        "tiles.").format(empty=clusters.get("empty", 0), k=clusters.get("k", 0),
                                         largest=largest))
    views = report.get("view_agreement")
    if views:
        lines.append(tr("A rotated or flipped tile changes {share} of its bits.").format(
            share=f"{100 * views.get('mean_hamming_fraction', 0):.1f}%"))
    return "<br>".join(lines)


class TrainPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle(tr("4 · Training"))
        self.setSubTitle(tr("The engine trains in its own process, as a QGIS task: QGIS stays "
                            "responsive, and closing the wizard can keep it running."))
        self.result: TrainResult | None = None
        layout = QVBoxLayout(self)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.plot = LossPlot()
        self.plot.setMinimumHeight(220)  # the report below must not squeeze the curves
        self.plot.setToolTip(tr(
            "The autoencoder's reconstruction loss should fall. The hash losses are KL "
            "divergences to pseudo-label targets that are re-sharpened every epoch, so they "
            "need not fall: a rise means sharper targets, not a failed training."))
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumHeight(60)
        self.report_label = QLabel("")
        self.report_label.setWordWrap(True)
        self.report_label.setToolTip(tr(
            "Measured on your training tiles, without labels: how evenly the bits split the "
            "tiles, how independent they are, how many tiles share a code, how the "
            "pseudo-label clusters are used, and whether a rotated or flipped tile keeps its "
            "code."))
        buttons = QHBoxLayout()
        self.cancel_button = QPushButton(tr("Cancel training"))
        self.index_button = QPushButton(tr("Index with this model…"))
        self.index_button.setEnabled(False)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.index_button)
        # the report scrolls in a box of its own: at its longest it never covers the plot
        report_box = QScrollArea()
        report_box.setWidget(self.report_label)
        report_box.setWidgetResizable(True)
        report_box.setFrameShape(QFrame.Shape.NoFrame)
        report_box.setMaximumHeight(110)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.log_view)
        layout.addWidget(report_box)
        layout.addLayout(buttons)

    def initializePage(self) -> None:  # noqa: N802 (Qt API)
        self.wizard().start_training()

    def isComplete(self) -> bool:  # noqa: N802 (Qt API)
        return self.result is not None


class TrainWizard(QWizard):
    modelTrained = pyqtSignal(str)    # noqa: N815 (Qt signal naming)
    indexRequested = pyqtSignal(str)  # noqa: N815
    trainingFailed = pyqtSignal(str)  # noqa: N815
    trainingProgress = pyqtSignal(dict)  # noqa: N815

    def __init__(self, iface, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash — train a model"))
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setMinimumSize(700, 640)
        self.iface, self.client = iface, client
        self.task: EngineTask | None = None
        self.close_question: QMessageBox | None = None
        self.primary_page = PrimaryPage()
        self.auxiliary_page = AuxiliaryPage(client, iface.mapCanvas())
        self.params_page = ParamsPage()
        self.train_page = TrainPage()
        for page in (self.primary_page, self.auxiliary_page, self.params_page, self.train_page):
            self.addPage(page)
        self.primary_page.picker.folder_widget.fileChanged.connect(self._primary_folder)
        self.auxiliary_page.layoutRead.connect(self._propose_primary_bands)
        self.train_page.cancel_button.clicked.connect(self.cancel_training)
        self.train_page.index_button.clicked.connect(self._index_with_model)
        self.finished.connect(self._closed)

    def _primary_folder(self, folder: str) -> None:
        """Ask what a typed or chosen primary folder's bands are (for its RGB default)."""
        if folder and Path(folder).is_dir():
            self.auxiliary_page.footprint(SourceChoice(folder))

    def _propose_primary_bands(self, folder: str) -> None:
        """The RGB bands of a primary folder, proposed while its page is shown and the bands
        field is empty (never over what the user typed)."""
        picker = self.primary_page.picker
        layout = self.auxiliary_page.layouts.get(folder)
        if (layout is None or self.currentPage() is not self.primary_page
                or picker.folder_widget.filePath() != folder or picker.band_edit.text()):
            return
        picker.band_edit.setText(",".join(map(str, propose(layout).primary)))
        picker.layout_label.setText(layout_words(layout))
        picker.layout_label.setVisible(True)

    @property
    def busy(self) -> bool:
        """Training started here is running (in the background once the wizard is closed)."""
        return self.task is not None

    def _index_with_model(self) -> None:
        self.indexRequested.emit(self.train_page.result.model)

    def _closed(self, _code: int) -> None:
        self.auxiliary_page.clear_canvas()

    def request(self) -> TrainRequest:
        """The engine request of the choices made (the pages have checked them)."""
        primary = self.primary_page.picker.choice()
        chosen = self.params_page.chosen()
        return TrainRequest(
            str(Path(self.params_page.output_widget.filePath()).expanduser()),
            primary.entry() if primary else SourceEntry(),
            [s.entry(f"aux{i}") for i, s in enumerate(self.auxiliary_page.sources, 1)],
            aux_bands=[(g.name, list(g.bands)) for g in self.auxiliary_page.band_groups],
            options=TrainOptions(bits=chosen.bits, clusters=chosen.clusters,
                                 epochs=chosen.epochs, ae_epochs=chosen.ae_epochs,
                                 patch_size=chosen.patch_size, device=chosen.device, seed=0))

    def start_training(self) -> EngineTask:
        """Remember the parameters and start the training task (the parameters page has
        checked the model's path)."""
        page = self.train_page
        page.result = None
        page.plot.clear()
        page.progress.setValue(0)
        page.index_button.setEnabled(False)
        self.auxiliary_page.clear_canvas()
        request = self.request()
        self.params_page.chosen().save()
        page.cancel_button.setEnabled(True)
        page.status_label.setText(tr("Starting…"))
        self.task = EngineTask(tr("MrHash: train {model}").format(
            model=Path(request.output).name), self.client, request)
        self.task.progressEvent.connect(self._on_progress)
        self.task.done.connect(self._on_finished)
        self.task.error.connect(self._on_failed)
        self._lock_back(True)
        return self.task.start()

    def cancel_training(self) -> None:
        if self.task is not None:
            self.train_page.status_label.setText(tr("Cancelling…"))
            self.task.cancel()  # may end the task at once: the page then says so

    def _lock_back(self, locked: bool) -> None:
        """Back would leave a running training behind: QWizard disables Back on the page
        after a commit page, so the parameters page is one while the task runs."""
        self.params_page.setCommitPage(locked)
        self.train_page.completeChanged.emit()  # makes QWizard update its buttons

    # closing (X, Esc and Cancel all come here through QDialog.reject)
    def reject(self) -> None:
        if self.task is None:
            super().reject()
            return
        box = QMessageBox(QMessageBox.Icon.Question, tr("MrHash — training is running"),
                          tr("Training is running. Keep it running in the background (it "
                             "stays in the task manager and says where the model is when it "
                             "is done), or stop it?"), QMessageBox.StandardButton.NoButton, self)
        role = QMessageBox.ButtonRole
        answers = {}
        for name, text, button_role in (
                (KEEP, tr("Keep running in the background"), role.AcceptRole),
                (STOP, tr("Stop training"), role.DestructiveRole),
                (BACK, tr("Back to the wizard"), role.RejectRole)):
            answers[name] = box.addButton(text, button_role)
            answers[name].setObjectName(name)
        box.setEscapeButton(answers[BACK])
        box.setDefaultButton(answers[KEEP])
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.buttonClicked.connect(self._close_answered)
        self.close_question = box
        box.open()  # not exec(): QGIS's event loop, and the training's progress, go on

    def _close_answered(self, button: QAbstractButton) -> None:
        self.close_question = None
        if button.objectName() == BACK:
            return
        if button.objectName() == STOP:
            self.cancel_training()
        super().reject()

    def shutdown(self) -> None:
        """The plugin unloads: stop the training and close without asking."""
        self.cancel_training()
        super().reject()

    # the training task's signals
    def _on_progress(self, event: dict) -> None:
        if self.task is None:  # a progress event queued before the job ended: stale
            return
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
            text += tr(" · about {seconds} s left").format(seconds=f"{event['eta_s']:.0f}")
        page.status_label.setText(text)
        if event.get("epoch") is not None and event.get("loss") is not None:
            line = tr("{stage} epoch {epoch}: loss {loss}").format(
                stage=event.get("stage", ""), epoch=event["epoch"], loss=f"{event['loss']:.4f}")
            if event.get("kl_code") is not None:
                line += tr(" (code KL {kl})").format(kl=f"{event['kl_code']:.4f}")
            page.log_view.appendPlainText(line)
        # last: a slot may cancel, and a cancelled task can end (and say so on this page)
        # before the emit returns; nothing after it may overwrite that
        self.trainingProgress.emit(event)

    def _on_finished(self, result: dict) -> None:
        self.task = None
        self._lock_back(False)
        page = self.train_page
        page.result = trained = TrainResult.from_result(result)
        page.progress.setValue(100)
        page.cancel_button.setEnabled(False)
        page.index_button.setEnabled(True)
        model = trained.model
        text = tr("Model saved: {model} ({seconds} s)").format(
            model=model, seconds=f"{trained.seconds:.0f}")
        pull = trained.pull
        if pull is not None:
            text += tr(". Pulled {mb} MB for {n} places ({cached} from the cache, {missing} "
                       "not covered); the cache {cache} holds {total} MB").format(
                mb=f"{pull.bytes / 1e6:.1f}", n=pull.footprints, cached=pull.from_cache,
                missing=pull.no_coverage, cache=pull.cache_dir,
                total=f"{pull.cache_bytes / 1e6:.1f}")
        if trained.previous:
            text += tr(". The model it replaced is kept as {previous} (indexes built with it "
                       "still use it)").format(previous=trained.previous)
        page.status_label.setText(text)
        page.report_label.setText(report_text(trained.report))
        settings.LAST_MODEL.put(model)
        page.completeChanged.emit()
        if not self.isVisible():  # kept running in the background: say so where the user is
            self._announce(text, model)
        self.modelTrained.emit(model)

    def _announce(self, text: str, model: str) -> None:
        """A message-bar message with the offer the wizard's last page makes."""
        bar = self.iface.messageBar()
        item = QgsMessageBar.createMessage("MrHash", text)
        button = QPushButton(tr("Index with this model…"), item)
        button.clicked.connect(lambda: (self.indexRequested.emit(model), bar.popWidget(item)))
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.MessageLevel.Success, 0)

    def _on_failed(self, code: str, message: str, _fix: str) -> None:
        self.task = None
        self._lock_back(False)
        page = self.train_page
        page.cancel_button.setEnabled(False)
        cancelled = code == protocol.CANCELLED
        text = tr("Training cancelled.") if cancelled else tr("Training failed: {message}").format(
            message=message)
        page.status_label.setText(text)
        if not cancelled:
            self.iface.messageBar().pushMessage("MrHash", text, Qgis.MessageLevel.Critical, 10)
        elif not self.isVisible():  # cancelled in the task manager, the wizard closed
            self.iface.messageBar().pushMessage("MrHash", text, Qgis.MessageLevel.Info, 5)
        self.trainingFailed.emit(text)
