"""Relevance feedback ("refine"): the analyst marks hits (or places) as relevant or not, and
the whole index is re-ranked by a linear score of the tiles' embeddings (embeddings.py).

Scorer (Rocchio): w = mean of the relevant examples' unit embeddings - NEGATIVE_WEIGHT x mean
of the irrelevant ones'; a tile's score is the cosine of its embedding with w. On the 200 real
EuroSAT-MS images (3 seeds) 3 + 3 marks lifted P@20 of the unmarked hits from 0.501 (the first
ranking without the marked tiles) to 0.599; the irrelevant mean at full weight, or a
regularised logistic regression on the same few examples, fell to 0.32: the marked irrelevant
tiles are the query's near neighbours and cancel its direction (docs/BENCHMARKS.md,
scripts/bench_refine.py). Every tile is scored (one BLAS pass over the table: 8 ms at 1M
tiles) and the top k taken with one argpartition, so the cost is linear in the index and
needs no search structure (21 ms a refine at 1M tiles).

Examples are tiles (by id), points (+ crs, + raster) or footprints (+ footprint_crs, +
raster), encoded as queries are (search.py). With `exclude_examples` (the default) marked
tiles never come back: tile examples by id, and for a point or footprint the indexed tiles
whose EPSG:4326 box holds its centre.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import shapely
from mrhash_contract.protocol import Example, RefineRequest

from mrhash.errors import validated
from mrhash.search import Probe, Searcher, _parse_wkt

NEGATIVE_WEIGHT = 0.5  # Rocchio's gamma (beta = 1): weight of the irrelevant examples' mean
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def rocchio(relevant: np.ndarray, irrelevant: np.ndarray,
            negative_weight: float = NEGATIVE_WEIGHT) -> np.ndarray:
    """Unit weight vector from unit embeddings [n, bits] of the examples."""
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


def _marked_tiles(searcher: Searcher, examples: list[tuple[Example, Probe]]) -> np.ndarray:
    """Ids of the tiles the examples mark: the tile itself, or the tiles holding the centre
    of a point's or footprint's patch."""
    ids: list[int] = []
    for example, probe in examples:
        if example.tile is not None:
            ids.append(example.tile)
        else:
            lon, lat = probe.centre4326()
            ids += searcher.folder.store.ids_within((lon, lat, lon, lat))[0].tolist()
    return np.asarray(ids, np.int64)


def _pool(searcher: Searcher, within: str | None) -> np.ndarray | None:
    """Rows of the embedding table to score: None = all, else the tiles whose footprint
    centre lies in `within`."""
    if not within:
        return None
    area = _parse_wkt(within, "within area")
    ids, centres = searcher.folder.store.ids_within(area.bounds)
    inside = shapely.contains_xy(area, centres[:, 0], centres[:, 1]) if len(ids) else []
    rows = searcher.embeddings.positions(ids[inside])
    return rows[rows >= 0]


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best finite scores, best first (equal scores: smaller id first);
    one argpartition over the whole array (excluded tiles score -inf)."""
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.isfinite(scores[part])]
    return part[np.lexsort((ids[part], -scores[part]))]


def _exclude(scores: np.ndarray, ids: np.ndarray, marked: np.ndarray) -> None:
    """Scores of the marked tiles -> -inf (`ids` ascending: a binary search each, where
    np.isin would compare every one of 1M ids with each mark)."""
    if not len(ids) or not len(marked):
        return
    pos = np.searchsorted(ids, marked).clip(0, len(ids) - 1)
    scores[pos[ids[pos] == marked]] = -math.inf


def refine(searcher: Searcher, request: RefineRequest, scorer: Scorer = rocchio) -> dict:
    """The `query`-shaped result of a refine request (see the module doc)."""
    validated(request)
    started = time.perf_counter()
    searcher.check_not_empty()
    probes = [(e, searcher.probe(e)) for e in request.examples]
    relevant = [p for e, p in probes if e.relevant]
    irrelevant = [p for e, p in probes if not e.relevant]
    weights = scorer(np.stack([p.embedding for p in relevant]),
                     np.stack([p.embedding for p in irrelevant]) if irrelevant
                     else np.zeros((0, len(relevant[0].embedding)), np.float32))
    table = searcher.embeddings
    rows = _pool(searcher, request.within)
    ids = table.ids if rows is None else table.ids[rows]
    scores = table.scores(weights, rows)
    if request.exclude_examples:
        _exclude(scores, ids, _marked_tiles(searcher, probes))
    best = top_k(scores, ids, request.k)
    codes = np.concatenate([p.code for p in relevant])
    ranked = [(0, int(ids[j]), float(scores[j])) for j in best]
    hits = searcher.hits(ranked, request.thumbnails,
                         distance=lambda record: _hamming(record.code, codes))
    query = {**searcher.describe(relevant[0], request.thumbnails), "n_relevant": len(relevant),
             "n_irrelevant": len(irrelevant),
             "examples": [{"relevant": e.relevant, **p.about,
                           "bounds": list(p.footprint.bounds), "crs": p.footprint.crs}
                          for e, p in probes]}
    return searcher.result(query, hits, started, ties=None)
