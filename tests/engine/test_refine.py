"""Relevance feedback on a real index of EuroSAT tiles (tiny model): the whole index re-ranked
by the Rocchio score of the marked examples, marked tiles excluded, point / footprint
examples, the `within` filter, bad requests, the CLI and the result format of `query`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import shapely
from mrhash.errors import BadInput, user_error
from mrhash.indexer import IndexFolder
from mrhash.refine import NEGATIVE_WEIGHT, refine, rocchio, top_k
from mrhash.search import Searcher, run_query
from mrhash_contract.protocol import Example, QueryRequest, RefineRequest, RequestError
from test_index_support import THREADS_ENV, indexed_folder
from test_ties import _stored, _unit16


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, eurosat_dir):
    return indexed_folder(tmp_path_factory, eurosat_dir, "refine")


@pytest.fixture
def searcher(index_dir):
    searcher = Searcher(index_dir)
    yield searcher
    searcher.close()


def expected(index_dir, relevant: list[int], irrelevant: list[int]):
    """Brute force: every tile's cosine with mean(relevant) - w mean(irrelevant)."""
    ids, codes, raw, _ = _stored(index_dir)
    unit = _unit16(raw)
    rows = {int(i): n for n, i in enumerate(ids)}
    weights = unit[[rows[i] for i in relevant]].mean(axis=0)
    if irrelevant:
        weights -= NEGATIVE_WEIGHT * unit[[rows[i] for i in irrelevant]].mean(axis=0)
    scores = unit @ (weights / np.linalg.norm(weights))
    order = np.lexsort((ids, -scores))
    relevant_codes = codes[[rows[i] for i in relevant]]
    distance = {int(i): int(np.unpackbits(relevant_codes ^ codes[n], axis=1).sum(1).min())
                for n, i in enumerate(ids)}
    return ids[order], scores[order], distance


def _request(relevant, irrelevant=(), **options) -> RefineRequest:
    return RefineRequest([Example(relevant=True, tile=i) for i in relevant]
                         + [Example(relevant=False, tile=i) for i in irrelevant], **options)


def test_refine_reranks_the_whole_index_and_excludes_the_marked_tiles(index_dir, searcher):
    relevant, irrelevant = [6, 20], [7, 30, 31]
    result = refine(searcher, _request(relevant, irrelevant, k=36))
    ids, scores, distance = expected(index_dir, relevant, irrelevant)
    keep = ~np.isin(ids, relevant + irrelevant)
    hits = result["hits"]
    assert len(hits) == 31  # 36 tiles, 5 marked
    assert [h["id"] for h in hits] == ids[keep].tolist()
    assert [h["score"] for h in hits] == pytest.approx(scores[keep], abs=1e-4)
    assert [h["rank"] for h in hits] == list(range(1, 32))
    assert all(h["distance"] == distance[h["id"]] for h in hits)
    # the same format as a query's result (the plugin reads these keys)
    query = run_query(index_dir, QueryRequest(tile=6, k=3))
    assert set(result) == set(query) and set(hits[0]) == set(query["hits"][0])
    assert result["ties"] is None and result["n_tiles"] == 36
    about = result["query"]
    assert about["n_relevant"] == 2 and about["n_irrelevant"] == 3 and about["tile"] == 6
    assert about["code"] == query["query"]["code"] and about["footprint"]["type"] == "Polygon"
    assert [e["relevant"] for e in about["examples"]] == [True, True, False, False, False]
    json.dumps(result)
    # marked tiles may come back when asked; k caps the hits
    kept = refine(searcher, _request(relevant, irrelevant, k=36, exclude_examples=False))
    assert [h["id"] for h in kept["hits"]] == ids.tolist()
    assert len(refine(searcher, _request(relevant, k=4))["hits"]) == 4


def test_an_irrelevant_example_never_lifts_the_tile_most_like_it(index_dir, searcher):
    """Rocchio: score(x) ~ cos(x, relevant) - w cos(x, irrelevant). The tile most like the
    irrelevant example loses the most, so no tile that ranked above it falls below it."""
    alone = refine(searcher, _request([6], k=36))["hits"]
    near = alone[0]["id"]  # the tile most like the relevant one, marked irrelevant
    ids, _, raw, _ = _stored(index_dir)
    unit = _unit16(raw)
    likeness = unit @ unit[ids.tolist().index(near)]
    likeness[np.isin(ids, [6, near])] = -2
    most_like = int(ids[np.argmax(likeness)])
    before = [h["id"] for h in alone]
    after = [h["id"] for h in refine(searcher, _request([6], [near], k=36))["hits"]]
    above = set(before[:before.index(most_like)]) - {near}
    assert above <= set(after[:after.index(most_like)])


def test_point_and_footprint_examples(index_dir, searcher):
    tile = IndexFolder(index_dir).store.tiles([10])[10]
    x, y = (tile.bounds[0] + tile.bounds[2]) / 2, (tile.bounds[1] + tile.bounds[3]) / 2
    by_point = refine(searcher, RefineRequest([Example(relevant=True, point=(x, y), crs=tile.crs)],
                                              k=36))
    by_tile = refine(searcher, _request([10], k=36))
    # the patch at the tile's centre is that tile: the same ranking, tile 10 excluded
    assert [h["id"] for h in by_point["hits"]] == [h["id"] for h in by_tile["hits"]]
    assert 10 not in [h["id"] for h in by_point["hits"]] and len(by_point["hits"]) == 35
    assert by_point["query"]["path"] == tile.path and "tile" not in by_point["query"]
    box = shapely.box(*tile.bounds).wkt
    by_box = refine(searcher, RefineRequest([Example(relevant=True, footprint=box,
                                                     footprint_crs=tile.crs)], k=5))
    assert [h["id"] for h in by_box["hits"]] == [h["id"] for h in by_tile["hits"]][:5]


def test_within_keeps_refined_hits_in_the_area(index_dir, searcher):
    record = IndexFolder(index_dir).store.tiles([1])[1]
    west, south, east, north = record.bounds4326
    area = shapely.box(west - 0.02, south - 0.02, east + 0.02, north + 0.02)
    hits = refine(searcher, _request([6], k=36, within=area.wkt))["hits"]
    assert hits and len(hits) < 35
    _, _, _, centres = _stored(index_dir)
    ids = _stored(index_dir)[0]
    inside = set(ids[shapely.contains_xy(area, centres[:, 0], centres[:, 1])].tolist()) - {6}
    assert {h["id"] for h in hits} == inside


def test_bad_refine_requests(searcher):
    cases = [({"examples": [{"relevant": False, "tile": 3}]}, "at least one relevant"),
             ({"examples": []}, "at least one relevant"),
             ({"examples": "6"}, "needs examples"),
             ({"examples": [{"tile": 3}]}, "example 1 needs relevant"),
             ({"examples": [{"relevant": True}]}, "example 1: give exactly one"),
             ({"examples": [{"relevant": True, "tile": 3}], "k": 0}, "k must be"),
             ({"examples": [{"relevant": True, "tile": 99999}]}, "no tile with id 99999"),
             ({"examples": [{"relevant": True, "point": [-120, -45]}]}, "outside every"),
             ({"examples": [{"relevant": True, "tile": "x"}]}, "bad place")]
    for params, message in cases:
        # read (RequestError) or checked by the engine: a BadInput (or finer) error either way
        with pytest.raises((RequestError, BadInput), match=message) as raised:
            searcher.refine(RefineRequest.from_params(params))
        assert isinstance(user_error(raised.value), BadInput)


def test_scorer_and_top_k():
    relevant = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(rocchio(relevant, np.zeros((0, 2))), [2 ** -0.5, 2 ** -0.5])
    assert np.allclose(rocchio(relevant[:1], relevant[1:]), [1 / 1.25 ** 0.5, -0.5 / 1.25 ** 0.5])
    # an irrelevant example equal to the relevant one does not cancel everything
    assert np.allclose(rocchio(relevant[:1], relevant[:1], negative_weight=1.0), [1, 0])
    scores = np.array([0.5, -np.inf, 0.9, 0.5, 0.1])
    ids = np.array([10, 11, 12, 9, 13])
    assert top_k(scores, ids, 3).tolist() == [2, 3, 0]  # equal scores: smaller id first
    assert top_k(scores, ids, 10).tolist() == [2, 3, 0, 4]  # never an excluded one


def test_refine_command(index_dir, tmp_path):
    out = tmp_path / "refined.json"
    run = subprocess.run([sys.executable, "-m", "mrhash", "refine", "--index", str(index_dir),
                          "--positive", "6", "20", "--negative", "7", "-k", "5", "--json",
                          str(out)], capture_output=True, text=True, timeout=120,
                         env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    ids, _, _ = expected(index_dir, [6, 20], [7])
    assert [h["id"] for h in result["hits"]] == [i for i in ids if i not in (6, 20, 7)][:5]
    tile = IndexFolder(index_dir).store.tiles([10])[10]
    x, y = (tile.bounds[0] + tile.bounds[2]) / 2, (tile.bounds[1] + tile.bounds[3]) / 2
    run = subprocess.run([sys.executable, "-m", "mrhash", "refine", "--index", str(index_dir),
                          "--point", str(x), str(y), "--crs", tile.crs, "-k", "3"],
                         capture_output=True, text=True, timeout=120, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["query"]["n_relevant"] == 1
    bad = subprocess.run([sys.executable, "-m", "mrhash", "refine", "--index", str(index_dir),
                          "--negative", "7"], capture_output=True, text=True, timeout=120,
                         env=THREADS_ENV)
    assert bad.returncode == 2 and "at least one relevant" in bad.stderr
    assert "Traceback" not in bad.stderr
