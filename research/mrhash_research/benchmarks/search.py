"""Search latency: the production Hamming search vs a numpy scan and FAISS IndexBinaryFlat.

Builds N codes, then for the same queries measures p50/p95 latency (one query at a time, as a
user clicks) of `BinaryIndex.search` (the layout production picks for N), of a plain numpy
xor+popcount scan and of `faiss.IndexBinaryFlat`; tie-aware recall@k versus the exact scan;
and the index memory against the raw code bytes.

Code distributions (`--codes-from`):
- random: uniform random bits (the worst case for any approximate index: no structure);
- model: codes of real tiles encoded by a trained model (`--model`, every tile of the
  rasters under `--tiles-from`), each replicated to reach N with every bit flipped with
  probability `--bit-noise` (default 0.03, about 2 of 64 bits); queries are real tile codes
  with the same noise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codes", type=int, default=1_000_000, help="number of indexed codes")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--codes-from", choices=("random", "model"), default="random")
    parser.add_argument("--model", help="model package (for --codes-from model)")
    parser.add_argument("--tiles-from", help="folder of rasters whose tiles the model encodes")
    parser.add_argument("--bit-noise", type=float, default=0.03)
    parser.add_argument("--exact-max", type=int, default=None,
                        help="codes above which the approximate layout is used (default: "
                        "the index policy, 32 MiB of codes)")
    parser.add_argument("--threads", type=int,
                        help="FAISS OpenMP threads (default: 1, as the query processes use)")
    parser.add_argument("--shards", type=int, default=1,
                        help="also search the codes split into this many indexes, searched as "
                        "one (each shard's top k merged, as `mrhash query --index A B ...`)")
    parser.add_argument("--seed", type=int, default=0)


def numpy_scan(codes: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy baseline: xor, popcount by table, partial sort."""
    dist = _POPCOUNT[np.bitwise_xor(codes, query)].sum(axis=1, dtype=np.int32)
    top = np.argpartition(dist, k - 1)[:k]
    order = np.argsort(dist[top], kind="stable")
    return dist[top][order], top[order]


def _flip(codes: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1)
    bits ^= (rng.random(bits.shape) < p).astype(np.uint8)
    return np.packbits(bits, axis=1)


def model_codes(model_path: str, folder: str) -> np.ndarray:
    """Codes of every tile of every raster under `folder`, encoded by the model."""
    from mrhash.device import limit_threads
    from mrhash.index.build import discover
    from mrhash.index.encode import encode_tiles
    from mrhash.model.package import load_model

    limit_threads()
    model = load_model(model_path)
    return np.concatenate([encode_tiles(model, spec)
                           for spec in discover(folder, model.primary.bands)[0]])


def _latencies(search, queries: np.ndarray) -> tuple[list[float], list]:
    times, results = [], []
    search(queries[0])  # warm-up
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        times.append((time.perf_counter() - start) * 1000)
    return times, results


def run(args: argparse.Namespace) -> dict:
    import faiss
    from mrhash.errors import BadInput
    from mrhash.index.hamming import BinaryIndex, IndexPolicy, query_threads, tie_aware_recall

    rng = np.random.default_rng(args.seed)
    nbytes = args.bits // 8
    t0 = time.perf_counter()
    if args.codes_from == "random":
        codes = rng.integers(0, 256, (args.codes, nbytes), dtype=np.uint8)
        queries = rng.integers(0, 256, (args.queries, nbytes), dtype=np.uint8)
        n_base = None
    else:
        if not (args.model and args.tiles_from):
            raise BadInput("--codes-from model needs --model and --tiles-from")
        base = model_codes(args.model, args.tiles_from)
        n_base = len(base)
        nbytes = base.shape[1]
        codes = _flip(base[rng.integers(0, len(base), args.codes)], args.bit_noise, rng)
        queries = _flip(base[rng.integers(0, len(base), args.queries)], args.bit_noise, rng)
    k = args.k
    policy = IndexPolicy() if args.exact_max is None else \
        IndexPolicy(exact_max_bytes=args.exact_max * nbytes)
    index = BinaryIndex(nbytes * 8, policy)
    index.add(np.arange(1, len(codes) + 1), codes)
    build_start = time.perf_counter()
    index.optimize()
    build_s = time.perf_counter() - build_start

    query_threads()  # built with every core, searched as the query processes search
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    flat = faiss.IndexBinaryFlat(nbytes * 8)
    flat.add(codes)

    prod_t, prod_r = _latencies(lambda q: index.search(q[None], k), queries)
    flat_t, flat_r = _latencies(lambda q: flat.search(q[None], k), queries)
    base_t, _ = _latencies(lambda q: numpy_scan(codes, q, k), queries[:max(10, args.queries // 5)])

    exact = np.concatenate([d for d, _ in flat_r])
    prod = np.concatenate([d for d, _ in prod_r])
    raw = codes.nbytes
    sharded = _sharded(codes, queries, k, args.shards, policy, exact) if args.shards > 1 else None
    return {
        "codes": len(codes), "bits": nbytes * 8, "k": k, "queries": len(queries),
        "codes_from": args.codes_from, "base_codes": n_base,
        "bit_noise": args.bit_noise if n_base else None,
        "layout": index.kind, "nprobe": index.nprobe,
        "calibrated_recall": index.calibrated_recall,
        "p50_ms": round(float(np.median(prod_t)), 3),
        "p95_ms": round(float(np.percentile(prod_t, 95)), 3),
        "flat_p50_ms": round(float(np.median(flat_t)), 3),
        "flat_p95_ms": round(float(np.percentile(flat_t, 95)), 3),
        "baseline_p50_ms": round(float(np.median(base_t)), 3),
        "baseline_p95_ms": round(float(np.percentile(base_t, 95)), 3),
        "speedup_vs_numpy": round(float(np.median(base_t) / np.median(prod_t)), 1),
        "recall": round(tie_aware_recall(prod, exact), 4),
        "index_bytes": index.memory_bytes(), "raw_code_bytes": raw,
        "memory_ratio": round(index.memory_bytes() / raw, 3),
        "layout_build_s": round(build_s, 2),
        "total_s": round(time.perf_counter() - t0, 1),
        "faiss_threads": faiss.omp_get_max_threads(),
        "sharded": sharded,
    }


def _sharded(codes: np.ndarray, queries: np.ndarray, k: int, n_shards: int, policy,
             exact: np.ndarray) -> dict:
    """The same codes as `n_shards` indexes (each with the layout production picks for its
    size), every query searched in each and the k best merged (search.merge_top_k)."""
    from mrhash.index.hamming import BinaryIndex, tie_aware_recall
    from mrhash.search.searcher import merge_top_k

    shards, build_s = [], 0.0
    for part in np.array_split(np.arange(len(codes)), n_shards):
        shard = BinaryIndex(codes.shape[1] * 8, policy)
        shard.add(part + 1, codes[part])
        start = time.perf_counter()
        shard.optimize()
        build_s += time.perf_counter() - start
        shards.append(shard)

    def search(query: np.ndarray) -> list:
        per_shard = []
        for shard in shards:
            dist, ids = shard.search(query[None], k)
            per_shard.append([(int(d), int(i), 0.0) for d, i in zip(dist[0], ids[0],
                                                                     strict=True) if i >= 0])
        return merge_top_k(per_shard, k)

    times, results = _latencies(search, queries)
    dist = np.array([[d for d, *_ in merged] for merged in results])
    return {"shards": n_shards, "layouts": sorted({s.kind for s in shards}),
            "nprobe": [s.nprobe for s in shards],
            "p50_ms": round(float(np.median(times)), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3),
            "recall": round(tie_aware_recall(dist, exact), 4),
            "memory_ratio": round(sum(s.memory_bytes() for s in shards) / codes.nbytes, 3),
            "layout_build_s": round(build_s, 2)}
