"""`mrhash map`: how well the detections at the default threshold match a class, and what
scoring and dissolving cost at scale (docs/BENCHMARKS.md, "Map").

(a) On the real EuroSAT-MS dev set (200 images, 10 classes of 20; each image is one 64 px
    tile): a model is trained as `mrhash eval` trains it (bench_refine.train_dev_model; labels
    never read), the 200 images are indexed, and for each class the first QUERIES images (by
    tile id) each start a search by its tile id. A simulated analyst (relevant = same class;
    labels are read only here and to score):
    round 1: marks the first (up to) 3 relevant and 3 irrelevant of the query's 20 first hits,
             then maps (query + marks);
    round 2: marks up to 3 wrong detections of that map irrelevant and up to 3 right ones
             relevant (best scored first, unmarked), then maps again.
    F1 of the detections at the default threshold against the class (all 20 of its tiles,
    the marked ones included, as they are in the map), and, beside it, the best F1 over k of
    the one-example query's top k (an oracle's k: an upper bound of what a top-k list of the
    query alone gives), and the best F1 over thresholds of round 2's scores (how much a
    better calibration could add).
(b) Timing: one scoring pass of `mapping.score_pool` over a synthetic table of 1,000,000
    random embeddings of the model's width (the map's only pass over the index), and
    `mapping.dissolve` of 10,000 detected tiles (400 rasters of 16 x 16 tiles, detections
    drawn at random), median of REPEATS.
(c) End to end at scale (`--grown N`): the first seed's dev index grown to N tiles
    (benchmarks.indexing.grow_index: noisy copies of the real tiles, the same footprints),
    then `map_index` for the first class's round-1 marks: seconds, tiles scored, kept and
    detected, and the peak memory of the process.

    .venv/bin/python scripts/bench_map.py --dataset ../shared/data/eurosat_ms_dev \\
        --seeds 0,1,2 --json build/bench/map.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_refine import train_dev_model  # noqa: E402
from mrhash.index.embeddings import EmbeddingTable  # noqa: E402
from mrhash.search.mapping import dissolve, map_index, score_pool  # noqa: E402
from mrhash.search.refine import Marks, logistic_fit  # noqa: E402
from mrhash_contract.protocol import (  # noqa: E402
    Example,
    MapRequest,  # noqa: E402
    QueryRequest,
)

QUERIES = 5      # query tiles a class
REPEATS = 5      # timings


def f1(found: set[int], relevant: set[int]) -> float:
    hits = len(found & relevant)
    return 2 * hits / (len(found) + len(relevant)) if found or relevant else 0.0


def best_top_k_f1(ranked: list[int], relevant: set[int]) -> float:
    """max over k of the F1 of the first k of `ranked` (an oracle's k)."""
    hits = np.cumsum([i in relevant for i in ranked])
    k = np.arange(1, len(ranked) + 1)
    return float((2 * hits / (k + len(relevant))).max())


def best_threshold_f1(scores: dict[int, float], relevant: set[int]) -> float:
    order = sorted(scores, key=lambda i: -scores[i])
    return best_top_k_f1(order, relevant)


def all_scores(searcher, examples: list[Example]) -> dict[int, float]:
    """Every tile's calibrated score, as map computes it (refine.Marks, logistic_fit,
    score_pool with no floor)."""
    marks = Marks.of(searcher, MapRequest(examples, output="-").refine_request())
    weights, bias = logistic_fit(*marks.fit_arrays())
    scored = score_pool(searcher.embeddings, weights, bias, marks.rows, 0.0)
    return dict(zip(scored.ids.tolist(), scored.scores.tolist(), strict=True))


def dev_set(dataset: Path, model: Path, work: Path) -> dict:
    """Rounds 1 and 2 for QUERIES queries of each class (see the module doc)."""
    from mrhash.index.build import build_index
    from mrhash.search.searcher import Searcher

    index_dir = work / "dev_index"
    build_index(dataset, model, index_dir, 64, rebuild=True)
    searcher = Searcher(index_dir)
    records = searcher.folder.store.tiles(searcher.embeddings.ids.tolist())
    labels = {i: Path(r.path).parent.name for i, r in records.items()}
    classes: dict[str, dict[str, list[float]]] = {}
    try:
        for label in sorted(set(labels.values())):
            relevant = {i for i, c in labels.items() if c == label}
            rows = classes.setdefault(label, {"top_k_best": [], "round1": [], "round2": [],
                                              "round2_best_threshold": [], "detected1": [],
                                              "detected2": []})
            for q in sorted(relevant)[:QUERIES]:
                hits = [h["id"] for h in searcher.search(QueryRequest(tile=q, k=200))["hits"]]
                rows["top_k_best"].append(best_top_k_f1([q] + [i for i in hits if i != q],
                                                        relevant))
                first = [i for i in hits if i != q][:20]
                good = [i for i in first if i in relevant][:3]
                bad = [i for i in first if i not in relevant][:3]
                examples = ([Example(tile=q)] + [Example(tile=i) for i in good]
                            + [Example(tile=i, relevant=False) for i in bad])
                out = str(work / "map.gpkg")
                found = [d["id"] for d in map_index(searcher, MapRequest(examples, output=out))[
                    "detections"]]
                rows["round1"].append(f1(set(found), relevant))
                rows["detected1"].append(len(found))
                marked = {e.tile for e in examples}
                fresh = [i for i in found if i not in marked]  # best scored first
                examples += ([Example(tile=i, relevant=False)
                              for i in [i for i in fresh if i not in relevant][:3]]
                             + [Example(tile=i) for i in [i for i in fresh if i in relevant][:3]])
                found = [d["id"] for d in map_index(searcher, MapRequest(examples, output=out))[
                    "detections"]]
                rows["round2"].append(f1(set(found), relevant))
                rows["detected2"].append(len(found))
                rows["round2_best_threshold"].append(
                    best_threshold_f1(all_scores(searcher, examples), relevant))
    finally:
        searcher.close()
    per_class = {label: {name: round(float(np.mean(v)), 3) for name, v in rows.items()}
                 for label, rows in classes.items()}
    names = next(iter(per_class.values()))
    return {"per_class": per_class,
            "mean": {name: round(float(np.mean([c[name] for c in per_class.values()])), 3)
                     for name in names}}


def timings(dim: int, bits: int, tiles: int, detected: int) -> dict:
    """Score pass over `tiles` random embeddings; dissolve of `detected` tiles."""
    rng = np.random.default_rng(0)
    table = EmbeddingTable(bits, dim - bits)
    for start in range(0, tiles, 250_000):  # built in parts: no float64 copy of it all
        n = min(250_000, tiles - start)
        table.add(np.arange(start, start + n) + 1, rng.standard_normal((n, dim), np.float32))
    table.compact()
    weights = rng.standard_normal(dim).astype(np.float32)
    score_s = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        kept = score_pool(table, weights, -2.0, None, 0.1)
        score_s.append(time.perf_counter() - start)
    # 400 rasters of 16 x 16 tiles 0.001 degrees apart; `detected` of them, at random
    side, rasters = 16, 400
    cells = rng.choice(side * side * rasters, detected, replace=False)
    raster, cell = np.divmod(cells, side * side)
    west = 10 + (raster % 20) * 0.02 + (cell % side) * 0.001
    south = 45 + (raster // 20) * 0.02 + (cell // side) * 0.001
    bounds = np.stack([west, south, west + 0.001, south + 0.001], axis=1)
    paths = [f"r{r}.tif" for r in raster]
    scores = rng.uniform(0.5, 1, detected)
    dissolve_s = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        areas = dissolve(paths, bounds, scores)
        dissolve_s.append(time.perf_counter() - start)
    return {"tiles": tiles, "dim": dim, "score_pass_s": round(float(np.median(score_s)), 3),
            "kept_at_floor": len(kept.ids), "table_mb": round(table.memory_bytes() / 2**20, 1),
            "detected": detected, "areas": len(areas.paths),
            "dissolve_s": round(float(np.median(dissolve_s)), 3)}


def grown(work: Path, tiles: int) -> dict:
    """(c): the dev index of the first seed grown to `tiles`, one map of round-1-like marks
    (the first 4 tiles of the first class relevant, 3 of the last class not)."""
    from mrhash.search.searcher import Searcher
    from mrhash_research.benchmarks.indexing import grow_index

    index_dir = work / "dev_index"
    searcher = Searcher(index_dir)
    records = searcher.folder.store.tiles(searcher.embeddings.ids.tolist())
    searcher.close()
    by_class = sorted(records, key=lambda i: (Path(records[i].path).parent.name, i))
    examples = ([Example(tile=i) for i in by_class[:4]]
                + [Example(tile=i, relevant=False) for i in by_class[-3:]])
    start = time.perf_counter()
    total = grow_index(index_dir, tiles)
    grow_s = time.perf_counter() - start
    start = time.perf_counter()
    searcher = Searcher(index_dir)
    open_s = time.perf_counter() - start
    try:
        result = map_index(searcher, MapRequest(examples, output=str(work / "big.gpkg")))
    finally:
        searcher.close()
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {"tiles": total, "grow_s": round(grow_s, 1), "open_s": round(open_s, 2),
            "map_s": result["seconds"], "n_scored": result["n_scored"],
            "n_tiles": result["n_tiles"], "n_detected": result["n_detected"],
            "n_areas": result["n_areas"],
            "gpkg_mb": round((work / "big.gpkg").stat().st_size / 2**20, 1),
            "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="EuroSAT-MS dev folder")
    parser.add_argument("--seeds", default="0,1,2", help="models trained (one a seed)")
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--detected", type=int, default=10_000)
    parser.add_argument("--grown", type=int, default=0,
                        help="(c): grow the first seed's index to this many tiles and map it")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    from mrhash.device import limit_threads

    figures: dict = {"threads": limit_threads(), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
        text=True).stdout.strip(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_start": [round(v, 2) for v in os.getloadavg()], "dev_set": {}}
    with tempfile.TemporaryDirectory(prefix="mrhash-bench-map-") as tmp:
        work = Path(tmp)
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:
            start = time.perf_counter()
            model = train_dev_model(Path(args.dataset), seed, work / f"dev_{seed}.safetensors")
            figures["dev_set"][seed] = dev_set(Path(args.dataset), model, work)
            figures["dev_set"][seed]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"seed {seed}: {json.dumps(figures['dev_set'][seed]['mean'])}",
                  file=sys.stderr)
            if args.grown and seed == seeds[0]:  # before the next seed rebuilds the index
                figures["grown"] = grown(work, args.grown)
                print(f"grown: {json.dumps(figures['grown'])}", file=sys.stderr)
        from mrhash.model.package import load_model

        loaded = load_model(model)
        dim = loaded.bits + loaded.latent_dim
    runs = list(figures["dev_set"].values())
    figures["mean"] = {name: round(float(np.mean([r["mean"][name] for r in runs])), 3)
                       for name in runs[0]["mean"]}
    figures["per_class_mean"] = {
        label: {name: round(float(np.mean([r["per_class"][label][name] for r in runs])), 3)
                for name in runs[0]["per_class"][label]} for label in runs[0]["per_class"]}
    figures["timing"] = timings(dim, loaded.bits, args.tiles, args.detected)
    figures["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
