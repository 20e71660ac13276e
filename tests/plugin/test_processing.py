"""The `mrhash` Processing algorithms run in-process with the provider registered."""

from __future__ import annotations

import pytest
from conftest import TINY_TRAINING
from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)


@pytest.fixture(scope="module")
def provider(qgis_processing):
    from mrhash_qgis.processing.provider import MrHashProvider

    provider = MrHashProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)


def test_train_index_query(provider, s2, sentinel2_dir, tmp_path, engine):
    import processing

    model = tmp_path / "proc.safetensors"
    trained = processing.run("mrhash:trainmodel", {
        "PRIMARY": [str(s2.rgb)], "AUXILIARY_FOLDER": str(s2.aux_dir), "BITS": 0,
        "CLUSTERS": TINY_TRAINING["clusters"], "EPOCHS": 1, "AE_EPOCHS": 1,
        "PATCH_SIZE": 64, "DEVICE": 1, "OUTPUT_MODEL": str(model)})
    assert trained["OUTPUT_MODEL"] == str(model) and model.is_file()

    index = tmp_path / "proc_index"
    built = processing.run("mrhash:buildindex", {
        "INPUT_FOLDER": str(s2.archive_dir), "MODEL": str(model), "TILE_SIZE": 128,
        "STRIDE": 0, "BANDS": "1,2,3", "OUTPUT_INDEX": str(index)})
    assert built["N_TILES"] == 8 and built["ADDED"] == 8 and built["SKIPPED"] == 0

    point = "444370,4170820 [EPSG:32618]"  # centre of the first 128 px tile of the crop
    result = processing.run("mrhash:queryatpoint", {
        "INDEX": str(index), "POINT": point, "K": 4, "OUTPUT": "memory:hits"})
    layer = result["OUTPUT"]
    layer = layer if isinstance(layer, QgsVectorLayer) else QgsVectorLayer(layer)
    assert [f.name() for f in layer.fields()][:3] == ["rank", "distance", "source"]
    rows = sorted((f["rank"], f["distance"]) for f in layer.getFeatures())
    assert [rank for rank, _ in rows] == [1, 2, 3, 4]
    assert rows[0][1] == 0  # the indexed copy of the clicked place

    # a point on a raster that is not indexed: read from RASTER (without it: outside_index)
    from osgeo import gdal

    elsewhere = str(tmp_path / "not_indexed.tif")  # another part of the scene
    rgb = gdal.BuildVRT("/vsimem/elsewhere.vrt",
                        [str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B04", "B03", "B02")],
                        separate=True)
    gdal.Translate(elsewhere, rgb, srcWin=[1400, 200, 160, 160])
    rgb = None
    gdal.Unlink("/vsimem/elsewhere.vrt")
    info = gdal.Info(elsewhere, format="json")["cornerCoordinates"]["center"]
    far_point = f"{info[0]},{info[1]} [EPSG:32618]"
    with pytest.raises(QgsProcessingException, match="outside every indexed raster"):
        processing.run("mrhash:queryatpoint", {
            "INDEX": str(index), "POINT": far_point, "K": 4, "OUTPUT": "memory:hits"})
    raster_layer = QgsRasterLayer(elsewhere, "not indexed")
    result = processing.run("mrhash:queryatpoint", {
        "INDEX": str(index), "POINT": far_point, "RASTER": raster_layer, "K": 4,
        "OUTPUT": "memory:hits"})
    layer = result["OUTPUT"]
    layer = layer if isinstance(layer, QgsVectorLayer) else QgsVectorLayer(layer)
    assert layer.featureCount() == 4
    del raster_layer

    # run from the GUI (loaded on completion): styled like the dock's hits layer
    loaded = processing.runAndLoadResults("mrhash:queryatpoint", {
        "INDEX": str(index), "POINT": point, "K": 4, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayer(loaded["OUTPUT"])
    assert layer.featureCount() == 4
    assert layer.renderer().type() == "graduatedSymbol"
    QgsProject.instance().removeAllMapLayers()


def test_engine_errors_become_processing_errors(provider, tmp_path, engine):
    import processing

    with pytest.raises(QgsProcessingException, match="no_such.safetensors"):
        processing.run("mrhash:buildindex", {
            "INPUT_FOLDER": str(tmp_path), "MODEL": str(tmp_path / "no_such.safetensors"),
            "OUTPUT_INDEX": str(tmp_path / "idx")})


def test_shipped_model_runs_in_the_modeller_engine(provider, s2, trained, tmp_path, engine):
    """resources/models holds a graphical-modeller model chaining buildindex -> queryatpoint;
    it loads and runs like any model a user draws."""
    from pathlib import Path

    import processing
    from qgis.core import QgsProcessingModelAlgorithm, QgsRasterLayer

    model = QgsProcessingModelAlgorithm()
    path = Path(__file__).resolve().parents[2] / "resources/models/mrhash_index_and_query.model3"
    assert model.fromFile(str(path))
    assert sorted(c.algorithmId() for c in model.childAlgorithms().values()) == [
        "mrhash:buildindex", "mrhash:queryatpoint"]
    extent = QgsRasterLayer(str(s2.rgb), "rgb").extent()
    point = f"{extent.xMinimum() + 96 * 10},{extent.yMaximum() - 160 * 10} [EPSG:32618]"
    result = processing.run(model, {
        "rasters": str(s2.archive_dir), "model": trained.model, "point": point, "k": 4,
        "buildindex:Index": str(tmp_path / "model_index"),
        "queryatpoint:Similar places": "memory:hits"})
    assert (tmp_path / "model_index" / "index.sqlite").is_file()
    layer = result["queryatpoint:Similar places"]
    layer = layer if isinstance(layer, QgsVectorLayer) else QgsVectorLayer(layer)
    rows = sorted((f["rank"], f["distance"]) for f in layer.getFeatures())
    assert [rank for rank, _ in rows] == [1, 2, 3, 4] and rows[0][1] == 0


def test_refine_and_export_index(provider, built_index, tmp_path, engine):
    """mrhash:refine re-ranks the whole index for marked tiles; mrhash:exportindex writes every
    tile to a GeoPackage QGIS opens."""
    import sqlite3

    import processing

    index = built_index.index_widget.filePath()
    with sqlite3.connect(f"{index}/index.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM tiles ORDER BY id")]
    result = processing.run("mrhash:refine", {
        "INDEX": index, "POSITIVE": f"{ids[0]}, {ids[1]}", "NEGATIVE": str(ids[-1]), "K": 5,
        "OUTPUT": "memory:refined"})
    layer = result["OUTPUT"]
    layer = layer if isinstance(layer, QgsVectorLayer) else QgsVectorLayer(layer)
    hits = sorted(layer.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in hits] == [1, 2, 3, 4, 5]
    assert not {str(ids[0]), str(ids[1]), str(ids[-1])} & {f["hit_id"] for f in hits}
    scores = [f["score"] for f in hits]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(QgsProcessingException, match="at least one relevant"):
        processing.run("mrhash:refine", {"INDEX": index, "NEGATIVE": str(ids[0]),
                                         "OUTPUT": "memory:none"})
    with pytest.raises(QgsProcessingException, match="whole numbers"):
        processing.run("mrhash:refine", {"INDEX": index, "POSITIVE": "12a",
                                         "OUTPUT": "memory:none"})

    output = tmp_path / "tiles.gpkg"
    exported = processing.run("mrhash:exportindex", {"INDEX": index, "FORMAT": 0,
                                                     "OUTPUT": str(output)})
    assert exported["OUTPUT"] == str(output)
    tiles = QgsVectorLayer(str(output), "tiles", "ogr")
    assert tiles.isValid() and tiles.featureCount() == len(ids)
    assert {"path", "code"} <= set(tiles.fields().names())
    parquet = processing.run("mrhash:exportindex", {"INDEX": index, "FORMAT": 1,
                                                    "OUTPUT": str(tmp_path / "tiles.parquet")})
    assert (tmp_path / "tiles.parquet").stat().st_size > 0 and parquet["OUTPUT"].endswith(
        ".parquet")
    del tiles, layer, hits  # no layer alive at exitQgis()


def test_map_similar_writes_areas_and_tiles(provider, built_index, tmp_path, engine):
    """mrhash:mapsimilar scores every tile for the examples and writes the areas and the tiles
    as layers of one GeoPackage, usable from the modeller and qgis_process."""
    import sqlite3

    import processing

    index = built_index.index_widget.filePath()
    with sqlite3.connect(f"{index}/index.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM tiles ORDER BY id")]
    result = processing.run("mrhash:mapsimilar", {
        "INDEX": index, "POSITIVE": f"{ids[0]} {ids[1]}", "NEGATIVE": str(ids[-1]),
        "THRESHOLD": 0.5, "OUTPUT": str(tmp_path / "map.gpkg")})
    assert result["OUTPUT"] == str(tmp_path / "map.gpkg")
    areas, tiles = QgsVectorLayer(result["AREAS"]), QgsVectorLayer(result["TILES"])
    assert areas.isValid() and tiles.isValid() and tiles.featureCount() > 0
    assert {"n_tiles", "area_km2", "max_score"} <= set(areas.fields().names())
    assert all(f["max_score"] >= 0.5 for f in areas.getFeatures())
    with pytest.raises(QgsProcessingException, match="at least one relevant"):
        processing.run("mrhash:mapsimilar", {"INDEX": index, "NEGATIVE": str(ids[0]),
                                             "OUTPUT": str(tmp_path / "none.gpkg")})
    del areas, tiles  # no layer alive at exitQgis()
