"""A simulated click on the canvas (in another CRS) yields the hits layer and thumbnails."""

from __future__ import annotations

from conftest import wait_for
from dock_support import dock_on_canvas, mouse, pixel_of
from qgis.core import (
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QEvent

from mrhash_qgis.core.hits_layer import HITS_LAYER_NAME
from mrhash_qgis.ui.thumbnails import HIT_ROLE


def test_click_query_gives_hits_layer_and_thumbnails(qgis_iface, built_index, rgb_layer, s2):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    extent = rgb_layer.extent()
    # centre of the tile at column 1, row 2 of the 64 px grid (10 m pixels)
    target = QgsPointXY(extent.xMinimum() + 96 * 10, extent.yMaximum() - 160 * 10)
    # zoom in around it: a canvas pixel of ~0.3 m keeps the click within a raster pixel
    to_canvas = QgsCoordinateTransform(rgb_layer.crs(), canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(QgsRectangle(
        target.x() - 100, target.y() - 100, target.x() + 100, target.y() + 100)))
    pixel = pixel_of(canvas, target)
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
    wait_for(lambda: results, 60, "the query")

    hits = results[0].hits
    assert len(hits) == 5
    layer = QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)[0]
    features = sorted(layer.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == [h.rank for h in hits]
    distances = [f["distance"] for f in features]
    assert distances == sorted(distances)
    # the archive holds the clicked crop itself: that tile is the query, shown as the query
    # and not as hit #1 taking a slot
    assert results[0].query.path == str(s2.rgb)  # read from the layer clicked on
    to_wgs84 = QgsCoordinateTransform(rgb_layer.crs(), layer.crs(), QgsProject.instance())
    clicked = to_wgs84.transform(target)
    assert not any(f.geometry().contains(clicked) and f["source"].endswith("s2_rgb_a.tif")
                   for f in features)
    assert dock.search.indexed_tiles[0] not in {int(h.id) for h in hits}
    assert layer.renderer().type() == "graduatedSymbol"
    # thumbnails: the query first, then one per hit, real pictures from the engine
    assert dock.grid.item(0).data(HIT_ROLE).is_query
    assert len(dock.grid.hit_items()) == 5
    assert dock.grid.hit_items()[0].text().startswith("#1  d=")
    assert all(hit.thumbnail for hit in hits)
    # the user removes the hits layer; the next query makes a new one
    QgsProject.instance().removeMapLayers([layer.id()])
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
    wait_for(lambda: len(results) == 2, 60, "the second query")
    [again] = QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)
    assert again.featureCount() == 5
    QgsProject.instance().removeAllMapLayers()
    tool.release()


def test_click_snapped_to_the_indexed_tile(qgis_iface, built_index, rgb_layer, s2):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    dock.snap_check.setChecked(True)
    dock.k_spin.setValue(12)
    extent = rgb_layer.extent()
    target = QgsPointXY(extent.xMinimum() + 100 * 10, extent.yMaximum() - 150 * 10)
    pixel = pixel_of(canvas, target)  # whole-crop view: a canvas pixel is ~5 m, off-centre
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
    wait_for(lambda: results, 60, "the snapped query")
    query = results[0].query
    assert query.path == str(s2.archive_dir / "s2_rgb_a.tif")
    # the query is the stored tile (64 px = 640 m) under the click, found exactly
    minx, miny, maxx, maxy = query.bounds
    assert (maxx - minx, maxy - miny) == (640, 640)
    assert minx <= target.x() <= maxx and miny <= target.y() <= maxy
    hits = results[0].hits
    assert len(hits) == 12 and [h.rank for h in hits] == list(range(1, 13))
    # the tile clicked is the query, not one of its hits
    assert not any(h.path == query.path and h.window == [64, 128, 64, 64]
                   for h in hits)
    QgsProject.instance().removeAllMapLayers()
    tool.release()


def test_append_keeps_earlier_results_numbered_by_query(qgis_iface, built_index, rgb_layer):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    dock.append_check.setChecked(True)
    extent = rgb_layer.extent()
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    for n, (col, row) in enumerate(((96, 160), (224, 32)), start=1):
        pixel = pixel_of(canvas, QgsPointXY(extent.xMinimum() + col * 10,
                                          extent.yMaximum() - row * 10))
        tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
        tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
        wait_for(lambda n=n: len(results) == n, 60, f"query {n}")
    [layer] = QgsProject.instance().mapLayersByName(HITS_LAYER_NAME)
    queries = sorted((f["query"], f["rank"]) for f in layer.getFeatures())
    assert queries == [(q, r) for q in (1, 2) for r in range(1, 6)]
    assert len(dock.grid.hit_items()) == 5  # the thumbnails show the latest query
    dock.append_check.setChecked(False)  # back to replacing
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
    wait_for(lambda: len(results) == 3, 60, "query 3")
    assert {f["query"] for f in layer.getFeatures()} == {3} and layer.featureCount() == 5
    QgsProject.instance().removeAllMapLayers()
    tool.release()


def test_rectangle_drag_and_result_actions(qgis_iface, built_index, rgb_layer, s2):
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, rgb_layer)
    extent = rgb_layer.extent()
    start = pixel_of(canvas, QgsPointXY(extent.xMinimum() + 640, extent.yMaximum() - 640))
    end = pixel_of(canvas, QgsPointXY(extent.xMinimum() + 1280, extent.yMaximum() - 1280))
    locations: list = []
    tool.queryRequested.connect(locations.append)
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, start))
    tool.canvasMoveEvent(mouse(canvas, QEvent.Type.MouseMove, end))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, end))
    location = locations[0]
    assert location.crs == "EPSG:32618" and location.raster == str(s2.rgb)
    assert location.footprint_wkt.startswith("Polygon")
    wait_for(lambda: results, 60, "the rectangle query")
    hits = results[0].hits
    assert results[0].query.path == str(s2.rgb)  # a rectangle reads the raster under it
    dock.zoom_to_hit(hits[0])
    west, south, east, north = hits[0].bounds  # in the hit's CRS (the archive's, 32618)
    assert canvas.extent().contains(QgsCoordinateTransform(
        rgb_layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance()
    ).transform(QgsPointXY((west + east) / 2, (south + north) / 2)))
    added = dock.add_hit_raster(hits[0])
    assert added.isValid() and added.source() == hits[0].path
    QgsProject.instance().removeAllMapLayers()
    tool.release()


def test_query_without_index_explains(qgis_iface, engine):
    from mrhash_qgis.map_tool import QueryLocation
    from mrhash_qgis.ui.dock import MrHashDock

    dock = MrHashDock(qgis_iface, engine)
    dock.index_widget.setFilePath("")
    assert dock.run_query(QueryLocation((0.0, 0.0), "EPSG:4326")) is None
    assert "Choose an index" in dock.status_label.text()


def test_click_on_a_raster_outside_the_index_queries_that_raster(
        qgis_iface, built_index, tmp_path, sentinel2_dir):
    from osgeo import gdal

    elsewhere = tmp_path / "s2_elsewhere.tif"  # same scene, a place the index does not cover
    rgb = gdal.BuildVRT("/vsimem/elsewhere.vrt", [str(sentinel2_dir / f"s2_{b}.jp2")
                                                  for b in ("B04", "B03", "B02")], separate=True)
    gdal.Translate(str(elsewhere), rgb, srcWin=[1400, 200, 320, 320])
    rgb = None
    gdal.Unlink("/vsimem/elsewhere.vrt")
    layer = QgsRasterLayer(str(elsewhere), "elsewhere")
    QgsProject.instance().addMapLayer(layer)
    canvas, tool, dock = dock_on_canvas(qgis_iface, built_index, layer)
    dock.snap_check.setChecked(True)  # no indexed tile there: falls back to the raster
    results: list[dict] = []
    dock.queryFinished.connect(results.append)
    pixel = pixel_of(canvas, layer.extent().center())
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
    wait_for(lambda: results, 60, "the fallback query")
    query = results[0].query
    assert query.path == str(elsewhere)
    minx, miny, maxx, maxy = query.bounds
    assert round(maxx - minx) == 640  # the index's 64 px tiles x 10 m
    assert len(results[0].hits) == 5
    QgsProject.instance().removeAllMapLayers()
    tool.release()


def test_choosing_an_index_opens_it_in_the_engine(qgis_iface, built_index, tmp_path):
    """The index is opened (and its model loaded) when the analyst chooses it, not at the
    first click: a worker of its own (only this dock talks to it) names it before any
    query; choosing a folder with no index asks nothing."""
    from pathlib import Path

    from mrhash_qgis.core.engine_client import EngineClient
    from mrhash_qgis.ui.dock import MrHashDock

    client = EngineClient()
    try:
        client.wait_ready(timeout=120)
        dock = MrHashDock(qgis_iface, client)
        dock.index_widget.setFilePath("")
        other = tmp_path / "empty"  # a folder with no index: nothing to open, no error
        other.mkdir()
        dock.index_widget.setFilePath(str(other))
        assert not client.call("status", timeout=30).get("index")
        index = built_index.index_widget.filePath()
        dock.index_widget.setFilePath(index)
        expected = str(Path(index).resolve())
        wait_for(lambda: client.call("status", timeout=30).get("index") == expected, 60,
                 "the index opened in the engine")
        assert client.call("status", timeout=30).get("model")  # its model loaded too
        dock.deleteLater()
    finally:
        client.stop()
