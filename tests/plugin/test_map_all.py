"""Map all like these, in real QGIS with the real engine: the detections of the whole index
arrive as layers (areas over their tiles), the confidence slider re-filters them on the map
without the engine and says what it keeps, detections are checked in the thumbnails (most
doubtful first) and marked, Update uses the marks made since, the map is exported with its
marks (GeoPackage and GeoParquet), and a reopened project shows the last map."""

from __future__ import annotations

import sqlite3

from conftest import screenshot, wait_for
from qgis.core import QgsProject, QgsVectorLayer
from test_results import _finish, _query

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT, MapResult
from mrhash_qgis.core.detections import AREAS_LAYER_NAME, DOUBTFUL, TILES_LAYER_NAME, kept
from mrhash_qgis.ui.thumbnails import HIT_ROLE


def _map(dock, errors: list[str]) -> MapResult:
    maps: list = []
    dock.mapFinished.connect(maps.append)
    dock.queryFailed.connect(lambda message: maps.append({"error": message}))
    dock.map_panel.map_button.click()
    wait_for(lambda: maps or errors, 120, "the map")
    assert not errors, errors[0]
    assert isinstance(maps[0], MapResult), maps[0]
    return maps[0]


def _done(request, errors: list[str], what: str) -> None:
    wait_for(lambda: request.done or errors, 120, what)
    assert not errors, errors[0]
    assert request.error is None, request.error


def marks_in(layer) -> dict[int, str]:
    """The marks of every tile of a map's tiles layer (its confidence filter aside)."""
    every = QgsVectorLayer(layer.source(), "every tile", layer.providerType())
    every.setSubsetString("")
    return {int(f["id"]): f["mark"] for f in every.getFeatures() if f["mark"]}


def test_map_slider_update_export_and_reopen(qgis_iface, built_index, rgb_layer, tmp_path,
                                             monkeypatch):
    import sys
    import traceback

    errors: list[str] = []  # an exception in a slot aborts PyQt without a hook
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: errors.append(
        "".join(traceback.format_exception(kind, value, tb))))
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    hits = results[0].hits
    dock.mark_hits([hits[0], hits[1]], RELEVANT)
    dock.mark_hits([hits[-1]], IRRELEVANT)
    first = _map(dock, errors)
    assert first.n_scored == 50 and first.threshold == 0.5
    project = QgsProject.instance()
    [areas] = project.mapLayersByName(AREAS_LAYER_NAME)
    [tiles] = project.mapLayersByName(TILES_LAYER_NAME)
    panel = dock.map_panel
    assert panel.map_button.text() == "Update the map" and panel.slider.value() == 50
    at_half = kept(tiles)
    assert at_half == first.n_detected and kept(areas) == first.n_areas
    assert panel.count_label.text().startswith(f"{at_half:,} tile")
    assert panel.count_label.text().endswith("at 0.50")
    # the slider keeps fewer or more tiles at once, without the engine
    panel.slider.setValue(95)
    assert kept(tiles) <= at_half and panel.count_label.text().endswith("at 0.95")
    panel.slider.setValue(10)
    assert kept(tiles) >= at_half
    panel.slider.setValue(70)
    dock.resize(380, 760)
    screenshot(dock, "dock_map")
    scores = [f["score"] for f in tiles.getFeatures()]
    assert scores and min(scores) >= 0.10

    # the map holds the marks that made it, shown on the canvas
    assert set(marks_in(tiles).values()) == {RELEVANT, IRRELEVANT}

    # the detections checked in the thumbnails, most doubtful first (nearest 0.70)
    _done(dock.check_detections(DOUBTFUL), errors, "the detections to check")
    wait_for(lambda: "most doubtful first" in dock.status_label.text(), 30, "the thumbnails")
    shown = [item.data(HIT_ROLE) for item in dock.results.grid.hit_items()]
    assert 0 < len(shown) <= dock.search.k
    assert all(h.thumbnail and h.score is not None for h in shown)
    doubt = [abs(h.score - 0.70) for h in shown]
    assert doubt == sorted(doubt)
    assert not {h.id for h in shown} & dock.search.marked_tiles()
    every = {int(f["id"]): f["score"] for f in dock.map_panel.detections.every_tile()
             .getFeatures()}
    assert doubt[-1] <= min(abs(score - 0.70) for tile, score in every.items()
                            if tile not in {h.id for h in shown}
                            and tile not in dock.search.marked_tiles()
                            and tile not in dock.search.queried_tiles()) + 1e-6
    wrong = shown[0]
    dock.mark_hits([wrong], IRRELEVANT)  # as the ✗ button does
    assert marks_in(tiles)[int(wrong.id)] == IRRELEVANT  # on the canvas at once
    assert "Update the map" in dock.status_label.text()
    screenshot(dock, "dock_map_check")

    # a wrong hit marked too, Update: a new round with the marks made since
    dock.mark_hits([hits[2]], IRRELEVANT)
    second = _map(dock, errors)
    assert second.output != first.output and len(dock.search.maps) == 2
    assert len(project.mapLayersByName(AREAS_LAYER_NAME)) == 1  # the new map replaces it
    [tiles] = project.mapLayersByName(TILES_LAYER_NAME)
    assert marks_in(tiles)[int(wrong.id)] == IRRELEVANT

    # GeoParquet, written by the engine: both layers, at the confidence shown, with marks
    _done(dock.export_map(str(tmp_path / "map.parquet")), errors, "the GeoParquet export")
    wait_for(lambda: (tmp_path / "map_areas.parquet").exists(), 30, "the GeoParquet files")
    import pyarrow.parquet as pq  # the tests' Python has it (the engine's); QGIS need not

    exported = pq.read_table(tmp_path / "map_tiles.parquet").to_pylist()
    assert dock.map_panel.threshold == 0.70  # Update kept the confidence chosen
    assert {t["id"] for t in exported if t["detected"]} == {int(f["id"]) for f in
                                                            tiles.getFeatures()}
    assert {t["id"]: t["mark"] for t in exported if t["mark"]} == marks_in(tiles)
    assert pq.read_table(tmp_path / "map_areas.parquet").num_rows == kept(
        project.mapLayersByName(AREAS_LAYER_NAME)[0])

    out = dock.export_map(str(tmp_path / "map.gpkg"))
    with sqlite3.connect(out) as db:
        tables = {name for (name,) in db.execute("SELECT table_name FROM gpkg_contents")}
        marked = dict(db.execute("SELECT id, mark FROM marks"))
    assert {"areas", "tiles", "marks"} <= tables and marked == marks_in(tiles)
    assert len(marked) >= 5  # the query's tile, 4 hits, the checked detection

    project_file = tmp_path / "mapped.qgz"
    project.write(str(project_file))
    project.clear()
    project.read(str(project_file))
    assert dock.map_panel.detections is not None  # the last map and its marks come back
    assert dock.search is not None and len(dock.search.maps) == 2
    assert marks_in(dock.map_panel.detections.tiles) == marked
    assert not errors, errors[0]
    _finish(tool)
