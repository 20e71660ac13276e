"""The dock's search, without its widgets: the engine requests of a search (a click, the
selected polygons, Refine, Map all like these, the detections to check), what comes back made
into the search's layers, the analyst's marks, and the search kept in the project so a
reopened project goes on where it stopped. The dock (ui/dock.py) reads its widgets into the
calls and shows what the signals say."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask, QgsVectorLayer
from qgis.PyQt.QtCore import QObject, pyqtSignal

from mrhash_qgis.contract.band_profiles import role_words
from mrhash_qgis.contract.protocol import (
    CANCELLED,
    IRRELEVANT,
    MAP_THRESHOLD,
    OUTSIDE_INDEX,
    QUERY,
    RELEVANT,
    ExportMapRequest,
    ExportMapResult,
    Hit,
    MapResult,
    Place,
    QueryResult,
    TilesRequest,
)
from mrhash_qgis.core.band_layout import remember_bands
from mrhash_qgis.core.detections import AREAS_LAYER_NAME, TILES_LAYER_NAME, Detections
from mrhash_qgis.core.engine_client import FIX_BANDS, EngineClient, EngineRequest
from mrhash_qgis.core.hits_layer import (
    HITS_LAYER_NAME,
    QUERY_LAYER_NAME,
    ShownHit,
    hits_from_layer,
    hits_layer,
    query_layer,
    replace_in_project,
    set_hit_mark,
    usable,
)
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path
from mrhash_qgis.core.quick_start import duration_words
from mrhash_qgis.core.raster_style import restyle_hit_rasters
from mrhash_qgis.core.results import ResultsStore
from mrhash_qgis.core.search_places import place_of_click
from mrhash_qgis.core.searches import PROJECT_SCOPE, Search, save_search
from mrhash_qgis.map_tool import QueryLocation

CURRENT_KEY = "current_search"
# asks which bands of a raster layer to read as the model's `needs` (None: declined)
BandQuestion = Callable[[QgsRasterLayer, list[str]], "list[int | str] | None"]


@dataclass
class SearchOptions:
    """The dock's settings of a new search, read when it starts."""

    k: int = 12
    within: str | None = None    # WKT, EPSG:4326
    exclude_radius: float = 0.0  # metres from the query


class SearchSession(QObject):
    """One search at a time: `said(text)` what is going on, `failed(message)` why not,
    `hitsArrived(result, method)` the hits to look at (a QueryResult of ShownHits, before
    the layers are written), `resultShown(result)` once they are on the map too,
    `mapArrived(result, detections)` a map's layers, `detectionsToCheck(hits, order)` the
    detections to mark, `searchChanged(search)` the search or its marks, `exported(text)`."""

    said = pyqtSignal(str)
    failed = pyqtSignal(str)
    hitsArrived = pyqtSignal(object, str)    # noqa: N815 (Qt signal naming)
    resultShown = pyqtSignal(object)         # noqa: N815
    mapArrived = pyqtSignal(object, object)  # noqa: N815
    detectionsToCheck = pyqtSignal(list, str)  # noqa: N815
    searchChanged = pyqtSignal(object)       # noqa: N815
    exported = pyqtSignal(str)

    def __init__(self, client: EngineClient, parent: QObject | None = None):
        super().__init__(parent)
        self.client = client
        self.search: Search | None = None
        self.request: EngineRequest | None = None
        self.hits_layer: QgsVectorLayer | None = None
        self.query_layer: QgsVectorLayer | None = None
        self.queries_made = 0
        self.keep_earlier = False  # add each query's hits to the layer, not replace them
        # the bands of the hits' rasters their thumbnails show, and the values stretched
        self.display: tuple[list[int], list[list[float]]] = ([], [])
        self.ask_bands: BandQuestion = lambda _layer, _needs: None
        self._read_layer_id: str | None = None  # the raster layer the last click read

    # new searches
    def query_at(self, index: str, location: QueryLocation, options: SearchOptions,
                 snap: bool) -> EngineRequest:
        """A new search at a clicked point or a dragged rectangle (marks start afresh)."""
        place, indexed_tile, layer = place_of_click(index, location, snap)
        if layer is not None:
            self._read_layer_id = layer.id()
        search = self._new_search(index, [place], options)
        if indexed_tile is not None:
            search.indexed_tiles.append(indexed_tile)
        return self.run(search)

    def query_places(self, index: str, places: list[Place],
                     options: SearchOptions) -> EngineRequest:
        """A new search for places like `places` (one: a query, several: by examples)."""
        return self.run(self._new_search(index, places, options))

    @staticmethod
    def _new_search(index: str, places: list[Place], options: SearchOptions) -> Search:
        return Search(index=index, k=options.k, queries=places, within=options.within,
                      exclude_radius=options.exclude_radius)

    def refine(self, k: int) -> EngineRequest | None:
        """The whole index searched again with the marks (None: nothing marked yet)."""
        if self.search is None or not self.search.marks:
            return None
        self.search.k = k
        return self.run(self.search)

    def run(self, search: Search) -> EngineRequest:
        """Ask the engine for `search` (an earlier request still running is cancelled)."""
        self._cancel_running()
        request = search.request()
        method = request.METHOD
        self.search = search
        self.said.emit(tr("Searching…") if method == QUERY else tr("Refining…"))
        self.request = self.client.submit(
            request, finished=lambda answer: self._show_result(answer, method),
            failed=self._engine_failed)
        return self.request

    def _cancel_running(self) -> None:
        if self.request is not None and not self.request.done:
            self.request.cancel()

    def _store(self) -> ResultsStore:
        return ResultsStore.for_project(self.search.index if self.search else "",
                                        (HITS_LAYER_NAME, QUERY_LAYER_NAME))

    def _show_result(self, answer: dict, method: str) -> None:
        result = QueryResult.from_result(answer)
        queried = self.search.queried_tiles() if self.search else set()
        kept = [hit for hit in result.hits if hit.id not in queried]
        kept = kept[:self.search.k] if self.search else kept
        # ranked as shown, with the analyst's marks
        result.hits = [ShownHit.of(hit, rank=rank, mark=self.mark_of(hit))
                       for rank, hit in enumerate(kept, start=1)]
        self.display = (result.display_bands or [], result.display_limits or [])
        restyle_hit_rasters(*self.display)
        # the thumbnails first: what the analyst looks at shows before the layers are written
        self.hitsArrived.emit(result, method)
        self.adopt_project_layers()
        self.queries_made += 1
        footprints = [result.query.footprint] if result.query.footprint else []
        try:  # the search's two layers updated in place: none recreated, none swapped
            store = self._store()
            self.hits_layer = hits_layer(
                result.hits, self.hits_layer if usable(self.hits_layer) else None,
                replace=not self.keep_earlier, query=self.queries_made, store=store)
            self.query_layer = query_layer(
                footprints, store, replace=not self.keep_earlier, query=self.queries_made,
                kind=method, params=self.search.to_dict() if self.search else {},
                layer=self.query_layer)
        except OSError as error:
            self.failed.emit(tr("Cannot keep the results: {error}").format(error=error))
            return
        project = QgsProject.instance()
        replace_in_project(self.hits_layer, project)
        replace_in_project(self.query_layer, project)
        self.remember()
        self.resultShown.emit(result)

    def mark_of(self, hit: Hit) -> str:
        return self.search.mark_of(Place(tile=hit.id)) if self.search else ""

    def _engine_failed(self, code: str, message: str) -> None:
        error = self.request.error if self.request is not None else None
        if error is not None and error.fix == FIX_BANDS and self._ask_bands_again(error.needs):
            return
        building = index_being_built()
        if code != CANCELLED and building is not None:
            eta = getattr(building, "last_event", {}).get("eta_s")
            self.failed.emit(tr("The index is being built: query again when it is done{when} "
                                "(its progress is in the task manager).").format(
                when=tr(", in about {time}").format(time=duration_words(float(eta)))
                if eta is not None else ""))
        elif code == OUTSIDE_INDEX:
            self.failed.emit(tr("The place you clicked is outside the indexed imagery: click "
                                "on your imagery where the index's tiles are, or put a raster "
                                "layer under the click (its patch is then the query)."))
        elif code != CANCELLED:
            self.failed.emit(tr("Query failed: {message}").format(message=message))

    def _ask_bands_again(self, needs: list[str]) -> bool:
        """The clicked layer's bands could not be matched to the model's: ask once which
        bands to read (remembered on the layer), and query again. False when there is no
        layer to ask about."""
        layer = QgsProject.instance().mapLayer(self._read_layer_id or "")
        if not isinstance(layer, QgsRasterLayer) or self.search is None or not needs:
            return False
        bands = self.ask_bands(layer, needs)
        if bands is None:
            self.failed.emit(tr("Not queried: {layer} has no bands chosen for the model's "
                                "{roles}.").format(layer=layer.name(), roles=role_words(needs)))
            return True
        remember_bands(layer, bands)
        for place in self.search.queries:
            if place.raster == layer_path(layer):
                place.bands = bands
        self.run(self.search)
        return True

    # the map of every place like the examples
    def map_all(self, threshold: float = MAP_THRESHOLD) -> EngineRequest | None:
        """Score every tile of the index for the search's places and marks, areas merged at
        `threshold`; each round writes a GeoPackage of its own beside the project's results
        (None: no search yet)."""
        if self.search is None:
            return None
        self._cancel_running()
        store = self._store()
        output = store.path.with_name(f"{store.path.stem}_map_{len(self.search.maps) + 1}.gpkg")
        self.said.emit(tr("Mapping every tile of the index…"))
        self.request = self.client.submit(self.search.map_request(str(output), threshold),
                                          finished=self._show_map, failed=self._engine_failed)
        return self.request

    def _show_map(self, answer: dict) -> None:
        result = MapResult.from_result(answer)
        try:
            detections = Detections.open(result.output)
        except OSError as error:
            self.failed.emit(str(error))
            return
        detections.add_to(QgsProject.instance())
        if self.search is not None:
            self.search.maps.append(result.output)
            self.search.map_threshold = result.threshold
        self.remember()
        self.mapArrived.emit(result, detections)

    def check_detections(self, detections: Detections, threshold: float,
                         order: str) -> EngineRequest | None:
        """The detections at `threshold` to check, likeliest or most doubtful first (none
        marked already), as hits with their map score; None when every one is marked."""
        if self.search is None:
            return None
        chosen = detections.to_check(threshold, order, self.search.k,
                                     self.search.marked_tiles() | self.search.queried_tiles())
        if not chosen:
            return None
        scores = dict(chosen)

        def arrived(answer: dict) -> None:
            # each shown with its map score, the confidence the analyst checks
            hits = [ShownHit.of(hit, rank=rank, score=scores[hit.id], mark=self.mark_of(hit))
                    for rank, hit in enumerate(QueryResult.from_result(answer).hits, start=1)]
            self.detectionsToCheck.emit(hits, order)

        self.request = self.client.submit(
            TilesRequest([tile for tile, _ in chosen], index=self.search.index),
            finished=arrived, failed=self._engine_failed)
        return self.request

    def export_map_parquet(self, detections: Detections, path: str,
                           threshold: float) -> EngineRequest:
        """The map's areas and tiles at `threshold` as GeoParquet, written by the engine."""
        def done(answer: dict) -> None:
            outputs = ExportMapResult.from_result(answer).outputs
            self.exported.emit(tr("Map exported as GeoParquet: {areas} and {tiles}").format(
                areas=outputs.areas, tiles=outputs.tiles))

        def not_done(_code: str, message: str) -> None:
            self.failed.emit(tr("Map not exported: {message}").format(message=message))

        self.said.emit(tr("Exporting the map as GeoParquet…"))
        return self.client.submit(ExportMapRequest(layer_path(detections.tiles), path,
                                                   threshold), finished=done, failed=not_done)

    # marks and the project
    def mark(self, hits: list[Hit], mark: str, detections: Detections | None) -> None:
        """Mark hits relevant / not relevant ("" clears) for the next Refine or Update: in
        the search, the hits layer and the map's tiles."""
        if self.search is None:
            return
        relevant = {RELEVANT: True, IRRELEVANT: False}.get(mark)
        for hit in hits:
            self.search.mark(Place(tile=hit.id), relevant)
            if usable(self.hits_layer):
                set_hit_mark(self.hits_layer, hit.id, mark)
            if detections is not None:
                detections.set_mark(hit.id, mark)
        self.remember()

    def remember(self) -> None:
        """The current search (with its marks) lives in the project: reopened, Refine goes on
        where it stopped."""
        if self.search is not None:
            QgsProject.instance().writeEntry(PROJECT_SCOPE, CURRENT_KEY,
                                             json.dumps(self.search.to_dict()))
        self.searchChanged.emit(self.search)

    def save(self, name: str) -> None:
        if self.search is not None:
            save_search(self.search, name)

    def adopt_project_layers(self) -> None:
        """Take over the results layers of a reopened project (their GeoPackage goes on)."""
        project = QgsProject.instance()
        for attribute, name in (("hits_layer", HITS_LAYER_NAME), ("query_layer", QUERY_LAYER_NAME)):
            if not usable(getattr(self, attribute)):
                found = [layer for layer in project.mapLayersByName(name) if usable(layer)]
                setattr(self, attribute, found[0] if found else None)
        if usable(self.hits_layer) and self.queries_made == 0:
            numbers = [int(f["query"] or 0) for f in self.hits_layer.getFeatures()]
            self.queries_made = max(numbers, default=0)

    def restore_from_project(self) -> tuple[list[ShownHit], Detections | None, float]:
        """After a project is read: its current search and marks, its results layers; its
        latest hits, and its last map with the confidence it was shown at."""
        self.hits_layer = self.query_layer = None
        self.queries_made = 0
        text, _ok = QgsProject.instance().readEntry(PROJECT_SCOPE, CURRENT_KEY, "")
        try:
            self.search = Search.from_dict(json.loads(text)) if text else None
        except (KeyError, TypeError, ValueError):
            self.search = None
        self.adopt_project_layers()
        hits = hits_from_layer(self.hits_layer) if usable(self.hits_layer) else []
        detections, threshold = self._project_map()
        return hits, detections, threshold

    def _project_map(self) -> tuple[Detections | None, float]:
        project = QgsProject.instance()
        found = [next((layer for layer in project.mapLayersByName(name) if usable(layer)), None)
                 for name in (AREAS_LAYER_NAME, TILES_LAYER_NAME)]
        if None in found:
            return None, 0.5
        return Detections(*found), self.search.map_threshold if self.search else 0.5


def index_being_built() -> QgsTask | None:
    """The index build of this plugin that is running, if any (its queries wait for it)."""
    prefix = tr("MrHash: index {folder}").split("{")[0]
    return next((task for task in QgsApplication.taskManager().activeTasks()
                 if task.description().startswith(prefix)), None)
