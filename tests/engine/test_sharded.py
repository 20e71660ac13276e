"""Several index folders searched as one (4 shards of the real EuroSAT rasters): the merged
top k equals the top k of one index of all the rasters; shards of other models, a tile id and
a place outside every shard are clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from mrhash.errors import BadInput, OutsideIndex
from mrhash.index.build import build_index
from mrhash.search.searcher import ShardedSearcher, merge_top_k, run_query
from mrhash_contract.protocol import QueryRequest
from test_index_support import THREADS_ENV, TILE, model_path


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eurosat_dir):
    """(4 shard indexes, 1 index of everything, a raster of shard 3) over 40 real rasters."""
    import torch

    torch.set_num_threads(1)
    model = model_path(tmp_path_factory, eurosat_dir)
    root = tmp_path_factory.mktemp("shards")
    rasters = sorted(eurosat_dir.glob("*/*.tif"))[:40]
    for n, raster in enumerate(rasters):
        for folder in (root / f"part{n % 4}", root / "all"):
            folder.mkdir(exist_ok=True)
            shutil.copy2(raster, folder / raster.name)
    indexes = []
    for n in range(4):
        build_index(root / f"part{n}", model, root / f"index{n}", TILE)
        indexes.append(root / f"index{n}")
    build_index(root / "all", model, root / "index_all", TILE)
    return indexes, root / "index_all", sorted((root / "part3").glob("*.tif"))[2], model


def _key(hit: dict) -> tuple:
    return hit["distance"], hit["path"].split("/")[-1], tuple(hit["window"]), hit["score"]


def test_four_shards_answer_as_one_index(shards):
    indexes, whole, raster, _model = shards
    import rasterio

    with rasterio.open(raster) as dataset:
        x, y = dataset.transform * (48, 16)  # the centre of the tile at cols 32-64, rows 0-32
        crs = dataset.crs.to_string()
    query = QueryRequest(point=(x, y), crs=crs, k=12)
    sharded = run_query([str(i) for i in indexes], query)
    single = run_query(str(whole), QueryRequest(point=(x, y), crs=crs, k=12))
    assert [_key(h) for h in sharded["hits"]] == [_key(h) for h in single["hits"]]
    assert sharded["hits"][0]["distance"] == 0  # the place itself, found in shard 3
    assert sharded["hits"][0]["index"] == str(indexes[3])
    assert {h["index"] for h in sharded["hits"]} > {str(indexes[3])}  # merged across shards
    assert sharded["n_tiles"] == single["n_tiles"] == 160
    assert sharded["ties"]["count"] == single["ties"]["count"]
    assert [h["rank"] for h in sharded["hits"]] == list(range(1, 13))


def test_the_command_line_takes_several_indexes(shards, tmp_path):
    indexes, whole, raster, _model = shards
    import rasterio

    with rasterio.open(raster) as dataset:
        x, y = dataset.xy(10, 50)
        crs = dataset.crs.to_string()
    out = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index",
                          *map(str, indexes), "--point", str(x), str(y), "--crs", crs, "-k",
                          "5"], capture_output=True, text=True, env=THREADS_ENV, check=True)
    hits = json.loads(out.stdout)["hits"]
    single = run_query(str(whole), QueryRequest(point=(x, y), crs=crs, k=5))["hits"]
    assert [_key(h) for h in hits] == [_key(h) for h in single]


def test_shard_errors(shards, tmp_path_factory, eurosat_dir, tmp_path):
    indexes, _whole, raster, _model = shards
    with pytest.raises(BadInput, match="tile id names a tile of one index"):
        run_query([str(i) for i in indexes], QueryRequest(tile=1))
    with pytest.raises(OutsideIndex, match="outside every raster of the 4 indexes"):
        run_query([str(i) for i in indexes], QueryRequest(point=(0.0, 0.0), k=3))
    other = model_path(tmp_path_factory, eurosat_dir, seed=1)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy2(raster, folder / raster.name)
    build_index(folder, other, tmp_path / "other_model", TILE)
    with pytest.raises(BadInput, match="different models"):
        ShardedSearcher([indexes[0], tmp_path / "other_model"])


def test_merge_top_k_orders_by_distance_then_score():
    per_shard = [[(1, 7, 0.2), (3, 8, 0.9)], [(1, 2, 0.5), (2, 4, 0.1)], []]
    assert merge_top_k(per_shard, 3) == [(1, 1, 2, 0.5), (1, 0, 7, 0.2), (2, 1, 4, 0.1)]


def test_several_indexes_map_as_one(shards, tmp_path):
    """`mrhash map` over the 4 shards: one scorer for all (examples by point), every tile of
    every shard scored, one GeoPackage naming each tile's index; much the same detections as
    the map of the one index of everything (the background is drawn per shard)."""
    import sqlite3

    import numpy as np
    import rasterio
    from mrhash.search.mapping import map_index, probability
    from mrhash.search.refine import Marks, logistic_fit
    from mrhash.search.searcher import Searcher
    from mrhash_contract.protocol import Example, MapRequest

    indexes, whole, raster, _model = shards
    with rasterio.open(raster) as dataset:
        x, y = dataset.transform * (48, 16)
        crs = dataset.crs.to_string()
    examples = [Example(point=(x, y), crs=crs)]
    sharded = ShardedSearcher([str(i) for i in indexes])
    try:
        result = map_index(sharded, MapRequest(examples, output=str(tmp_path / "s.gpkg"),
                                               floor=0.0))
        sharded.share_model()
        marks = Marks.of_shards(sharded.shards, MapRequest(examples).refine_request())
        weights, bias = logistic_fit(*marks[0].fit_arrays())
        expected = {(str(s.folder.root), int(i)): float(p) for s in sharded.shards
                    for i, p in zip(s.embeddings.ids, probability(
                        s.embeddings.unit @ weights.astype(np.float32), bias), strict=True)}
    finally:
        sharded.close()
    assert result["n_scored"] == result["n_tiles"] == 160
    with sqlite3.connect(tmp_path / "s.gpkg") as db:
        rows = db.execute("SELECT fid, id, index_dir, score FROM tiles").fetchall()
    assert len({fid for fid, *_ in rows}) == 160  # one feature a tile, though ids repeat
    assert {root for _, _, root, _ in rows} == {str(i) for i in indexes}
    for _, tile, root, score in rows:  # one scorer, each shard's own tiles
        assert score == pytest.approx(expected[(root, tile)], abs=1e-5)
    assert all(d["index"] in {str(i) for i in indexes} for d in result["detections"])
    single = Searcher(str(whole))
    try:
        one = map_index(single, MapRequest(examples, output=str(tmp_path / "w.gpkg")))
    finally:
        single.close()
    whole_found = {(d["path"].split("/")[-1], d["id"]) for d in one["detections"]}
    found = {d["path"].split("/")[-1] for d in result["detections"]}
    assert len(found & {name for name, _ in whole_found}) >= 0.7 * max(
        len(found), len({name for name, _ in whole_found}))
    run = subprocess.run(
        [sys.executable, "-m", "mrhash", "map", "--index", *map(str, indexes), "--point",
         str(x), str(y), "--crs", crs, "--output", str(tmp_path / "cli.gpkg")],
        capture_output=True, text=True, timeout=300, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    assert f"of {result['n_scored']} tiles" in run.stderr
    with pytest.raises(BadInput, match="a tile id names a tile of one index"):
        sharded = ShardedSearcher([str(i) for i in indexes])
        try:
            map_index(sharded, MapRequest([Example(tile=1)], output=str(tmp_path / "t.gpkg")))
        finally:
            sharded.close()
    assert not (tmp_path / "t.gpkg").exists()
