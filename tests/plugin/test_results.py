"""Results an analyst keeps, refines and shares, through the real dock, worker and index:
marks and Refine, results that reload with the project, export, saved searches, selected
polygons as the query, the search area, and hit rasters that never hide the hits."""

from __future__ import annotations

import csv
import json
import re

from conftest import wait_for
from dock_support import click, dock_on_canvas
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT, Place, QueryResult
from mrhash_qgis.core.hits_layer import HITS_LAYER_NAME, QUERY_LAYER_NAME
from mrhash_qgis.core.results import gpkg_of
from mrhash_qgis.core.searches import Search, saved_searches
from mrhash_qgis.ui.dock import result_summary


def _query(qgis_iface, built_index, rgb_layer, col=96, row=160, k=6):
    """A snapped click on the tile at (col, row) px of the primary crop -> (dock, result)."""
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    dock.snap_check.setChecked(True)
    dock.k_spin.setValue(k)
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    extent = rgb_layer.extent()
    click(canvas, tool, QgsPointXY(extent.xMinimum() + col * 10, extent.yMaximum() - row * 10))
    wait_for(lambda: results, 60, "the query")
    return dock, tool, results


def _finish(tool):
    QgsProject.instance().clear()
    tool.release()


def test_marks_and_refine_search_the_whole_index_again(qgis_iface, built_index, rgb_layer):
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    hits = results[0].hits
    query_tile = dock.search.queries[0].tile
    dock.mark_hits([hits[1]], RELEVANT)
    dock.mark_hits([hits[4], hits[5]], IRRELEVANT)
    # counts say what the analyst marked (the place queried is not counted)
    assert (dock.search.n_relevant, dock.search.n_irrelevant) == (1, 2)
    assert "Refine (1 ✓, 2 ✗)" in dock.results.refine_button.text()
    assert "You marked 1 relevant and 2 not relevant" in dock.status_label.text()
    layer = dock.hits_layer
    marks = {f["hit_id"]: f["mark"] for f in layer.getFeatures()}
    assert marks[str(hits[1].id)] == RELEVANT and marks[str(hits[4].id)] == IRRELEVANT
    added: list[str] = []
    QgsProject.instance().layerWasAdded.connect(lambda new: added.append(new.name()))
    layer_ids = (dock.hits_layer.id(), dock.query_layer.id())
    dock.refine()
    wait_for(lambda: len(results) == 2, 60, "the refined search")
    refined = results[1]
    # the next query of a search updates its two layers in place: none recreated or swapped
    assert (dock.hits_layer.id(), dock.query_layer.id()) == layer_ids and not added
    assert dock.query_layer.featureCount() == 1
    marked = {hits[1].id, hits[4].id, hits[5].id, query_tile}
    assert refined.hits and not marked & {h.id for h in refined.hits}
    scores = [h.score for h in refined.hits]
    assert scores == sorted(scores, reverse=True)  # ranked by the refine score
    assert "places like your examples" in dock.status_label.text()
    # a second round adds its marks to the first round's
    dock.mark_hits([refined.hits[0]], RELEVANT)
    assert (dock.search.n_relevant, dock.search.n_irrelevant) == (2, 2)
    # the refined list's captions show the score it is ranked by
    assert re.match(r"#1  \d+\.\d{3}", dock.grid.hit_items()[0].text())
    _finish(tool)


def test_results_and_marks_reload_with_the_project(qgis_iface, built_index, rgb_layer, tmp_path):
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    hits = results[0].hits
    dock.mark_hits([hits[2]], IRRELEVANT)
    layer = QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)[0]
    store = gpkg_of(layer)
    assert store is not None and store.is_file()  # a GeoPackage, not a memory layer
    project_file = tmp_path / "analysis.qgz"
    assert QgsProject.instance().write(str(project_file))
    QgsProject.instance().clear()
    assert not QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)

    assert QgsProject.instance().read(str(project_file))  # the dock restores itself
    [hits_again] = QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)
    [query_again] = QgsProject.instance().mapLayersByName(QUERY_LAYER_NAME)
    assert hits_again.featureCount() == len(hits) and query_again.featureCount() == 1
    marks = {f["hit_id"]: f["mark"] for f in hits_again.getFeatures()}
    assert marks[str(hits[2].id)] == IRRELEVANT
    assert [i.text() for i in dock.grid.hit_items()][2].endswith("✗")
    assert dock.search is not None and dock.search.n_irrelevant == 1
    # the next query of the reopened project goes on in the same GeoPackage
    dock.refine()
    wait_for(lambda: len(results) == 2, 60, "refine after reopening")
    assert gpkg_of(dock.hits_layer) == store
    _finish(tool)


def test_export_hits_to_geopackage_and_csv(qgis_iface, built_index, rgb_layer, tmp_path):
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    n = len(results[0].hits)
    gpkg = dock.export_hits(str(tmp_path / "hits.gpkg"))
    exported = QgsVectorLayer(f"{gpkg}|layername=hits", "exported", "ogr")
    assert exported.isValid() and exported.featureCount() == n
    assert {"rank", "distance", "source", "hit_id", "mark"} <= set(exported.fields().names())
    table = dock.export_hits(str(tmp_path / "hits.csv"))
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == n and rows[0]["WKT"].startswith("POLYGON")
    assert dock.export_hits(str(tmp_path / "hits.txt")) is None  # named as a wrong format
    assert "gpkg or .csv" in dock.status_label.text()
    _finish(tool)


def test_saved_search_is_kept_in_the_project_and_runs_again(qgis_iface, built_index, rgb_layer,
                                                            tmp_path):
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    dock.mark_hits([results[0].hits[1]], RELEVANT)
    dock.save_search("fields")
    project_file = tmp_path / "saved.qgz"
    QgsProject.instance().write(str(project_file))
    QgsProject.instance().clear()
    QgsProject.instance().read(str(project_file))
    [search] = saved_searches()
    assert search.name == "fields" and search.n_relevant == 1
    assert dock.results.saved_combo.currentText() == "fields"
    dock.results.run_button.click()
    wait_for(lambda: len(results) == 2, 60, "the saved search")
    assert results[1].hits and len(results[1].hits) == search.k
    _finish(tool)


def _polygons(crs: str, boxes: list[tuple[float, float, float, float]]) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "fields I mapped", "memory")
    features = []
    for box in boxes:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*box)))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    return layer


def test_selected_polygons_are_the_query(qgis_iface, built_index, rgb_layer, s2):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    x0, y1 = rgb_layer.extent().xMinimum(), rgb_layer.extent().yMaximum()
    one = _polygons("EPSG:32618", [(x0 + 640, y1 - 1280, x0 + 1280, y1 - 640)])
    dock.query_selected_features(one)
    wait_for(lambda: results or dock.status_label.text().startswith("Query failed"), 60,
             "the polygon query")
    assert results, dock.status_label.text()
    assert results[0].hits[0].distance == 0  # the archive holds that very tile
    two = _polygons("EPSG:32618", [(x0 + 640, y1 - 1280, x0 + 1280, y1 - 640),
                                   (x0 + 1920, y1 - 640, x0 + 2560, y1 - 0)])
    dock.query_selected_features(two)
    wait_for(lambda: len(results) == 2, 60, "the two-polygon search")
    assert len(dock.search.queries) == 2 and results[1].hits
    one.removeSelection()
    assert dock.query_selected_features(one) is None
    assert "Select one or more polygons" in dock.status_label.text()
    _finish(tool)


def test_search_within_the_map_extent(qgis_iface, built_index, rgb_layer):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    extent = rgb_layer.extent()  # the top-left quarter of the primary crop's place
    left = QgsRectangle(extent.xMinimum(), extent.yMaximum() - extent.height() / 2,
                        extent.xMinimum() + extent.width() / 2, extent.yMaximum())
    to_canvas = QgsCoordinateTransform(rgb_layer.crs(), canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(left))
    dock.within_combo.setCurrentIndex(dock.within_combo.findData("extent"))
    dock.k_spin.setValue(50)
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    click(canvas, tool, QgsPointXY(extent.xMinimum() + 96 * 10, extent.yMaximum() - 96 * 10))
    wait_for(lambda: results, 60, "the query within the extent")
    area = QgsGeometry.fromWkt(dock.search.within)
    to_wgs84 = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(),
                                      QgsCoordinateReferenceSystem("EPSG:4326"),
                                      QgsProject.instance())
    assert area.boundingBox().width() > 0
    assert to_wgs84.transformBoundingBox(canvas.extent()).contains(area.boundingBox().center())
    hits = results[0].hits
    assert 0 < len(hits) < 50  # only the tiles in the extent
    for hit in hits:
        centre = QgsGeometry.fromWkt(_wkt(hit.footprint)).centroid()
        assert area.contains(centre)
    dock.within_combo.setCurrentIndex(0)
    _finish(tool)


def _wkt(geojson: dict) -> str:
    ring = ", ".join(f"{x} {y}" for x, y, *_ in geojson["coordinates"][0])
    return f"POLYGON(({ring}))"


def test_hit_raster_reused_and_below_the_hits(qgis_iface, built_index, rgb_layer):
    dock, tool, results = _query(qgis_iface, built_index, rgb_layer)
    hit = results[0].hits[0]
    added = dock.add_hit_raster(hit)
    root = QgsProject.instance().layerTreeRoot()
    order = [node.layerId() for node in root.findLayers()]
    assert order.index(added.id()) > order.index(dock.hits_layer.id())  # drawn below the hits
    root.findLayer(added.id()).setItemVisibilityChecked(False)
    again = dock.add_hit_raster(hit)
    assert again.id() == added.id() and root.findLayer(added.id()).isVisible()
    assert len([layer for layer in QgsProject.instance().mapLayers().values()
                if layer.source() == hit.path]) == 1
    _finish(tool)


def test_ties_are_named_in_the_status():
    square = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}
    hit = {"rank": 1, "id": 1, "distance": 0, "score": 1.0, "path": "a.tif",
           "footprint": square}
    answer = {"query": {}, "n_tiles": 37, "seconds": 0.1}
    tied = {**answer, "hits": [hit], "ties": {"distance": 0, "count": 37, "capped": False}}
    assert "37 places tie at distance 0" in result_summary(QueryResult.from_result(tied), "query")
    assert "tie" not in result_summary(QueryResult.from_result(
        {**answer, "hits": [hit], "ties": {"distance": 0, "count": 1}}), "query")
    assert result_summary(QueryResult.from_result({**answer, "hits": []}), "query") == "No hits."


def test_a_search_saved_before_loads_with_typed_places():
    # the JSON an earlier version kept in the project: places as params, marks as where
    saved = {"index": "/i", "k": 5, "name": "fields",
             "queries": [{"point": [500000, 4170000], "crs": "EPSG:32618", "raster": "/d/a.tif",
                          "bands": [1, 1, 1], "indexed_tile": 7}],
             "marks": [{"where": {"tile": 3}, "relevant": True},
                       {"where": {"tile": 4}, "relevant": False}]}
    search = Search.from_dict(json.loads(json.dumps(saved)))
    assert search.queries == [Place(point=(500000.0, 4170000.0), crs="EPSG:32618",
                                    raster="/d/a.tif", bands=[1, 1, 1])]
    assert search.queried_tiles() == {7} and search.marked_tiles() == {3, 4}
    assert search.mark_of(Place(tile=3)) == RELEVANT and search.mark_of(Place(tile=9)) == ""
    assert Search.from_dict(json.loads(json.dumps(search.to_dict()))) == search
    request = search.request()  # marks: a refine of the place queried and the marks
    assert [(e.tile, e.relevant) for e in request.examples] == [(None, True), (3, True),
                                                                (4, False)]
    assert request.examples[0].point == (500000.0, 4170000.0)
