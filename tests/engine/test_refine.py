"""Relevance feedback on a real index of EuroSAT tiles (tiny model): the whole index re-ranked
by the logistic score of the marked examples against background tiles (checked against the
same objective minimised by scipy) blended with label propagation on the shortlist's graph
(checked against its closed form), marked tiles excluded, point / footprint examples, the
`within` filter, bad requests, the CLI and the result format of `query`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import shapely
from mrhash.errors import BadInput, user_error
from mrhash.index.folder import IndexFolder
from mrhash.search.refine import (
    ALPHA,
    BACKGROUND_WEIGHT,
    BIAS_L2,
    L2,
    NEGATIVE_WEIGHT,
    NEIGHBOURS,
    PROPAGATION_WEIGHT,
    logistic,
    refine,
    rocchio,
    top_k,
)
from mrhash.search.searcher import Searcher, run_query
from mrhash_contract.protocol import Example, QueryRequest, RefineRequest, RequestError
from scipy.optimize import minimize
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


def expected(index_dir, relevant: list[int], irrelevant: list[int], exclude: bool = True):
    """Brute force: the regularised logistic objective of the module doc minimised by
    L-BFGS, with every tile as background (the index holds fewer than BACKGROUND_TILES), then
    blended with label propagation solved in closed form on the graph of the examples and
    every (unmarked) tile, the shortlist; -> (ids, scores) of the shortlist best first, and
    each tile's Hamming distance to the relevant codes."""
    ids, codes, raw, _ = _stored(index_dir)
    unit = _unit16(raw, codes.shape[1] * 8)
    rows = {int(i): n for n, i in enumerate(ids)}
    examples = unit[[rows[i] for i in relevant + irrelevant]].astype(np.float64)
    x = np.hstack([np.vstack([examples, unit]), np.ones((len(examples) + len(ids), 1))])
    target = np.r_[np.ones(len(relevant)), np.zeros(len(irrelevant) + len(ids))]
    weight = np.r_[np.ones(len(relevant) + len(irrelevant)), np.full(len(ids), BACKGROUND_WEIGHT)]
    penalty = np.r_[np.full(x.shape[1] - 1, L2), BIAS_L2]

    def objective(w):
        margin = x @ w
        loss = weight * (np.logaddexp(0, margin) - target * margin)
        gradient = x.T @ (weight * (1 / (1 + np.exp(-margin)) - target)) + penalty * w
        return loss.sum() + 0.5 * penalty @ (w * w), gradient

    w = minimize(objective, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                 options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000}).x
    short = ~np.isin(ids, relevant + irrelevant) if exclude else np.ones(len(ids), bool)
    logistic_scores = unit[short] @ w[:-1]
    labels = np.r_[np.ones(len(relevant)), np.full(len(irrelevant), -NEGATIVE_WEIGHT),
                   np.zeros(short.sum())]
    propagated = closed_form_propagation(np.vstack([examples, unit[short]]), labels)
    scores = _z(logistic_scores) + PROPAGATION_WEIGHT * _z(propagated[len(examples):])
    order = np.lexsort((ids[short], -scores))
    relevant_codes = codes[[rows[i] for i in relevant]]
    distance = {int(i): int(np.unpackbits(relevant_codes ^ codes[n], axis=1).sum(1).min())
                for n, i in enumerate(ids)}
    return ids[short][order], scores[order], distance


def _z(values):
    return (values - values.mean()) / (values.std() + 1e-12)


def closed_form_propagation(nodes, labels):
    """The fixed point of f = ALPHA S f + (1 - ALPHA) labels on the mutual NEIGHBOURS-NN graph
    (edge weights cosine³, S normalised symmetrically), by one linear solve."""
    similarity = nodes @ nodes.T
    np.fill_diagonal(similarity, -np.inf)
    near = np.argsort(-np.round(similarity, 6), axis=1, kind="stable")[:, :NEIGHBOURS]
    graph = np.zeros_like(similarity)
    for i, row in enumerate(near):
        graph[i, row] = np.clip(similarity[i, row], 0, None) ** 3
    graph = np.minimum(graph, graph.T)
    degree = np.sqrt(graph.sum(axis=1))
    graph /= np.outer(degree, degree)
    return np.linalg.solve(np.eye(len(nodes)) - ALPHA * graph, (1 - ALPHA) * labels)


def assert_ranked(hits: list[dict], ids: np.ndarray, scores: np.ndarray) -> None:
    """The hits are the oracle's best in its order, with its scores; tiles whose oracle scores
    differ by less than the solvers' tolerance may swap."""
    oracle = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert [h["score"] for h in hits] == pytest.approx([oracle[h["id"]] for h in hits],
                                                       abs=1e-4)
    got = [oracle[h["id"]] for h in hits]
    assert all(a >= b - 2e-4 for a, b in zip(got, got[1:], strict=False))
    assert min(got) >= scores[len(hits) - 1] - 2e-4  # nothing better was left out


def _request(relevant, irrelevant=(), **options) -> RefineRequest:
    return RefineRequest([Example(relevant=True, tile=i) for i in relevant]
                         + [Example(relevant=False, tile=i) for i in irrelevant], **options)


def test_refine_reranks_the_whole_index_and_excludes_the_marked_tiles(index_dir, searcher):
    relevant, irrelevant = [6, 20], [7, 30, 31]
    result = refine(searcher, _request(relevant, irrelevant, k=36))
    ids, scores, distance = expected(index_dir, relevant, irrelevant)
    hits = result["hits"]
    assert len(hits) == 31  # 36 tiles, 5 marked
    assert {h["id"] for h in hits} == set(ids.tolist())
    assert_ranked(hits, ids, scores)
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
    assert_ranked(kept["hits"], *expected(index_dir, relevant, irrelevant, exclude=False)[:2])
    assert len(kept["hits"]) == 36
    assert len(refine(searcher, _request(relevant, k=4))["hits"]) == 4


def test_an_irrelevant_mark_pushes_its_tile_down(searcher):
    """The tile most like the query, marked irrelevant (and left in the results), falls
    behind the query and never rises."""
    def scores(irrelevant):
        hits = refine(searcher, _request([6], irrelevant, k=36, exclude_examples=False))["hits"]
        return [h["id"] for h in hits], {h["id"]: h["score"] for h in hits}
    alone, before = scores([])
    near = alone[1]  # alone[0] is the query itself
    marked, after = scores([near])
    assert marked.index(near) > alone.index(near)
    assert after[6] - after[near] > before[6] - before[near]


def test_a_k_past_the_shortlist_continues_in_logistic_order(searcher, monkeypatch):
    """The propagation's graph is bounded (SHORTLIST tiles); further hits follow in the
    logistic order, below the shortlist, scores still decreasing."""
    from mrhash.search import refine as refine_module

    monkeypatch.setattr(refine_module, "SHORTLIST", 10)
    request = _request([6, 20], [7], k=30)
    hits = refine(searcher, request)["hits"]
    plain = [h["id"] for h in refine(searcher, request, propagation_weight=0)["hits"]]
    assert len(hits) == 30 and {h["id"] for h in hits[:10]} == set(plain[:10])
    assert [h["id"] for h in hits[10:]] == plain[10:]
    scores = [h["score"] for h in hits]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))


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
            refine(searcher, RefineRequest.from_params(params))
        assert isinstance(user_error(raised.value), BadInput)


def test_scorers_and_top_k():
    relevant = np.array([[1.0, 0.0], [0.0, 1.0]])
    none = np.zeros((0, 2))
    # logistic: toward the relevant, away from the irrelevant; finite with nothing to oppose
    weights = logistic(relevant[:1], relevant[1:], none)
    assert weights[0] > 0 > weights[1]
    alone = logistic(relevant[:1], none, none)
    assert np.isfinite(alone).all() and alone[0] > 0 and alone[1] == pytest.approx(0)
    background = np.array([[0.6, 0.8], [0.8, 0.6], [-1.0, 0.0]])
    assert np.isfinite(logistic(relevant, none, background)).all()
    # Rocchio (the scorer before, kept for the benchmark's side-by-side)
    assert np.allclose(rocchio(relevant, none), [2 ** -0.5, 2 ** -0.5])
    assert np.allclose(rocchio(relevant[:1], relevant[1:]), [1 / 1.25 ** 0.5, -0.5 / 1.25 ** 0.5])
    # an irrelevant example equal to the relevant one does not cancel everything
    assert np.allclose(rocchio(relevant[:1], relevant[:1], negative_weight=1.0), [1, 0])
    scores = np.array([0.5, -np.inf, 0.9, 0.5, 0.1])
    ids = np.array([10, 11, 12, 9, 13])
    assert top_k(scores, ids, 3).tolist() == [2, 3, 0]  # equal scores: smaller id first
    assert top_k(scores, ids, 10).tolist() == [2, 3, 0, 4]  # never an excluded one
    # ...also across the k-th place, whatever argpartition picked there
    tied = np.array([0.5] * 50 + [0.9])
    assert top_k(tied, np.arange(100, 49, -1), 3).tolist() == [50, 49, 48]


def test_refine_command(index_dir, tmp_path):
    out = tmp_path / "refined.json"
    run = subprocess.run([sys.executable, "-m", "mrhash", "refine", "--index", str(index_dir),
                          "--positive", "6", "20", "--negative", "7", "-k", "5", "--json",
                          str(out)], capture_output=True, text=True, timeout=120,
                         env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert_ranked(result["hits"], *expected(index_dir, [6, 20], [7])[:2])
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
