"""The MrHash dock, the view of a search: engine state, model / index pickers, query options,
and the results: thumbnails, marks and Refine, the map of every place like these, export,
saved searches. What a search asks the engine and keeps is core/search_session.py's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsDockWidget, QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mrhash_qgis.contract.index_layout import IndexReader, IndexUnreadable
from mrhash_qgis.contract.protocol import (
    MAP_THRESHOLD,
    QUERY,
    Hit,
    MapResult,
    OpenRequest,
    QueryResult,
)
from mrhash_qgis.core import settings
from mrhash_qgis.core.detections import DOUBTFUL, Detections
from mrhash_qgis.core.engine_client import (
    FIX_REPAIR,
    FIX_SETUP,
    STATE_FAILED,
    EngineClient,
    EngineRequest,
)
from mrhash_qgis.core.hits_layer import ShownHit, geometry_from_geojson, usable
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path
from mrhash_qgis.core.raster_style import show_like_thumbnail
from mrhash_qgis.core.results import export_layer, export_layers
from mrhash_qgis.core.search_places import (
    WGS84,
    WITHIN_ANYWHERE,
    WITHIN_EXTENT,
    WITHIN_SELECTION,
    search_area,
    selected_footprints,
)
from mrhash_qgis.core.search_session import SearchOptions, SearchSession
from mrhash_qgis.core.searches import Search, saved_searches
from mrhash_qgis.core.setup_task import EngineSetup
from mrhash_qgis.map_tool import QueryLocation
from mrhash_qgis.ui.band_dialog import BandChoiceDialog
from mrhash_qgis.ui.index_dialog import index_model
from mrhash_qgis.ui.results_panel import ResultsPanel

if TYPE_CHECKING:  # the results layers are the session's: only named here
    from qgis.core import QgsVectorLayer


def _setting_checkbox(text: str, setting: settings.Setting, tooltip: str) -> QCheckBox:
    """A checkbox whose state is remembered as `setting`."""
    box = QCheckBox(text)
    box.setToolTip(tooltip)
    box.setChecked(setting.get())
    box.toggled.connect(setting.put)
    return box


class MrHashDock(QgsDockWidget):
    """Emits `queryFinished(result)` (a QueryResult of the hits shown) once hits are on the
    map and in the grid, `mapFinished(result)` (a MapResult) once a map's layers are."""

    queryFinished = pyqtSignal(object)  # noqa: N815 (Qt signal naming)
    mapFinished = pyqtSignal(object)    # noqa: N815
    queryFailed = pyqtSignal(str)     # noqa: N815
    quickStartRequested = pyqtSignal()  # noqa: N815
    indexRequested = pyqtSignal(str)  # noqa: N815 (a model to build an index with)
    queryToolRequested = pyqtSignal(bool)  # noqa: N815

    def __init__(self, iface, client: EngineClient, map_tool=None, parent=None,
                 setup: EngineSetup | None = None):
        super().__init__(tr("MrHash"), parent)
        self.setObjectName("MrHashDock")
        self.iface = iface
        self.client = client
        self.setup = setup or EngineSetup(client)
        self.map_tool = map_tool
        self.session = SearchSession(client, self)
        self.session.ask_bands = self._ask_bands
        self._offered_model = ""  # the model the "Index a folder with" button offers

        body = QWidget()
        layout = QVBoxLayout(body)
        self._add_engine_rows(layout)
        self._add_choices(layout)
        self._add_query_rows(layout)
        self._add_results(layout)
        self.setWidget(body)

        self.session.said.connect(self.status_label.setText)
        self.session.failed.connect(self._fail)
        self.session.hitsArrived.connect(self._show_hits)
        self.session.resultShown.connect(self.queryFinished)
        self.session.mapArrived.connect(self._show_map)
        self.session.detectionsToCheck.connect(self._show_to_check)
        self.session.searchChanged.connect(self.results.show_search)
        self.session.exported.connect(self._said_done)
        self.client.stateChanged.connect(self._show_state)
        self.client.ready.connect(lambda _info: self._show_state(self.client.state))
        self.client.ready.connect(lambda _info: self._open_index())
        self._show_state(self.client.state)
        # a bound method: the connection goes with the dock when the plugin unloads
        QgsProject.instance().readProject.connect(self._project_read)
        self.restore_from_project()
        self._show_index_model()  # the remembered index's model, said from the start

    def _add_engine_rows(self, layout: QVBoxLayout) -> None:
        """The engine's state, Restart, Set up / Repair with its progress, and the guided
        start."""
        engine_row = QHBoxLayout()
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        self.restart_button = QPushButton(tr("Restart"))
        self.restart_button.setToolTip(tr("Restart the engine worker"))
        self.restart_button.clicked.connect(self.client.restart)
        self.setup_button = QPushButton(tr("Set up the engine"))
        self.setup_button.setToolTip(tr(
            "Install PyTorch and the MrHash engine in a private folder of your QGIS profile "
            "(about 1.4 GB for the CPU build)"))
        self.setup_button.clicked.connect(self._setup_clicked)
        engine_row.addWidget(self.engine_label, 1)
        engine_row.addWidget(self.restart_button)
        layout.addLayout(engine_row)
        layout.addWidget(self.setup_button)
        self.setup_progress = QProgressBar()
        self.setup_progress.setRange(0, 100)
        self.setup_progress.setVisible(False)
        layout.addWidget(self.setup_progress)
        self.start_button = QPushButton(tr("Start with my imagery…"))
        self.start_button.setToolTip(tr(
            "Give the folder of your imagery: MrHash learns it and indexes it, then a click "
            "on the map finds similar places"))
        self.start_button.clicked.connect(self.quickStartRequested)
        layout.addWidget(self.start_button)
        self.setup.started.connect(lambda: self._show_state(self.client.state))
        self.setup.stepped.connect(self._show_setup_step)
        self.setup.finished.connect(self._setup_finished)

    def _add_choices(self, layout: QVBoxLayout) -> None:
        """The model and the index, and the settings of a new search."""
        form = QFormLayout()
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilePath(settings.LAST_MODEL.get())
        self.model_widget.setToolTip(tr("Model package trained with MrHash (queries use the "
                                        "model the index was built with)"))
        self.index_widget = QgsFileWidget()
        self.index_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.index_widget.setFilePath(settings.LAST_INDEX.get())
        self.index_widget.fileChanged.connect(settings.LAST_INDEX.put)
        self.index_widget.fileChanged.connect(self._index_chosen)
        self.model_widget.fileChanged.connect(settings.LAST_MODEL.put)
        self.model_widget.fileChanged.connect(lambda _path: self._show_index_model())
        self.index_label = QLabel("")
        self.index_label.setWordWrap(True)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 500)
        self.k_spin.setValue(settings.QUERY_K.get())
        self.k_spin.valueChanged.connect(settings.QUERY_K.put)
        self.within_combo = QComboBox()
        for text, key in ((tr("Anywhere in the index"), WITHIN_ANYWHERE),
                          (tr("Within the map extent"), WITHIN_EXTENT),
                          (tr("Within the selected polygons"), WITHIN_SELECTION)):
            self.within_combo.addItem(text, key)
        self.within_combo.setToolTip(tr("Only hits whose centre lies in this area (taken when "
                                        "the query runs)"))
        self.exclude_spin = QSpinBox()
        self.exclude_spin.setRange(0, 1_000_000)
        self.exclude_spin.setSingleStep(500)
        self.exclude_spin.setSuffix(" m")
        self.exclude_spin.setSpecialValueText(tr("off"))
        self.exclude_spin.setValue(settings.QUERY_EXCLUDE_M.get())
        self.exclude_spin.valueChanged.connect(settings.QUERY_EXCLUDE_M.put)
        self.exclude_spin.setToolTip(tr("Leave out hits this close to the query: places like "
                                        "it elsewhere, not its own neighbourhood"))
        form.addRow(tr("Model"), self.model_widget)
        form.addRow(tr("Index"), self.index_widget)
        form.addRow("", self.index_label)
        self.index_offer_button = QPushButton("")
        self.index_offer_button.setVisible(False)
        self.index_offer_button.clicked.connect(self._index_offer_clicked)
        form.addRow("", self.index_offer_button)
        form.addRow(tr("Results (k)"), self.k_spin)
        form.addRow(tr("Search"), self.within_combo)
        form.addRow(tr("Skip hits within"), self.exclude_spin)
        layout.addLayout(form)
        self.snap_check = _setting_checkbox(
            tr("Snap clicks to the indexed tile under them"), settings.QUERY_SNAP,
            tr("Query with the stored code of the tile under the click (exact, fast); off: "
               "encode the patch centred on the click"))
        self.append_check = _setting_checkbox(
            tr("Keep earlier results (add each query's hits)"), settings.QUERY_APPEND,
            tr("Off: each query replaces the hits layer. On: hits are added, numbered by query "
               "in its 'query' field"))
        self.session.keep_earlier = self.append_check.isChecked()
        self.append_check.toggled.connect(lambda on: setattr(self.session, "keep_earlier", on))
        layout.addWidget(self.snap_check)
        layout.addWidget(self.append_check)

    def _add_query_rows(self, layout: QVBoxLayout) -> None:
        """Query on map, Query selected polygons, and the status line."""
        query_row = QHBoxLayout()
        self.query_button = QPushButton(tr("Query on map"))
        self.query_button.setCheckable(True)
        self.query_button.setToolTip(tr("Click a point or drag a rectangle on the map"))
        self.features_button = QPushButton(tr("Query selected polygons"))
        self.features_button.setToolTip(tr(
            "Places like the polygons selected in the active vector layer (fields you mapped, "
            "examples you already have)"))
        self.features_button.clicked.connect(lambda: self.query_selected_features())
        query_row.addWidget(self.query_button)
        query_row.addWidget(self.features_button)
        layout.addLayout(query_row)
        self.status_label = QLabel(tr("Click on the map to find similar places."))
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

    def _add_results(self, layout: QVBoxLayout) -> None:
        """The thumbnails with marks, Refine, export and saved searches; the map panel."""
        self.results = ResultsPanel()
        self.grid = self.results.grid
        self.grid.hitClicked.connect(self.highlight_hit)
        self.grid.hitActivated.connect(self.open_hit)
        self.results.markRequested.connect(self.mark_hits)
        self.results.refineRequested.connect(self.refine)
        self.results.exportRequested.connect(lambda: self.export_hits())
        self.results.saveRequested.connect(lambda: self.save_search())
        self.results.runRequested.connect(self.run_saved)
        self.map_panel = self.results.map_panel
        self.map_panel.mapRequested.connect(lambda: self.map_all())
        self.map_panel.exportRequested.connect(lambda: self.export_map())
        self.map_panel.checkRequested.connect(self.check_detections)
        layout.addWidget(self.results, 1)

    def _project_read(self, _document) -> None:
        self.restore_from_project()

    # model and index: one model per index
    def _index_chosen(self, index: str) -> None:
        """The model an index was built with is the one its queries use: shown as the
        dock's model; the status says what to do now (an earlier failure is gone)."""
        model = index_model(index)
        if model and model != self.model_widget.filePath():
            self.model_widget.setFilePath(model)
        self._show_index_model()
        if model:
            self.status_label.setText(tr("Click on the map to find similar places."))
        self._open_index()

    def _open_index(self) -> None:
        """The engine opens the chosen index and loads its model now, while the analyst looks
        at the map: the first click is then as fast as the next. A failure is said when
        the analyst queries (the query's own error)."""
        index = self.index_widget.filePath()
        if not index or self.client.state != "ready":
            return
        try:
            IndexReader(index).meta()
        except IndexUnreadable:
            return  # no index there yet: nothing to open
        self.client.submit(OpenRequest(index))

    def _show_index_model(self) -> None:
        """Which model the queries use, and a warning when the chosen model is another."""
        index = self.index_widget.filePath()
        if not index:
            self.index_label.setText("")
            return
        try:
            meta = IndexReader(index).meta()
        except IndexUnreadable:
            self.index_label.setText(tr("No index in this folder yet: build one with Start "
                                        "with my imagery or MrHash › Build index."))
            return
        built_with = meta.get("model_path") or ""
        text = tr("Queries use the index's model, {model}.").format(
            model=Path(built_with).name or "?")
        chosen = self.model_widget.filePath()
        if chosen and built_with and Path(chosen) != Path(built_with):
            text += " " + tr("The model chosen above ({chosen}) is another one: it is used "
                             "when you build an index with it.").format(chosen=Path(chosen).name)
        self.index_label.setText(text)

    def offer_index(self, model: str) -> None:
        """A model was just trained: the next step, building an index with it, offered here
        (not only in a message that other notices can hide)."""
        self.model_widget.setFilePath(model)
        self._offered_model = model
        self.index_offer_button.setText(tr("Index a folder with {model}…").format(
            model=Path(model).name))
        self.index_offer_button.setVisible(True)

    def _index_offer_clicked(self) -> None:
        self.index_offer_button.setVisible(False)
        self.indexRequested.emit(self._offered_model)

    def use_built(self, model: str, index: str) -> None:
        """A model and index just built (the guided start): chosen here, the query tool on,
        and the next step said."""
        self.model_widget.setFilePath(model)
        self.index_widget.setFilePath(index)
        self._show_state(self.client.state)
        self.status_label.setText(tr("Ready: click the map on your imagery to find similar "
                                     "places (the index's tiles are outlined in yellow)."))
        self.queryToolRequested.emit(True)

    # engine state
    def _setup_clicked(self) -> None:
        if self.setup.running:
            self.setup.cancel()
        else:
            self.setup.start(fresh=self.client.fix != FIX_REPAIR)

    def _show_setup_step(self, fraction: float, message: str) -> None:
        self.setup_progress.setValue(int(100 * fraction))
        self.engine_label.setText(tr("Setting up the engine… {message}").format(message=message))

    def _setup_finished(self, ok: bool, message: str) -> None:
        self.setup_progress.setVisible(False)
        if not ok:
            self.iface.messageBar().pushMessage(
                "MrHash", tr("Engine set-up failed: {message}").format(message=message),
                Qgis.MessageLevel.Critical, 0)
        self._show_state(self.client.state)

    def _show_state(self, state: str) -> None:
        info = self.client.info
        running = self.setup.running
        self.setup_progress.setVisible(running)
        self.setup_button.setVisible(running or (state == STATE_FAILED
                                                 and self.client.fix in (FIX_SETUP, FIX_REPAIR)))
        self.setup_button.setText(tr("Cancel set-up") if running else
                                  tr("Repair the engine") if self.client.fix == FIX_REPAIR
                                  else tr("Set up the engine"))
        self.restart_button.setVisible(not self.setup_button.isVisibleTo(self))
        self.start_button.setVisible(state == "ready" and not running)
        # the first thing to do while nothing is chosen: said on the button itself
        font = self.start_button.font()
        font.setBold(not self.index_widget.filePath())
        self.start_button.setFont(font)
        if running:
            self.engine_label.setText(tr("Setting up the engine… {message}").format(
                message=self.setup.last_message))
            return
        if state == "ready":
            text = tr("Engine ready · {device} · mrhash {version}").format(
                device=info.get("device", "?"), version=info.get("version", "?"))
        elif state == STATE_FAILED and self.client.fix == FIX_SETUP:
            text = tr("The engine is not set up yet: press Set up the engine (once, a few "
                      "minutes).")
        elif state == STATE_FAILED:
            text = tr("Engine failed: {error}").format(
                error=self.client.last_error.splitlines()[0])
            self.iface.messageBar().pushMessage(
                "MrHash", tr("{text} — details in the MrHash tab of the log panel and in "
                             "MrHash › Settings.").format(text=text),
                Qgis.MessageLevel.Critical, 15)
        else:
            text = tr("Engine {state}").format(state=state)
        self.engine_label.setText(text)
        self.engine_label.setToolTip(self.client.last_error if state == STATE_FAILED else "")

    # the search: the session asks the engine, the dock shows
    @property
    def search(self) -> Search | None:
        return self.session.search

    @property
    def hits_layer(self) -> QgsVectorLayer | None:
        return self.session.hits_layer

    @property
    def query_layer(self) -> QgsVectorLayer | None:
        return self.session.query_layer

    def _index(self) -> str | None:
        index = self.index_widget.filePath()
        if not index:
            self._fail(tr("Choose an index in the MrHash dock first (build one with "
                          "MrHash › Build index)."))
            return None
        return index

    def _options(self) -> SearchOptions:
        """The settings of a new search, as the widgets say now."""
        return SearchOptions(k=self.k_spin.value(), exclude_radius=float(self.exclude_spin.value()),
                             within=search_area(self.within_combo.currentData(),
                                                self.iface.mapCanvas(), self.iface.activeLayer()))

    def run_query(self, location: QueryLocation) -> EngineRequest | None:
        """A new search at a clicked point or a dragged rectangle (marks start afresh)."""
        index = self._index()
        if index is None:
            return None
        return self.session.query_at(index, location, self._options(),
                                     snap=self.snap_check.isChecked())

    def query_selected_features(self, layer=None) -> EngineRequest | None:
        """A new search for places like the selected polygons of `layer` (default: the active
        layer): one polygon is a footprint query, several a search by examples."""
        index = self._index()
        if index is None:
            return None
        footprints = selected_footprints(layer or self.iface.activeLayer())
        if not footprints:
            self._fail(tr("Select one or more polygons of a vector layer first (the active "
                          "layer's selection is the query)."))
            return None
        return self.session.query_places(index, footprints, self._options())

    def refine(self) -> EngineRequest | None:
        """Search the whole index again with the marks of the current search."""
        request = self.session.refine(self.k_spin.value())
        if request is None:
            self._fail(tr("Mark some hits relevant or not relevant first (select thumbnails, "
                          "then ✓ Relevant or ✗ Not relevant)."))
        return request

    def run_search(self, search: Search) -> EngineRequest:
        return self.session.run(search)

    def _show_hits(self, result: QueryResult, method: str) -> None:
        """The hits in the thumbnails and the query outlined on the map, before the session
        writes the layers."""
        query = result.query
        self.results.grid.set_hits(result.hits, query if query.footprint else None,
                                   by_score=method != QUERY)
        self.status_label.setText(result_summary(result, method))
        if query.footprint and self.map_tool is not None:
            self.map_tool.highlight(geometry_from_geojson(query.footprint),
                                    QgsCoordinateReferenceSystem(WGS84))

    def _ask_bands(self, layer: QgsRasterLayer, needs: list[str]) -> list[int | str] | None:
        """Which bands of `layer` to read as the model's `needs` (None: the analyst
        declined)."""
        dialog = BandChoiceDialog(layer, needs, self)
        return dialog.bands() if dialog.exec() else None

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        self.iface.messageBar().pushMessage("MrHash", message, Qgis.MessageLevel.Critical, 8)
        self.queryFailed.emit(message)

    def _said_done(self, words: str) -> None:
        self.status_label.setText(words)
        self.iface.messageBar().pushMessage("MrHash", words, Qgis.MessageLevel.Success, 8)

    # the map of every place like the examples
    def map_all(self) -> EngineRequest | None:
        """Score every tile of the index for the search's places and marks; the detections
        (areas over their tiles) arrive as layers, filtered by the confidence slider."""
        # an update keeps the confidence the analyst chose: its areas are merged at it
        threshold = self.map_panel.threshold if self.map_panel.detections else MAP_THRESHOLD
        request = self.session.map_all(threshold)
        if request is None:
            self._fail(tr("Query a place first, then Map all like these."))
        return request

    def _show_map(self, result: MapResult, detections: Detections) -> None:
        threshold = self.search.map_threshold if self.search else result.threshold
        self.map_panel.show_detections(detections, threshold)
        self._show_detections_in_view(detections)
        self.status_label.setText(tr("All {n:,} tiles of the index scored: {counts} are like "
                                     "your examples. Move Confidence to keep more or fewer."
                                     ).format(n=result.n_scored,
                                              counts=self.map_panel.count_label.text()))
        self.iface.mapCanvas().refresh()
        self.mapFinished.emit(result)

    def _show_detections_in_view(self, detections: Detections) -> None:
        """The canvas zoomed out to every detection when some lie outside the view (the map
        spans the archive; the analyst was looking at one place): never zoomed in."""
        canvas = self.iface.mapCanvas()
        extent = QgsCoordinateTransform(
            detections.areas.crs(), canvas.mapSettings().destinationCrs(),
            QgsProject.instance()).transformBoundingBox(detections.extent())
        if extent.isEmpty() or canvas.extent().contains(extent):
            return
        extent.combineExtentWith(canvas.extent())
        canvas.setExtent(extent)
        canvas.refresh()

    def check_detections(self, order: str) -> EngineRequest | None:
        """Detections of the map in the thumbnails, likeliest or most doubtful first (none
        the analyst marked already), to mark ✓ / ✗ before Update."""
        detections = self.map_panel.detections
        if detections is None or self.search is None:
            self._fail(tr("No map to check yet: press Map all like these first."))
            return None
        request = self.session.check_detections(detections, self.map_panel.threshold, order)
        if request is None:
            self._fail(tr("Every detection at this confidence is marked already: Update the "
                          "map, or lower Confidence to check more."))
        return request

    def _show_to_check(self, hits: list[ShownHit], order: str) -> None:
        self.results.grid.set_hits(hits, by_score=True)
        self.results.show_search(self.search)
        first = tr("most doubtful first") if order == DOUBTFUL else tr("likeliest first")
        self.status_label.setText(tr(
            "{n} detections, {first}: mark the wrong ones ✗ and the right ones ✓, then "
            "Update the map.").format(n=len(hits), first=first))

    def export_map(self, path: str | None = None) -> Path | EngineRequest | None:
        """The detected areas and tiles (as filtered now) and the marks that made them: to
        one GeoPackage (areas, tiles, marks), or to GeoParquet (X.parquet: X_areas.parquet
        and X_tiles.parquet, written by the engine)."""
        detections = self.map_panel.detections
        if detections is None:
            self._fail(tr("No map to export yet: press Map all like these first."))
            return None
        if path is None:
            path, _filter = QFileDialog.getSaveFileName(
                self, tr("Export map"), str(Path.home() / "mrhash_map.gpkg"),
                tr("GeoPackage (*.gpkg);;GeoParquet (*.parquet)"))
            if not path:
                return None
        if Path(path).suffix.lower() == ".parquet":
            return self.session.export_map_parquet(detections, path, self.map_panel.threshold)
        # the marks: every marked tile of the map, the detections' and those below the
        # confidence alike
        layers = [("areas", detections.areas), ("tiles", detections.tiles),
                  ("marks", detections.every_tile())]
        return self._export(path, tr("Export map"), "mrhash_map.gpkg", tr("GeoPackage (*.gpkg)"),
                            lambda target: export_layers(layers, target, marked_only=("marks",)),
                            tr("Map exported to {path}"))

    def _export(self, path: str | None, title: str, default_name: str, filters: str,
                write, done: str) -> Path | None:
        """Ask where (unless `path` is given), `write(path)`, say where it went or why not."""
        if path is None:
            path, _filter = QFileDialog.getSaveFileName(
                self, title, str(Path.home() / default_name), filters)
            if not path:
                return None
        try:
            written = write(path)
        except OSError as error:
            self._fail(str(error))
            return None
        self.iface.messageBar().pushMessage("MrHash", done.format(path=written),
                                            Qgis.MessageLevel.Success, 5)
        return written

    # marks, saved searches, export
    def mark_hits(self, hits: list[Hit], mark: str) -> None:
        """Mark hits relevant / not relevant ("" clears) for the next Refine."""
        if self.search is None or not hits:
            return
        detections = self.map_panel.detections
        self.session.mark(hits, mark, detections)
        for hit in hits:
            self.results.grid.set_mark(hit.id, mark)
        counts = {"relevant": self.search.n_relevant, "irrelevant": self.search.n_irrelevant}
        self.status_label.setText((tr(
            "You marked {relevant} relevant and {irrelevant} not relevant: press Update the "
            "map to map again with them.") if detections is not None else tr(
            "You marked {relevant} relevant and {irrelevant} not relevant: press Refine to "
            "search the whole index again.")).format(**counts))

    def save_search(self, name: str | None = None) -> None:
        if self.search is None:
            return
        if name is None:
            default = tr("Search {n}").format(n=len(saved_searches()) + 1)
            name, ok = QInputDialog.getText(self, tr("Save search"), tr("Name:"), text=default)
            if not ok or not name.strip():
                return
        self.session.save(name.strip())
        self.results.set_saved(saved_searches())
        self.iface.messageBar().pushMessage(
            "MrHash", tr("Search “{name}” saved in the project (save the project to keep "
                         "it).").format(name=name.strip()), Qgis.MessageLevel.Info, 5)

    def run_saved(self, search: Search) -> EngineRequest:
        self.index_widget.setFilePath(search.index)
        self.k_spin.setValue(search.k)
        return self.session.run(Search.from_dict(search.to_dict()))

    def export_hits(self, path: str | None = None) -> Path | None:
        layer = self.hits_layer
        if not usable(layer):
            self._fail(tr("No hits to export yet: run a query first."))
            return None
        return self._export(path, tr("Export hits"), "mrhash_hits.gpkg",
                            tr("GeoPackage (*.gpkg);;CSV (*.csv)"),
                            lambda target: export_layer(layer, target),
                            tr("Hits exported to {path}"))

    def restore_from_project(self) -> None:
        """After a project is read: its saved searches, its current search and marks, its
        latest hits in the grid and its last map."""
        hits, detections, threshold = self.session.restore_from_project()
        self.results.grid.set_hits(hits)
        self.results.set_saved(saved_searches())
        self.results.show_search(self.search)
        self.map_panel.show_detections(detections, threshold)

    # results
    def _on_canvas(self, hit: Hit) -> QgsGeometry:
        """A hit's footprint in the canvas CRS."""
        geometry = geometry_from_geojson(hit.footprint)
        geometry.transform(QgsCoordinateTransform(
            QgsCoordinateReferenceSystem(WGS84),
            self.iface.mapCanvas().mapSettings().destinationCrs(), QgsProject.instance()))
        return geometry

    def highlight_hit(self, hit: Hit) -> None:
        """A selected thumbnail's footprint flashes on the map; the map does not move."""
        canvas = self.iface.mapCanvas()
        canvas.flashGeometries([self._on_canvas(hit)], canvas.mapSettings().destinationCrs())

    def open_hit(self, hit: ShownHit) -> None:
        """Double-click: the map zooms to the hit and shows its raster (a hit's)."""
        self.zoom_to_hit(hit)
        if not hit.is_query:
            self.add_hit_raster(hit)

    def zoom_to_hit(self, hit: Hit) -> None:
        canvas = self.iface.mapCanvas()
        extent = self._on_canvas(hit).boundingBox()
        extent.scale(3.0)  # some context around the hit
        canvas.setExtent(extent)
        canvas.refresh()

    def add_hit_raster(self, hit: Hit) -> QgsRasterLayer | None:
        """The hit's raster in the project, below the results layers so it never hides them;
        a raster already in the project is reused (made visible), not added twice."""
        path = hit.path
        project = QgsProject.instance()
        for layer in project.mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer_path(layer) == path:
                node = project.layerTreeRoot().findLayer(layer.id())
                if node is not None:
                    node.setItemVisibilityChecked(True)
                return layer
        layer = QgsRasterLayer(path, Path(path).stem)
        if not layer.isValid():
            self._fail(tr("{path}: QGIS cannot open this raster").format(path=path))
            return None
        show_like_thumbnail(layer, *self.session.display)
        project.addMapLayer(layer, False)
        root = project.layerTreeRoot()
        positions = [root.children().index(node) for node in
                     (root.findLayer(r.id()) for r in (self.hits_layer, self.query_layer)
                      if usable(r)) if node is not None and node.parent() is root]
        root.insertLayer(max(positions) + 1 if positions else len(root.children()), layer)
        return layer


def result_summary(result: QueryResult, method: str) -> str:
    """The status line: how many hits, and how many places tie when the query is ambiguous."""
    if not result.hits:
        return tr("No hits.")
    text = (tr("{n} similar places") if method == QUERY
            else tr("{n} places like your examples")).format(n=len(result.hits))
    ties = result.ties
    if method == QUERY and ties is not None and ties.count > 1:
        text += " · " + tr("{count}{more} places tie at distance {distance}: ordered by the "
                           "finer score").format(count=f"{ties.count:,}",
                                                 more="+" if ties.capped else "",
                                                 distance=ties.distance)
    return text
