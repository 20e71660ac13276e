"""Relevance feedback ("refine"): the analyst marks hits (or places) as relevant or not, and
the whole index is re-ranked by a linear score of the tiles' embeddings (embeddings.py: the
relaxed code joined with the multisource autoencoder's latent).

Scorer (`logistic`): an L2-regularised logistic regression of the relevant examples against
the irrelevant ones and BACKGROUND_TILES random tiles of the scored pool as weak negatives
(each weighs BACKGROUND_WEIGHT of a mark): the background says what an ordinary tile looks
like, so the marked irrelevant tiles, which are the query's near neighbours, no longer cancel
the query's own direction, as they did in a classifier of the marks alone (P@20 0.32). The fit
is at most NEWTON_STEPS Newton steps (about 10 in practice) in bits + latent + 1 dimensions
over about 200 rows; every tile is then scored (one BLAS pass over the table) and the best
SHORTLIST taken with one argpartition, so the cost is linear in the index and needs no search
structure. (A k above SHORTLIST gets the further hits in logistic order, below the shortlist.)

Then label propagation (`propagated`): the examples' labels spread over the mutual k-NN graph
of the examples and the shortlist, so a tile like the tiles like the examples rises too; the
hits are ranked by the two scores blended (z-scored, PROPAGATION_WEIGHT). On the 200 real
EuroSAT-MS images (14 models; docs/BENCHMARKS.md, *Refine*) 3 + 3 marks lift P@20 of the
unmarked hits from 0.532 (the first ranking without the marked tiles) to 0.639 (+0.108); the
logistic score alone gave 0.631, and Rocchio on the codes (the scorer before) 0.610.

Examples are tiles (by id), points (+ crs, + raster) or footprints (+ footprint_crs, +
raster), encoded as queries are (search.py). With `exclude_examples` (the default) marked
tiles never come back: tile examples by id, and for a point or footprint the indexed tiles
whose EPSG:4326 box holds its centre.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from mrhash_contract.protocol import Example, MarkedPlace, RefineRequest

from mrhash.errors import BadInput, OutsideIndex, validated
from mrhash.raster.geometry import parse_wkt
from mrhash.search.searcher import Probe, Searcher

NEGATIVE_WEIGHT = 0.5  # an irrelevant example's weight beside a relevant one's (Rocchio's
# gamma with beta = 1; minus the label of an irrelevant node in the propagation)
BACKGROUND_TILES = 200  # random tiles of the pool, the logistic scorer's weak negatives
BACKGROUND_WEIGHT = 0.02  # a background tile's weight in the fit (a marked example's: 1)
L2 = 0.1  # ridge penalty on the logistic weights (the bias gets BIAS_L2)
BIAS_L2 = 1e-3  # keeps the bias finite when every example is relevant and the pool is empty
NEWTON_STEPS = 40
SHORTLIST = 150  # best-scored tiles re-ranked on their neighbour graph (any k beyond: as scored)
NEIGHBOURS = 15  # edges per node of that graph
ALPHA = 0.7  # propagation: the share a node takes from its neighbours at each step
PROPAGATION_WEIGHT = 0.5  # of the propagated labels beside the logistic score (both z-scored)
PROPAGATION_STEPS = 40  # ALPHA ** 40 < 1e-6: the fixed point, near enough
# Scorer: (relevant [n, dim], irrelevant [m, dim], background [b, dim]) -> weights [dim]
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def logistic_fit(relevant: np.ndarray, irrelevant: np.ndarray, background: np.ndarray
                 ) -> tuple[np.ndarray, float]:
    """(weights, bias) of the regularised logistic regression (module doc), fitted by
    Newton's method: sigmoid(unit @ weights + bias) is the model's own probability that a
    tile is relevant (`mrhash map` thresholds it). When nothing told the examples apart, the
    relevant mean, biased so that the least relevant example sits at 0.5."""
    x = np.vstack([relevant, irrelevant, background]).astype(np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    target = np.r_[np.ones(len(relevant)), np.zeros(len(irrelevant) + len(background))]
    weight = np.r_[np.ones(len(relevant) + len(irrelevant)),
                   np.full(len(background), BACKGROUND_WEIGHT)]
    penalty = np.r_[np.full(x.shape[1] - 1, L2), BIAS_L2]
    w = np.zeros(x.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (weight * (p - target)) + penalty * w
        hessian = x.T @ (x * (weight * p * (1 - p))[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    if np.linalg.norm(w[:-1]) < 1e-9:  # nothing told the examples apart: their mean
        mean = relevant.mean(axis=0).astype(np.float32)
        return mean, -float((relevant @ mean).min())
    return w[:-1].astype(np.float32), float(w[-1])


def logistic(relevant: np.ndarray, irrelevant: np.ndarray, background: np.ndarray
             ) -> np.ndarray:
    """The weights of `logistic_fit`; the bias is dropped (it does not change the order)."""
    return logistic_fit(relevant, irrelevant, background)[0]


def propagated(nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label propagation (Zhou et al. 2004) on the mutual k-NN graph of `nodes` [n, dim] (unit
    rows; edge weight cosine³): f = ALPHA S f + (1 - ALPHA) labels, S the symmetrically
    normalised graph."""
    similarity = nodes.astype(np.float64) @ nodes.T.astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    k = min(NEIGHBOURS, len(nodes) - 1)
    # rounded, stable: equal similarities (a marked tile that is also an example node) pick
    # the same neighbours whatever the last bits of the products
    near = np.argsort(-np.round(similarity, 6), axis=1, kind="stable")[:, :k]
    graph = np.zeros_like(similarity)
    rows = np.repeat(np.arange(len(nodes)), k)
    graph[rows, near.ravel()] = np.clip(similarity[rows, near.ravel()], 0, None) ** 3
    graph = np.minimum(graph, graph.T)
    degree = np.sqrt(graph.sum(axis=1)).clip(1e-12)
    graph /= degree[:, None] * degree[None, :]
    f = labels.astype(np.float64)
    for _ in range(PROPAGATION_STEPS):
        f = ALPHA * (graph @ f) + (1 - ALPHA) * labels
    return f


def _z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() + 1e-12)


def rocchio(relevant: np.ndarray, irrelevant: np.ndarray, background: np.ndarray | None = None,
            negative_weight: float = NEGATIVE_WEIGHT) -> np.ndarray:
    """Unit weight vector from the examples' embeddings [n, dim]: the mean of the relevant
    minus `negative_weight` x the mean of the irrelevant (the background is not used)."""
    weights = relevant.mean(axis=0)
    if len(irrelevant):
        weights = weights - negative_weight * irrelevant.mean(axis=0)
    norm = float(np.linalg.norm(weights))
    # irrelevant examples equal to the relevant ones cancel them out: keep the relevant mean
    return weights / norm if norm > 1e-6 else relevant.mean(axis=0)


def _hamming(code: bytes, codes: np.ndarray) -> int:
    """Smallest Hamming distance from `code` to any of `codes` [n, bytes]."""
    xor = np.bitwise_xor(np.frombuffer(code, np.uint8)[None], codes)
    return int(np.unpackbits(xor, axis=1).sum(axis=1).min())


def marked_tiles(searcher: Searcher, examples: list[tuple[Example, Probe]]
                 ) -> dict[int, bool]:
    """The tiles the examples mark, each with its mark (relevant: True): the tile itself, or
    the tiles holding the centre of a point's or footprint's patch (a later mark of a tile
    wins)."""
    marks: dict[int, bool] = {}
    for example, probe in examples:
        if example.tile is not None:
            marks[example.tile] = example.relevant
        else:
            lon, lat = probe.centre4326()
            for tile in searcher.folder.store.ids_within((lon, lat, lon, lat))[0].tolist():
                marks[int(tile)] = example.relevant
    return marks


def _probe_in(shards: list[Searcher], example: Example) -> Probe:
    """The example encoded by the first index holding its place (or reading its raster)."""
    for shard in shards:
        try:
            return shard.probe(example)
        except OutsideIndex:
            continue
    raise OutsideIndex(f"an example is outside every raster of the {len(shards)} indexes; "
                       "give the raster to read it from")


def _background(table, rows: np.ndarray | None, count: int = BACKGROUND_TILES) -> np.ndarray:
    """Embeddings of `count` tiles drawn from the pool (the same ones for the same pool, so a
    refine repeated gives the same hits)."""
    n = len(table) if rows is None else len(rows)
    pick = np.sort(np.random.default_rng(0).choice(n, min(count, n), replace=False))
    return table.unit[pick if rows is None else rows[pick]]


def _pool(searcher: Searcher, within: str | None) -> np.ndarray | None:
    """Rows of the embedding table to score: None = all, else the tiles whose footprint
    centre lies in `within`."""
    if not within:
        return None
    area = parse_wkt(within, "within area")
    ids, centres = searcher.folder.store.ids_within(area.bounds)
    inside = shapely.contains_xy(area, centres[:, 0], centres[:, 1]) if len(ids) else []
    rows = searcher.embeddings.positions(ids[inside])
    return rows[rows >= 0]


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best finite scores, best first (equal scores: smaller id first,
    also across the k-th place); one argpartition over the whole array (excluded tiles score
    -inf), then every score equal to the k-th joins before the sort."""
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.isfinite(scores[part])]
    if len(part):
        kth = scores[part].min()
        part = np.union1d(part, np.flatnonzero(scores == kth))
    return part[np.lexsort((ids[part], -scores[part]))][:k]


def _exclude(scores: np.ndarray, ids: np.ndarray, marked: np.ndarray) -> None:
    """Scores of the marked tiles -> -inf (`ids` ascending: a binary search each, where
    np.isin would compare every one of 1M ids with each mark)."""
    if not len(ids) or not len(marked):
        return
    pos = np.searchsorted(ids, marked).clip(0, len(ids) - 1)
    scores[pos[ids[pos] == marked]] = -math.inf


def _blend_propagation(table, shortlist_rows: np.ndarray, shortlist_scores: np.ndarray,
                       probes: list[tuple[Example, Probe]], weight: float) -> np.ndarray:
    """The shortlist's scores (z-scored) + `weight` x the labels propagated from the examples
    over the graph of the examples and the shortlist (z-scored)."""
    examples = np.vstack([p.embedding for _, p in probes])
    labels = np.r_[[1.0 if e.relevant else -NEGATIVE_WEIGHT for e, _ in probes],
                   np.zeros(len(shortlist_rows))]
    nodes = np.vstack([examples, table.unit[shortlist_rows]])
    return _z(shortlist_scores) + weight * _z(propagated(nodes, labels)[len(examples):])


@dataclass
class Marks:
    """A refine request's examples encoded, and the pool they are scored against: what the
    scorer is fitted on, shared by `refine` and `mrhash map` (mapping.py) so that a tile
    scores the same in both."""

    probes: list[tuple[Example, Probe]]
    rows: np.ndarray | None           # the pool's rows of the embedding table; None: all
    background: np.ndarray            # [b, dim] unit embeddings of the pool's background tiles

    @classmethod
    def of(cls, searcher: Searcher, request: RefineRequest) -> Marks:
        """The request validated (BadInput), the examples encoded (an unknown tile id, a
        point off the index: BadInput), the pool drawn."""
        validated(request)
        searcher.check_not_empty()
        probes = [(e, searcher.probe(e)) for e in request.examples]
        rows = _pool(searcher, request.within)
        return cls(probes, rows, _background(searcher.embeddings, rows))

    @classmethod
    def of_shards(cls, shards: list[Searcher], request: RefineRequest) -> list[Marks]:
        """The marks over several indexes of one model mapped as one: the examples encoded
        once (each read by the first index holding its place; a tile id names a tile of one
        index, so several indexes take points and footprints only), one background drawn
        from every pool in proportion to its size, and each index's own pool: one Marks an
        index, all fitting the same scorer."""
        if len(shards) == 1:
            return [cls.of(shards[0], request)]
        validated(request)
        if any(e.tile is not None for e in request.examples):
            raise BadInput("a tile id names a tile of one index: map that index alone, or "
                           "give the examples of several as points or footprints")
        probes = [(e, _probe_in(shards, e)) for e in request.examples]
        pools = [_pool(shard, request.within) for shard in shards]
        sizes = [len(s.embeddings) if rows is None else len(rows)
                 for s, rows in zip(shards, pools, strict=True)]
        if not sum(sizes):
            raise BadInput("the indexes hold no tiles (in the area given): index a folder "
                           "with rasters first")
        background = np.vstack([_background(s.embeddings, rows, round(BACKGROUND_TILES * n
                                                                      / sum(sizes)))
                                for s, rows, n in zip(shards, pools, sizes, strict=True)])
        return [cls(probes, rows, background) for rows in pools]

    @property
    def relevant(self) -> list[Probe]:
        return [p for e, p in self.probes if e.relevant]

    @property
    def irrelevant(self) -> list[Probe]:
        return [p for e, p in self.probes if not e.relevant]

    def fit_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(relevant [n, dim], irrelevant [m, dim], background [b, dim]): a Scorer's input."""
        dim = self.background.shape[1]
        irrelevant = [p.embedding for p in self.irrelevant]
        return (np.stack([p.embedding for p in self.relevant]),
                np.stack(irrelevant) if irrelevant else np.zeros((0, dim), np.float32),
                self.background)


def refine(searcher: Searcher, request: RefineRequest, scorer: Scorer = logistic,
           propagation_weight: float = PROPAGATION_WEIGHT) -> dict:
    """The QueryResult of a refine request as the worker sends it (see the module doc);
    `scorer` and `propagation_weight` (0: none) are what the benchmark compares."""
    started = time.perf_counter()
    marks = Marks.of(searcher, request)
    probes, relevant, irrelevant, rows = marks.probes, marks.relevant, marks.irrelevant, marks.rows
    table = searcher.embeddings
    weights = scorer(*marks.fit_arrays())
    ids = table.ids if rows is None else table.ids[rows]
    scores = table.scores(weights, rows)
    if request.exclude_examples:
        _exclude(scores, ids, np.fromiter(marked_tiles(searcher, probes), np.int64))
    best = top_k(scores, ids, max(SHORTLIST, request.k) if propagation_weight else request.k)
    final = scores[best]
    if propagation_weight and len(best):
        head = best[:SHORTLIST]  # a bounded graph whatever k: hits past it keep their order
        blended = _blend_propagation(table, head if rows is None else rows[head],
                                     final[:SHORTLIST], probes, propagation_weight)
        order = np.lexsort((ids[head], -blended))
        # past the shortlist: below it, the logistic gaps on the shortlist's z scale
        rest = final[SHORTLIST:]  # best first
        tail = blended.min() - 1e-3 - (rest[:1] - rest) / (final[:SHORTLIST].std() + 1e-12)
        best = np.r_[head[order], best[SHORTLIST:]][:request.k]
        final = np.r_[blended[order], tail][:request.k]
    codes = np.concatenate([p.code for p in relevant])
    ranked = [(0, int(ids[j]), float(value)) for j, value in zip(best, final, strict=True)]
    hits = searcher.hits(ranked, request.thumbnails,
                         distance=lambda record: _hamming(record.code, codes))
    query = searcher.describe(relevant[0], request.thumbnails)
    query.n_relevant, query.n_irrelevant = len(relevant), len(irrelevant)
    query.examples = [MarkedPlace(e.relevant, p.about["path"], list(p.footprint.bounds),
                                  p.footprint.crs, p.about.get("tile")) for e, p in probes]
    return searcher.result(query, hits, started, None).to_result()
