"""`mrhash map` on a real index of EuroSAT tiles (tiny model, 9 rasters of 4 tiles): every
tile scored as refine scores it (the same logistic score, the same ranking), calibrated as
the fitted model's probability, the tiles at or above the floor and the areas of the
detections (a union of the detected boxes of each raster, areas on the ellipsoid) written to a
GeoPackage that GDAL validates, each marked tile with its mark (a tile marked not relevant
kept below the floor), `within`, a point example, the bad inputs (nothing written), the
request's round trip, the CLI, and the map's GeoParquet export (GeoParquet 1.1 checked by
geoparquet-validator)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import defaultdict
from contextlib import closing

import numpy as np
import pytest
import shapely
from mrhash.errors import BadInput
from mrhash.search.mapping import (
    AREAS,
    TILES,
    area_km2,
    dissolve,
    export_map,
    map_index,
    parquet_outputs,
    probability,
)
from mrhash.search.refine import Marks, logistic_fit, refine
from mrhash.search.searcher import Searcher
from mrhash_contract.protocol import Example, MapRequest, RefineRequest
from test_export import GDAL_PYTHON
from test_index_support import THREADS_ENV, indexed_folder


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, eurosat_dir):
    return indexed_folder(tmp_path_factory, eurosat_dir, "map")


@pytest.fixture(scope="module")
def searcher(index_dir):
    with closing(Searcher(index_dir)) as opened:  # one for the module: maps only read it
        yield opened


def tiles_of(searcher: Searcher, word: str) -> list[int]:
    """Ids of the tiles of the rasters whose path holds `word` (a EuroSAT class)."""
    records = searcher.folder.store.tiles(searcher.embeddings.ids.tolist())
    return sorted(i for i, r in records.items() if word in r.path)


def marks(searcher: Searcher) -> list[Example]:
    forest, river = tiles_of(searcher, "Forest"), tiles_of(searcher, "River")
    return [Example(tile=forest[0]), Example(tile=forest[5]),
            Example(tile=river[0], relevant=False)]


def read_layer(path, layer: str) -> list[dict]:
    """Every feature of a layer: its columns, and `geometry` (shapely) from the GeoPackage
    blob (8-byte header + the xy envelope, then WKB)."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {layer} ORDER BY fid")]
    for row in rows:
        row["geometry"] = shapely.from_wkb(bytes(row.pop("geom"))[40:])
    return rows


def test_map_scores_every_tile_as_refine_does(searcher, tmp_path):
    examples = marks(searcher)
    out = tmp_path / "map.gpkg"
    result = map_index(searcher, MapRequest(examples, output=str(out), floor=0.0))
    tiles = read_layer(out, TILES.name)
    n = len(searcher.embeddings)
    assert result["n_scored"] == result["n_tiles"] == len(tiles) == n == 36
    # refine's logistic score (no propagation), every tile, marked ones included
    ranked = refine(searcher, RefineRequest(examples, k=n, exclude_examples=False),
                    propagation_weight=0)["hits"]
    logit = {t["id"]: t["logit"] for t in tiles}
    for hit in ranked:  # a tile scores the same in both (refine rounds to 4 decimals)
        assert logit[hit["id"]] == pytest.approx(hit["score"], abs=1e-4)
    by_map = sorted(logit, key=lambda i: (-logit[i], i))
    assert by_map[:10] == [h["id"] for h in ranked[:10]]  # the same order of the top tiles
    # the calibrated score is the fit's own probability, and orders the tiles alike
    fit = Marks.of(searcher, RefineRequest(examples, exclude_examples=False))
    _, bias = logistic_fit(*fit.fit_arrays())
    for tile in tiles:
        assert tile["score"] == pytest.approx(
            float(probability(np.float32([tile["logit"]]), bias)[0]), abs=1e-6)
        assert tile["detected"] == (tile["score"] >= 0.5)
    # the relevant examples are detected, the irrelevant one is not
    score = {t["id"]: t["score"] for t in tiles}
    assert score[examples[0].tile] >= 0.5 and score[examples[1].tile] >= 0.5
    assert score[examples[2].tile] < 0.5
    detections = result["detections"]
    assert [d["id"] for d in detections] == [i for i in sorted(score, key=lambda i: (
        -score[i], i)) if score[i] >= 0.5]
    assert result["n_detected"] == len(detections) == sum(t["detected"] for t in tiles)
    assert result["calibration"] == "logistic" and result["threshold"] == 0.5


def test_the_floor_leaves_out_unlikely_tiles(searcher, tmp_path):
    out = tmp_path / "map.gpkg"
    result = map_index(searcher, MapRequest(marks(searcher), output=str(out), floor=0.3))
    tiles = read_layer(out, TILES.name)
    assert result["n_scored"] == 36 and len(tiles) == result["n_tiles"] < 36
    assert all(t["score"] >= 0.3 for t in tiles if t["mark"] is None)  # marked: always in
    # a threshold below the floor: every detection is still in the tiles layer
    low = map_index(searcher, MapRequest(marks(searcher), output=str(out), floor=0.9,
                                         threshold=0.2))
    assert low["floor"] == 0.2
    undetected = [t for t in read_layer(out, TILES.name) if not t["detected"]]
    assert low["n_tiles"] == low["n_detected"] + len(undetected)
    assert [t["mark"] for t in undetected] == ["irrelevant"]  # only the marked river tile


def test_areas_are_the_union_of_the_detected_tiles_of_each_raster(searcher, tmp_path):
    out = tmp_path / "map.gpkg"
    result = map_index(searcher, MapRequest(marks(searcher), output=str(out), threshold=0.3))
    detected = [t for t in read_layer(out, TILES.name) if t["detected"]]
    areas = read_layer(out, AREAS.name)
    assert detected and result["n_areas"] == len(areas)
    assert max(a["n_tiles"] for a in areas) > 1  # adjacent tiles of a raster: one area
    boxes, dissolved = defaultdict(list), defaultdict(list)
    for tile in detected:
        boxes[tile["path"]].append(tile["geometry"])
    for area in areas:
        dissolved[area["path"]].append(area["geometry"])
        assert area["geometry"].geom_type == "Polygon" and area["geometry"].is_valid
    assert boxes.keys() == dissolved.keys()
    for path, tiles in boxes.items():
        union = shapely.union_all(tiles)
        assert len(dissolved[path]) == len(shapely.get_parts(union))
        assert shapely.union_all(dissolved[path]).symmetric_difference(union).area < 1e-12
    assert sum(a["n_tiles"] for a in areas) == len(detected)
    score = {t["id"]: t["score"] for t in detected}
    for area in areas:
        inside = [t["score"] for t in detected if t["path"] == area["path"]
                  and area["geometry"].contains(t["geometry"].centroid)]
        assert area["n_tiles"] == len(inside)
        assert area["max_score"] == pytest.approx(max(inside))
        assert area["mean_score"] == pytest.approx(np.mean(inside))
    assert result["detected_km2"] == pytest.approx(sum(a["area_km2"] for a in areas), abs=1e-5)
    assert len(score) == result["n_detected"]


def test_areas_split_where_tiles_do_not_touch():
    # two adjacent boxes and a third apart, on one raster; one box on another
    bounds = np.array([[0, 0, 1, 1], [1, 0, 2, 1], [5, 5, 6, 6], [0, 0, 1, 1]], float)
    areas = dissolve(["a", "a", "a", "b"], bounds, np.array([0.6, 0.8, 0.9, 0.7]))
    found = sorted(zip(areas.paths, areas.n_tiles.tolist(), areas.max_score.tolist(),
                       areas.mean_score.tolist(), shapely.area(areas.polygons).tolist(),
                       strict=True))
    assert found == [("a", 1, 0.9, 0.9, 1.0), ("a", 2, 0.8, pytest.approx(0.7), 2.0),
                     ("b", 1, 0.7, 0.7, 1.0)]
    empty = dissolve([], np.zeros((0, 4)), np.zeros(0))
    assert len(empty.paths) == 0 and len(empty.km2) == 0


def test_areas_are_geodesic():
    boxes = shapely.box(np.array([10.0, 0.0, -60.0]), np.array([50.0, 0.0, 70.0]),
                        np.array([10.01, 1.0, -59.9]), np.array([50.02, 1.0, 70.05]))
    km2 = area_km2(boxes)
    # the whole WGS84 ellipsoid: 510,065,621.718 km²
    assert area_km2(np.array([shapely.box(-180, -90, 180, 90)]))[0] == pytest.approx(
        510_065_621.718, rel=1e-9)
    pyproj = pytest.importorskip("pyproj")
    geod = pyproj.Geod(ellps="WGS84")
    for box, value in zip(boxes, km2, strict=True):
        # Geod's edges are geodesics, ours parallels: near equal for boxes this small
        assert value == pytest.approx(abs(geod.geometry_area_perimeter(box)[0]) / 1e6,
                                      rel=1e-4)


def test_within_scores_only_the_tiles_inside(searcher, tmp_path):
    records = searcher.folder.store.tiles(searcher.embeddings.ids.tolist())
    centres = {i: ((r.bounds4326[0] + r.bounds4326[2]) / 2,
                   (r.bounds4326[1] + r.bounds4326[3]) / 2) for i, r in records.items()}
    lons = sorted(c[0] for c in centres.values())
    area = shapely.box(lons[0] - 1, -90, (lons[17] + lons[18]) / 2, 90)
    inside = {i for i, c in centres.items() if area.contains(shapely.Point(c))}
    out = tmp_path / "map.gpkg"
    result = map_index(searcher, MapRequest(marks(searcher), output=str(out), floor=0.0,
                                            within=area.wkt))
    assert result["n_scored"] == len(inside) and 0 < len(inside) < 36
    assert {t["id"] for t in read_layer(out, TILES.name)} == inside


def test_a_point_is_a_positive_example(searcher, tmp_path):
    record = searcher.folder.store.tiles([marks(searcher)[0].tile])[marks(searcher)[0].tile]
    west, south, east, north = record.bounds4326
    point = Example(point=((west + east) / 2, (south + north) / 2))
    result = map_index(searcher, MapRequest([point], output=str(tmp_path / "p.gpkg")))
    assert result["n_detected"] >= 1


def test_the_geopackage_validates_in_gdal(searcher, tmp_path):
    out = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(marks(searcher), output=str(out), threshold=0.3))
    check = subprocess.run([GDAL_PYTHON, "-m", "osgeo_utils.samples.validate_gpkg", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    info = subprocess.run(["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert info.returncode == 0, info.stderr
    assert "Layer name: tiles" in info.stdout and "Layer name: areas" in info.stdout


@pytest.mark.parametrize("change, message", [
    ({"examples": "negative only"}, "at least one relevant"),
    ({"examples": "unknown tile"}, "no tile with id 999999"),
    ({"threshold": 1.5}, "threshold must be between 0 and 1"),
    ({"threshold": float("nan")}, "threshold must be between 0 and 1"),
    ({"floor": -0.1}, "floor must be between 0 and 1"),
    ({"output": "missing/map.gpkg"}, "does not exist"),
    ({"output": "INDEX/map.gpkg"}, "index folder"),
])
def test_bad_inputs_write_nothing(searcher, index_dir, tmp_path, change, message):
    examples = marks(searcher)
    if change.get("examples") == "negative only":
        examples = [e for e in examples if not e.relevant]
    elif change.get("examples") == "unknown tile":
        examples = [*examples, Example(tile=999999)]
    output = str(change.get("output", "map.gpkg")).replace("INDEX", str(index_dir))
    output = output if output.startswith("/") else str(tmp_path / output)
    request = MapRequest(examples, output=output, threshold=change.get("threshold", 0.5),
                         floor=change.get("floor", 0.1))
    with pytest.raises(BadInput, match=message):
        map_index(searcher, request)
    assert not list(tmp_path.rglob("*.gpkg*")) and not list(index_dir.glob("*.gpkg*"))


def test_an_existing_file_of_another_kind_is_never_replaced(searcher, tmp_path):
    other = tmp_path / "notes.gpkg"
    other.write_text("not a map")
    with pytest.raises(BadInput):
        map_index(searcher, MapRequest(marks(searcher), output=str(other)))
    assert other.read_text() == "not a map"
    out = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(marks(searcher), output=str(out)))
    map_index(searcher, MapRequest(marks(searcher), output=str(out), threshold=0.9))  # a map
    assert len(read_layer(out, TILES.name)) > 0


def test_the_request_round_trips():
    request = MapRequest([Example(tile=3), Example(point=(1.0, 2.0), relevant=False)],
                         index="/i", output="/o.gpkg", threshold=0.7, within="POINT (1 2)")
    params = json.loads(json.dumps(request.to_params()))
    assert MapRequest.from_params(params) == request
    assert MapRequest.from_params({"index": "/i", "output": "/o.gpkg", "examples": [
        {"tile": 3, "relevant": True}]}).threshold == 0.5


def test_map_command(index_dir, searcher, tmp_path):
    forest, river = tiles_of(searcher, "Forest"), tiles_of(searcher, "River")
    out, summary = tmp_path / "map.gpkg", tmp_path / "map.json"
    run = subprocess.run(
        [sys.executable, "-m", "mrhash", "map", "--index", str(index_dir), "--positive",
         str(forest[0]), str(forest[5]), "--negative", str(river[0]), "--output", str(out),
         "--json", str(summary)], capture_output=True, text=True, timeout=300, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    result = json.loads(summary.read_text())
    assert result["n_scored"] == 36 and result["threshold"] == 0.5
    assert {"id", "path", "score"} == set(result["detections"][0])
    assert len([t for t in read_layer(out, TILES.name) if t["detected"]]) \
        == result["n_detected"]
    bad = subprocess.run(
        [sys.executable, "-m", "mrhash", "map", "--index", str(index_dir), "--positive",
         str(forest[0]), "--threshold", "2", "--output", str(tmp_path / "bad.gpkg")],
        capture_output=True, text=True, timeout=300, env=THREADS_ENV)
    assert bad.returncode == 2 and "threshold must be between 0 and 1" in bad.stderr
    assert not (tmp_path / "bad.gpkg").exists()


def test_each_marked_tile_carries_its_mark(searcher, tmp_path):
    examples = marks(searcher)
    out = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(examples, output=str(out), floor=0.7, threshold=0.7))
    tiles = {t["id"]: t for t in read_layer(out, TILES.name)}
    assert tiles[examples[0].tile]["mark"] == tiles[examples[1].tile]["mark"] == "relevant"
    # the river tile marked not relevant scores below the floor and is still on the map
    river = tiles[examples[2].tile]
    assert river["mark"] == "irrelevant" and river["score"] < 0.7
    unmarked = [t for i, t in tiles.items() if i not in {e.tile for e in examples}]
    assert unmarked and all(t["mark"] is None and t["score"] >= 0.7 for t in unmarked)


def read_parquet(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rows = table.to_pylist()
    for row in rows:
        row["geometry"] = shapely.from_wkb(row["geometry"])
    return rows, table


def test_a_map_exports_as_geoparquet_at_the_chosen_confidence(searcher, tmp_path):
    examples = marks(searcher)
    gpkg = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(examples, output=str(gpkg), threshold=0.3, floor=0.0))
    result = export_map(gpkg, tmp_path / "forest.parquet", 0.6)
    outputs = parquet_outputs(tmp_path / "forest.parquet")
    assert result["outputs"] == {k: str(v) for k, v in outputs.items()}
    assert outputs["tiles"].name == "forest_tiles.parquet"
    tiles, table = read_parquet(outputs["tiles"])
    # the detections at 0.6, and every marked tile (the river one below it too)
    expected = {t["id"]: t for t in read_layer(gpkg, TILES.name)
                if t["score"] >= 0.6 or t["mark"] is not None}
    assert sorted(t["id"] for t in tiles) == sorted(expected)
    assert result["n_tiles"] == sum(t["detected"] for t in tiles) < len(tiles)
    assert result["n_marked"] == 3
    for tile in tiles:
        assert tile["score"] == pytest.approx(expected[tile["id"]]["score"])
        assert tile["mark"] == expected[tile["id"]]["mark"]
        assert tile["detected"] == (tile["score"] >= 0.6)
        assert tile["geometry"].equals(expected[tile["id"]]["geometry"])
        box = tile["bbox"]
        assert (box["xmin"], box["ymin"], box["xmax"], box["ymax"]) == tile["geometry"].bounds
    assert {t["mark"] for t in tiles} >= {"relevant"}
    areas, _ = read_parquet(outputs["areas"])
    expected_areas = [a for a in read_layer(gpkg, AREAS.name) if a["max_score"] >= 0.6]
    assert len(areas) == len(expected_areas) == result["n_areas"] > 0
    assert shapely.union_all([a["geometry"] for a in areas]).equals(
        shapely.union_all([a["geometry"] for a in expected_areas]))
    assert sum(a["n_tiles"] for a in areas) == sum(a["n_tiles"] for a in expected_areas)
    validator = pytest.importorskip("geoparquet_validator")
    for path in outputs.values():
        report = validator.check(str(path))
        assert validator.conformant(report), validator.failed(report)
        assert report["version"] == "1.1.0"


@pytest.mark.parametrize("case, message", [
    ("not a map", "is not a map written by mrhash map"),
    ("threshold", "threshold must be between 0 and 1"),
    ("over the map", "the map"),
    ("over a raster", "GeoParquet file written by a map export"),
])
def test_a_bad_map_export_writes_nothing(searcher, tmp_path, case, message):
    gpkg = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(marks(searcher), output=str(gpkg)))
    before = gpkg.read_bytes()
    source, output, threshold = gpkg, tmp_path / "x.parquet", 0.5
    if case == "not a map":
        source = tmp_path / "notes.gpkg"
        source.write_text("not a map")
    elif case == "threshold":
        threshold = 1.5
    elif case == "over the map":
        output = tmp_path / "map_tiles.parquet"
        gpkg.rename(output.with_name("map_tiles_tiles.parquet"))
        source = output.with_name("map_tiles_tiles.parquet")
        before = source.read_bytes()
    else:
        (tmp_path / "x_tiles.parquet").write_bytes(b"PAR1 a raster, really")
    with pytest.raises(BadInput, match=message):
        export_map(source, output, threshold)
    assert not list(tmp_path.glob(".*tmp"))
    assert source.read_bytes() == before or case == "not a map"
    assert not (tmp_path / "x_areas.parquet").exists()


def test_export_map_command(index_dir, searcher, tmp_path):
    gpkg = tmp_path / "map.gpkg"
    map_index(searcher, MapRequest(marks(searcher), output=str(gpkg)))
    run = subprocess.run(
        [sys.executable, "-m", "mrhash", "export-map", "--map", str(gpkg), "--threshold",
         "0.5", "--output", str(tmp_path / "out.parquet")], capture_output=True, text=True,
        timeout=300, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    assert "out_tiles.parquet" in run.stderr and (tmp_path / "out_areas.parquet").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "mrhash", "export-map", "--map", str(tmp_path / "none.gpkg"),
         "--output", str(tmp_path / "bad.parquet")], capture_output=True, text=True,
        timeout=300, env=THREADS_ENV)
    assert bad.returncode == 2 and "none.gpkg" in bad.stderr and "Traceback" not in bad.stderr
