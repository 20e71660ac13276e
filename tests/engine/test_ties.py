"""Hits of equal Hamming distance ranked by the cosine of the embeddings, across the k
boundary, for the exact and the cells layout and with spatial filters; rank 1's tie group
counted. On indexes whose tie structure is chosen (synthetic codes on a real raster) and on a
real index of EuroSAT tiles with the tiny model."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import shapely
from mrhash.index.build import DB_FILE, build_index
from mrhash.index.embeddings import LATENT_WEIGHT
from mrhash.index.folder import IndexFolder
from mrhash.index.hamming import BinaryIndex, IndexPolicy
from mrhash.raster.geometry import haversine_m
from mrhash.search import searcher as search
from mrhash.search.searcher import Searcher, run_query
from mrhash_contract.protocol import QueryRequest
from test_index_support import TILE, synthetic_index


def _relaxed(n: int = 400, seed: int = 0) -> np.ndarray:
    """Relaxed codes around 4 centres: a third exact copies (big tie groups at distance 0),
    the rest 1-3 bits away; magnitudes random, so cosines differ inside a tie group."""
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1.0, 1.0], (4, 64))
    signs = centres[rng.integers(0, 4, n)]
    flips = rng.random((n, 64)) < rng.choice([0.0, 0.02, 0.05], n)[:, None]
    signs[flips] *= -1
    return signs * rng.uniform(0.05, 1.0, (n, 64))


@pytest.fixture(scope="module")
def tied(tmp_path_factory, eurosat_dir):
    raster = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    return synthetic_index(tmp_path_factory.mktemp("tied") / "index", raster, _relaxed())


def _stored(index_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, packed codes, raw float16 embeddings as float32, box centres) from SQLite."""
    db = sqlite3.connect(index_dir / DB_FILE)
    rows = db.execute("SELECT id, code, embedding, (west + east) / 2, (south + north) / 2 "
                      "FROM tiles ORDER BY id").fetchall()
    db.close()
    ids = np.array([r[0] for r in rows])
    codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), -1)
    raw = np.frombuffer(b"".join(r[2] for r in rows), np.float16).reshape(len(rows), -1)
    return ids, codes, raw.astype(np.float32), np.array([r[3:] for r in rows])


def _unit16(values: np.ndarray, bits: int) -> np.ndarray:
    """Embeddings as the engine keeps them: the code part at length 1 and the latent part at
    LATENT_WEIGHT, joined, at length 1, rounded to float16."""
    def unit(part):
        return part / np.linalg.norm(part, axis=1, keepdims=True)
    joined = unit(np.hstack([unit(values[:, :bits]), LATENT_WEIGHT * unit(values[:, bits:])]))
    return joined.astype(np.float16).astype(np.float32)


def oracle(index_dir, query_id: int, keep=None):
    """Every tile ranked by (distance, -cosine, id), brute force: (ids, distances, scores)."""
    ids, codes, raw, centres = _stored(index_dir)
    q = ids.tolist().index(query_id)
    dist = np.unpackbits(codes ^ codes[q], axis=1).sum(axis=1)
    unit = _unit16(raw, codes.shape[1] * 8)
    scores = unit @ unit[q]
    mask = np.ones(len(ids), bool) if keep is None else keep(centres)
    ids, dist, scores = ids[mask], dist[mask], scores[mask]
    order = np.lexsort((ids, -scores, dist))
    return ids[order], dist[order], scores[order]


def _check(result: dict, expected, k: int) -> None:
    ids, dist, scores = expected
    hits = result["hits"]
    assert [h["id"] for h in hits] == ids[:k].tolist()
    assert [h["distance"] for h in hits] == dist[:k].tolist()
    assert [h["score"] for h in hits] == pytest.approx(scores[:k], abs=1e-4)
    assert result["ties"] == {"distance": int(dist[0]), "count": int((dist == dist[0]).sum()),
                              "capped": False}


def test_ties_are_ordered_by_the_embeddings_across_the_k_boundary(tied):
    ids, codes, raw, _ = _stored(tied)
    searcher = Searcher(tied)
    differs = 0
    try:
        for query_id in ids[::37]:
            expected = oracle(tied, int(query_id))
            for k in (1, 5, 20):
                _check(searcher.search(QueryRequest(tile=int(query_id), k=k)), expected, k)
            # the ranking a tile-id order inside ties would give
            by_id = expected[0][np.lexsort((expected[0], expected[1]))][:20]
            differs += by_id.tolist() != expected[0][:20].tolist()
    finally:
        searcher.close()
    assert differs  # the test tells the two orders apart
    # the score is the cosine of the stored embeddings (float16 precision)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    hits = run_query(tied, QueryRequest(tile=int(ids[3]), k=50))["hits"]
    for hit in hits:
        assert hit["score"] == pytest.approx(float(unit[ids == hit["id"]][0] @ unit[3]),
                                             abs=2e-3)


def test_ties_under_spatial_filters(tied):
    ids, *_ = _stored(tied)
    query_id = int(ids[5])
    area = shapely.box(10.0, 50.0, 10.1, 50.1)  # 10 x ~10 tiles of the grid
    expected = oracle(tied, query_id,
                      lambda c: shapely.contains_xy(area, c[:, 0], c[:, 1]))
    _check(run_query(tied, QueryRequest(tile=query_id, k=8, within=area.wkt)), expected, 8)
    centre = _stored(tied)[3][5]
    expected = oracle(tied, query_id, lambda c: haversine_m(
        centre[0], centre[1], c[:, 0], c[:, 1]) >= 3000)
    _check(run_query(tied, QueryRequest(tile=query_id, k=8, exclude_radius=3000)), expected, 8)


def test_ties_on_the_cells_layout(tied, tmp_path):
    import shutil

    index_dir = tmp_path / "cells"
    shutil.copytree(tied, index_dir)
    folder = IndexFolder(index_dir)
    cells = BinaryIndex(64, IndexPolicy(exact_max_bytes=100 * 8))
    cells.add(*folder.store.all_codes(8))
    cells.optimize()
    assert cells.kind == "ivf"
    cells.save(folder.codes_path, folder.store.generation, folder.store.get("uid"))
    folder.close()
    ids, codes, *_ = _stored(index_dir)
    duplicates = np.unique(codes, axis=0, return_counts=True)
    group = duplicates[0][np.argmax(duplicates[1])]  # the largest exact-copy group
    query_id = int(ids[(codes == group).all(axis=1)][0])
    result = run_query(index_dir, QueryRequest(tile=query_id, k=10))
    assert result["layout"] == "ivf"
    _check(result, oracle(index_dir, query_id), 10)


def test_a_tie_group_beyond_the_shortlist_is_counted(tied, monkeypatch):
    ids, codes, *_ = _stored(tied)
    sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    biggest = int(np.argmax(sizes[2]))
    members = ids[sizes[1].ravel() == biggest]
    assert len(members) > 30
    monkeypatch.setattr(search, "SHORTLIST_MIN", 8)
    result = run_query(tied, QueryRequest(tile=int(members[0]), k=2))
    assert [h["distance"] for h in result["hits"]] == [0, 0]
    assert result["ties"] == {"distance": 0, "count": len(members), "capped": False}
    monkeypatch.setattr(search, "TIE_COUNT_MAX", 20)
    assert run_query(tied, QueryRequest(tile=int(members[0]), k=2))["ties"] == {
        "distance": 0, "count": 20, "capped": True}
    # with a filter the count stops at what the search saw: a lower bound
    filtered = run_query(tied, QueryRequest(tile=int(members[0]), k=2, exclude_radius=1))["ties"]
    assert filtered["capped"] and filtered["count"] >= 8


def test_real_index_hits_are_ranked_by_distance_then_score(tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    result = run_query(index_dir, QueryRequest(tile=6, k=36))
    keys = [(h["distance"], -h["score"]) for h in result["hits"]]
    assert keys == sorted(keys)
    assert result["hits"][0]["id"] == 6 and result["hits"][0]["score"] == pytest.approx(1, 1e-3)
    _check(result, oracle(index_dir, 6), 36)
    # a point query encodes its patch: the tile under it scores ~1 against it
    tile = IndexFolder(index_dir).store.tiles([6])[6]
    x, y = (tile.bounds[0] + tile.bounds[2]) / 2, (tile.bounds[1] + tile.bounds[3]) / 2
    by_point = run_query(index_dir, QueryRequest(point=(x, y), crs=tile.crs, k=3))
    first = [h for h in by_point["hits"] if h["id"] == 6][0]
    assert first["distance"] == 0 and first["score"] == pytest.approx(1, abs=2e-3)
    assert by_point["ties"]["distance"] == 0 and by_point["ties"]["count"] >= 1
