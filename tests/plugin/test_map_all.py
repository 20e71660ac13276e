"""Map all like these, in real QGIS with the real engine: the detections of the whole index
arrive as layers (areas over their tiles), the confidence slider re-filters them on the map
without the engine and says what it keeps, Update uses the marks made since, the map is
exported with its marks, and a reopened project shows the last map."""

from __future__ import annotations

import sqlite3

from conftest import screenshot, wait_for
from qgis.core import QgsProject
from test_results import _finish, _query

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT
from mrhash_qgis.core.detections import AREAS_LAYER_NAME, TILES_LAYER_NAME, kept


def _map(dock, errors: list[str]) -> dict:
    maps: list[dict] = []
    dock.mapFinished.connect(maps.append)
    dock.queryFailed.connect(lambda message: maps.append({"error": message}))
    dock.map_panel.map_button.click()
    wait_for(lambda: maps or errors, 120, "the map")
    assert not errors, errors[0]
    assert "error" not in maps[0], maps[0]
    return maps[0]


def test_map_slider_update_export_and_reopen(qgis_iface, built_index, rgb_layer, tmp_path,
                                             monkeypatch):
    import sys
    import traceback

    errors: list[str] = []  # an exception in a slot aborts PyQt without a hook
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: errors.append(
        "".join(traceback.format_exception(kind, value, tb))))
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    hits = results[0]["hits"]
    dock.mark_hits([hits[0], hits[1]], RELEVANT)
    dock.mark_hits([hits[-1]], IRRELEVANT)
    first = _map(dock, errors)
    assert first["n_scored"] == 50 and first["threshold"] == 0.5
    project = QgsProject.instance()
    [areas] = project.mapLayersByName(AREAS_LAYER_NAME)
    [tiles] = project.mapLayersByName(TILES_LAYER_NAME)
    panel = dock.map_panel
    assert panel.map_button.text() == "Update the map" and panel.slider.value() == 50
    at_half = kept(tiles)
    assert at_half == first["n_detected"] and kept(areas) == first["n_areas"]
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

    # a wrong detection marked, Update: a new round with the marks made since
    dock.mark_hits([hits[2]], IRRELEVANT)
    second = _map(dock, errors)
    assert second["output"] != first["output"] and len(dock.search.maps) == 2
    assert len(project.mapLayersByName(AREAS_LAYER_NAME)) == 1  # the new map replaces it

    out = dock.export_map(str(tmp_path / "map.gpkg"))
    with sqlite3.connect(out) as db:
        tables = {name for (name,) in db.execute("SELECT table_name FROM gpkg_contents")}
        marked = db.execute("SELECT count(*) FROM marks").fetchone()[0]
    assert {"areas", "tiles", "marks"} <= tables and marked == 4

    project_file = tmp_path / "mapped.qgz"
    project.write(str(project_file))
    project.clear()
    project.read(str(project_file))
    assert dock.map_panel.detections is not None  # the last map and its marks come back
    assert dock.search is not None and len(dock.search.maps) == 2
    assert not errors, errors[0]
    _finish(tool)
