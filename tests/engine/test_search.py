"""Queries on a real index: by tile id, point and raster footprint, spatial filters, and the
error cases (point outside every raster, empty index, bad parameters)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import shapely
from mrhash.errors import BadInput, OutsideIndex
from mrhash.index.build import build_index
from mrhash.index.folder import IndexFolder
from mrhash.raster.geometry import haversine_m
from mrhash.search.searcher import Searcher, run_query
from mrhash_contract.protocol import QueryRequest
from test_index_support import THREADS_ENV, TILE


@pytest.fixture
def index_dir(tiny_model, rasters, tmp_path):
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    return tmp_path / "index"


def _tile(index_dir, tile_id: int):
    folder = IndexFolder(index_dir)
    try:
        return folder.store.tiles([tile_id])[tile_id]
    finally:
        folder.close()


def _hamming(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def test_query_by_tile_ranks_by_true_hamming_distance(index_dir):
    result = run_query(index_dir, QueryRequest(tile=6, k=36))
    hits = result["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 37))
    assert hits[0]["id"] == 6 and hits[0]["distance"] == 0
    query = _tile(index_dir, 6)
    for hit in hits:
        assert hit["distance"] == _hamming(query.code, _tile(index_dir, hit["id"]).code)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    # footprints are GeoJSON in EPSG:4326 and hold the tile's native box
    first = hits[0]
    ring = np.array(first["footprint"]["coordinates"][0])
    assert first["footprint"]["type"] == "Polygon" and -180 <= ring[:, 0].min() <= 180
    assert first["window"] == list(query.window) and first["crs"] == query.crs
    json.dumps(result)  # the worker sends it as is


def test_query_by_point_reads_the_covering_raster(index_dir):
    tile = _tile(index_dir, 10)
    minx, miny, maxx, maxy = tile.bounds
    x, y = (minx + maxx) / 2, (miny + maxy) / 2
    result = run_query(index_dir, QueryRequest(point=(x, y), crs=tile.crs, k=5))
    assert result["query"]["path"] == tile.path
    # the patch centred on a tile's centre is that tile: same code, found at distance 0
    assert result["query"]["code"] == tile.code.hex()
    assert 10 in [h["id"] for h in result["hits"] if h["distance"] == 0]
    # a bare EPSG code, as `--crs 32632` gives it
    bare = run_query(index_dir, QueryRequest(point=(x, y), crs=tile.crs.split(":")[1], k=5))
    assert bare["query"]["code"] == tile.code.hex()
    # the same point given in EPSG:4326
    from mrhash.raster.geometry import transform_point

    lon, lat = transform_point(x, y, tile.crs, "EPSG:4326")
    by_lonlat = run_query(index_dir, QueryRequest(point=(lon, lat), k=5))
    assert by_lonlat["query"]["code"] == tile.code.hex()


def test_query_by_footprint_on_another_raster(index_dir, eurosat_dir):
    other = sorted((eurosat_dir / "Industrial").glob("*.tif"))[0]
    import rasterio

    with rasterio.open(other) as ds:
        left, bottom = ds.bounds.left, ds.bounds.bottom
        res = ds.res[0]
    wkt = shapely.box(left, bottom, left + TILE * res, bottom + TILE * res).wkt
    result = run_query(index_dir, QueryRequest(raster=str(other), footprint=wkt, k=4))
    assert result["query"]["path"] == str(other) and len(result["hits"]) == 4


def test_point_outside_every_raster(index_dir):
    with pytest.raises(OutsideIndex, match="outside every indexed raster") as caught:
        run_query(index_dir, QueryRequest(point=(-120.0, -45.0), k=5))
    assert caught.value.code == "outside_index"


def test_point_on_a_raster_that_is_not_indexed_reads_the_raster_given(index_dir, eurosat_dir,
                                                                      tmp_path):
    """`--raster` with `--point`: the patch around the point is read from that raster."""
    import rasterio

    other = sorted((eurosat_dir / "Industrial").glob("*.tif"))[0]
    with rasterio.open(other) as ds:
        x = ds.bounds.left + TILE / 2 * ds.res[0]
        y = ds.bounds.top - TILE / 2 * ds.res[1]
        crs, half_x, half_y = ds.crs.to_string(), TILE / 2 * ds.res[0], TILE / 2 * ds.res[1]
    with pytest.raises(OutsideIndex):
        run_query(index_dir, QueryRequest(point=(x, y), crs=crs, k=3))
    result = run_query(index_dir, QueryRequest(point=(x, y), crs=crs, raster=str(other), k=3))
    assert result["query"]["path"] == str(other) and len(result["hits"]) == 3
    # the same patch as a footprint query: the same code
    box = shapely.box(x - half_x, y - half_y, x + half_x, y + half_y)
    same = run_query(index_dir, QueryRequest(raster=str(other), footprint=box.wkt, k=3))
    assert same["query"]["code"] == result["query"]["code"]
    out = tmp_path / "hits.json"
    run = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index", str(index_dir),
                          "--point", str(x), str(y), "--crs", crs, "--raster", str(other),
                          "-k", "5", "--json", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(json.loads(out.read_text())["hits"]) == 5


def test_exclude_radius_drops_neighbours_of_the_query(index_dir):
    query = _tile(index_dir, 1)
    lon = (query.bounds4326[0] + query.bounds4326[2]) / 2
    lat = (query.bounds4326[1] + query.bounds4326[3]) / 2
    near = run_query(index_dir, QueryRequest(tile=1, k=36))["hits"]
    far = run_query(index_dir, QueryRequest(tile=1, k=10, exclude_radius=2000))["hits"]
    assert len(far) == 10 and 1 not in [h["id"] for h in far]
    for hit in far:
        box = _tile(index_dir, hit["id"]).bounds4326
        assert haversine_m(lon, lat, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2) >= 2000
    # the hits the radius removed were the query's own raster (its 4 tiles lie within 700 m)
    same_raster = {h["id"] for h in near if h["path"] == query.path}
    assert same_raster and not same_raster & {h["id"] for h in far}


def test_within_keeps_hits_inside_the_area(index_dir, rasters):
    query = _tile(index_dir, 1)
    west, south, east, north = query.bounds4326
    area = shapely.box(west - 0.02, south - 0.02, east + 0.02, north + 0.02)
    hits = run_query(index_dir, QueryRequest(tile=1, k=20, within=area.wkt))["hits"]
    assert hits and len(hits) < 20  # only the tiles in that small area
    for hit in hits:
        box = _tile(index_dir, hit["id"]).bounds4326
        assert area.contains(shapely.Point((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    everything = run_query(index_dir, QueryRequest(tile=1, k=36))["hits"]
    inside = [h["id"] for h in everything if area.contains(shapely.Point(
        np.mean(np.array(h["footprint"]["coordinates"][0])[:4], axis=0)))]
    assert sorted(h["id"] for h in hits) == sorted(inside)
    assert run_query(index_dir, QueryRequest(tile=1, k=5, within=shapely.box(0, 0, 1, 1).wkt))[
        "hits"] == []


def test_bad_queries(index_dir):
    for query, message in ((QueryRequest(k=5), "exactly one"),
                           (QueryRequest(tile=1, point=(1, 2)), "exactly one"),
                           (QueryRequest(tile=1, k=0), "k must be"),
                           (QueryRequest(tile=99999), "no tile with id"),
                           (QueryRequest(tile=1, within="POLYGON((0 0, 1"), "not valid WKT"),
                           (QueryRequest(footprint="POINT (1 1)"), "outside every indexed raster"),
                           (QueryRequest(footprint="POINT (1 1)", raster="/no/such.tif"),
                            "not found")):
        with pytest.raises(BadInput, match=message):
            run_query(index_dir, query)


def test_empty_index(tiny_model, rasters, tmp_path):
    """An index whose every raster became unreadable keeps its folder, with no tiles."""
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    for path in rasters.glob("*.tif"):
        path.write_bytes(b"no longer a raster")
    result = build_index(rasters, tiny_model, tmp_path / "index", TILE)
    assert result.n_tiles == 0 and len(result.skipped) == 9 and result.removed == 36
    with pytest.raises(BadInput, match="holds no tiles"):
        run_query(tmp_path / "index", QueryRequest(tile=1, k=5))


def test_query_by_footprint_on_the_indexed_rasters(index_dir):
    """No raster given: the patch is read from the indexed raster under the footprint's
    centre; the footprint's CRS defaults to EPSG:4326."""
    tile = _tile(index_dir, 10)
    native = shapely.box(*tile.bounds).wkt
    result = run_query(index_dir, QueryRequest(footprint=native, footprint_crs=tile.crs, k=3))
    assert result["query"]["code"] == tile.code.hex() and result["query"]["path"] == tile.path
    assert result["hits"][0]["distance"] == 0
    # the same place in lon/lat (no CRS given): the raster under it, about the same patch
    lonlat = shapely.box(*tile.bounds4326).wkt
    by_lonlat = run_query(index_dir, QueryRequest(footprint=lonlat, k=3))
    assert by_lonlat["query"]["path"] == tile.path and by_lonlat["query"]["crs"] == "EPSG:4326"
    assert _hamming(bytes.fromhex(by_lonlat["query"]["code"]), tile.code) <= 8
    with pytest.raises(OutsideIndex, match="footprint's centre"):
        run_query(index_dir, QueryRequest(footprint=shapely.box(-120, -45, -119.99, -44.99).wkt))
    out = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index", str(index_dir),
                          "--footprint", native, "--footprint-crs", tile.crs, "-k", "2"],
                         capture_output=True, text=True, timeout=120, env=THREADS_ENV)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["query"]["code"] == tile.code.hex()


def test_searcher_notices_an_updated_index(index_dir, tiny_model, rasters):
    searcher = Searcher(index_dir)
    try:
        assert not searcher.stale()
        sorted(rasters.glob("*.tif"))[0].unlink()
        build_index(rasters, tiny_model, index_dir, TILE)
        assert searcher.stale()
    finally:
        searcher.close()


def test_query_cli_writes_json(index_dir, tmp_path):
    out = tmp_path / "hits.json"
    done = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index", str(index_dir),
                           "--tile", "3", "-k", "4", "--thumbnails", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, env=THREADS_ENV)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert all(h["thumbnail"].endswith(".png") for h in result["hits"])
    bad = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index",
                          str(tmp_path / "nowhere"), "--tile", "3"], capture_output=True,
                         text=True, timeout=120, env=THREADS_ENV)
    assert bad.returncode == 2 and "not an index folder" in bad.stderr


def test_moved_model_is_reported_and_can_be_given(index_dir, tiny_model, tmp_path):
    from mrhash.errors import IndexCorrupted
    from mrhash.model.package import load_model

    tile = _tile(index_dir, 2)
    point = ((tile.bounds[0] + tile.bounds[2]) / 2, (tile.bounds[1] + tile.bounds[3]) / 2)
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(tiny_model.read_bytes())
    folder = IndexFolder(index_dir)
    folder.store.set_meta({"model_path": str(tmp_path / "gone.safetensors")})
    folder.close()
    with pytest.raises(IndexCorrupted, match="model .* is missing"):
        run_query(index_dir, QueryRequest(point=point, crs=tile.crs, k=3))
    result = run_query(index_dir, QueryRequest(point=point, crs=tile.crs, k=3), load_model(moved))
    assert result["query"]["code"] == tile.code.hex()
