"""Relevance feedback, tie ranking and what the embeddings cost (docs/BENCHMARKS.md, "Refine,
ties and embeddings").

(a) Refine on the real EuroSAT-MS dev set (200 images, 10 classes; each image is one 64 px
    tile): a model is trained as `mrhash eval` trains it (RGB 4,3,2 primary; NIR, red-edge/SWIR
    and 60 m bands auxiliary; labels never read), the 200 images are indexed, and every image
    queries by its tile id. P@20 of the hits without the query; then a simulated analyst marks
    the first (up to) 3 relevant and 3 irrelevant of those 20 (relevant = same class as the
    query: labels are read only here and to score), refine with the query + marks, P@20 of the
    unmarked hits. "Before, unmarked" is the first query's ranking with the marks removed (what
    the analyst sees without refining), the fair reference. Scorers compared, through the
    engine's refine: its logistic regression with background tiles and label propagation on
    the shortlist, the same without the propagation, and Rocchio (the scorer before), on the
    embeddings (code + autoencoder latent) and on the code part alone.
(c) Ties on the same index: queries whose top-k holds a tie group or whose k-th hit ties with
    the next, and P@k with the tile-id order inside ties (before), the engine's embedding order
    (now) and the expected value over random orders.
(b) At 1M tiles (each engine's dev index replicated with 3% bit noise, embeddings alike:
    synthetic, for timing): refine p50, query p50 with the tie re-rank, open time and peak
    memory, against the engine of `--baseline` (one with refine; it reads a format-1 copy of
    the models, without the latent); and indexing tiles/s of the same folder with both engines,
    alternated.

    .venv/bin/python scripts/bench_refine.py --dataset ../shared/data/eurosat_ms_dev \\
        --index-model build/bench/model64.safetensors --index-folder $S2 --baseline 84fc889 \\
        --json build/bench/refine.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

from mrhash.index.embeddings import unit_rows  # noqa: E402
from mrhash.search.refine import PROPAGATION_WEIGHT, logistic, refine, rocchio  # noqa: E402
from mrhash_contract.protocol import Example, RefineRequest  # noqa: E402


def codes_only(scorer: Callable, bits: int) -> Callable:
    """`scorer` on the code part of the embeddings alone (at unit length again), the latent
    ignored: what the engine's scorer had before the latent was kept."""
    def score(relevant, irrelevant, background):
        weights = scorer(*(unit_rows(x[:, :bits]) for x in (relevant, irrelevant, background)))
        return np.r_[weights, np.zeros(relevant.shape[1] - bits, np.float32)]
    return score


def scorers(bits: int) -> dict[str, tuple[Callable, float]]:
    """name -> (scorer, propagation weight) of the refines compared."""
    return {"logistic + background + propagation, code + latent (engine)":
            (logistic, PROPAGATION_WEIGHT),
            "logistic + background, code + latent": (logistic, 0.0),
            "logistic + background, code only": (codes_only(logistic, bits), 0.0),
            "rocchio x0.5, code + latent": (rocchio, 0.0),
            "rocchio x0.5, code only (the engine before)": (codes_only(rocchio, bits), 0.0)}


def format1_copy(model: Path, out: Path) -> Path:
    """The package without the autoencoder's encoder, as format 1: what an engine from before
    the latent reads (the same codes)."""
    from mrhash.model.package import METADATA_KEY, read_package
    from safetensors.torch import save_file

    config, tensors, _ = read_package(model)
    config = {k: v for k, v in config.items() if k != "latent"} | {"format_version": 1}
    save_file({k: v for k, v in tensors.items() if not k.startswith("latent.")}, str(out),
              metadata={METADATA_KEY: json.dumps(config, sort_keys=True)})
    return out


# -- (a) and (c): the dev set -----------------------------------------------------------------
def train_dev_model(dataset: Path, seed: int, out: Path) -> Path:
    """A model trained as `mrhash eval` trains its MrHash row (same defaults and sources)."""
    from mrhash.app.commands.model import EUROSAT_AUX, EUROSAT_PRIMARY, parse_aux_bands
    from mrhash.model.train import TrainConfig, train_model
    from mrhash.raster.sources import SourceSpec
    from mrhash_contract.bands import parse_bands
    from mrhash_research.evaluate import scan_dataset

    paths, _ = scan_dataset(dataset)  # the labels are not passed on
    primary = tuple(SourceSpec("primary", (p,), parse_bands(EUROSAT_PRIMARY)) for p in paths)
    config = TrainConfig(primary=primary, output=str(out), aux_bands=parse_aux_bands(
        EUROSAT_AUX), seed=seed, device="cpu")
    return Path(train_model(config).model)


def precision(ids, labels: dict[int, str], label: str, k: int) -> float:
    ids = list(ids)[:k]
    return sum(labels[i] == label for i in ids) / k


def expected_precision(dist: np.ndarray, relevant: np.ndarray, k: int) -> float:
    from mrhash_research.evaluate import _expected_scores

    return _expected_scores(dist, relevant, 1, k)[2]


def dev_set(dataset: Path, model: Path, work: Path) -> dict:
    from mrhash.index.build import build_index
    from mrhash.index.folder import IndexFolder
    from mrhash.search.searcher import Searcher
    from mrhash_contract.protocol import QueryRequest as Query

    index_dir = work / "dev_index"
    build_index(dataset, model, index_dir, 64, rebuild=True)
    folder = IndexFolder(index_dir)
    ids, codes = folder.store.all_codes(folder.bits // 8)
    records = folder.store.tiles(ids.tolist())
    folder.close()
    labels = {i: Path(r.path).parent.name for i, r in records.items()}
    searcher = Searcher(index_dir)
    compared = scorers(searcher.embeddings.bits)
    feedback = {"before": [], "before_unmarked": [], **{name: [] for name in compared}}
    ties = {k: {"group_in_top": 0, "crosses_k": 0, "p_id_order": [], "p_score_order": [],
                "p_expected": []} for k in (10, 20)}
    first_ties = []
    try:
        for q in ids.tolist():
            label = labels[q]
            result = searcher.search(Query(tile=q, k=40))
            first_ties.append(result["ties"]["count"])
            ranked = [h["id"] for h in result["hits"] if h["id"] != q]
            feedback["before"].append(precision(ranked, labels, label, 20))
            top = ranked[:20]
            marks = ([i for i in top if labels[i] == label][:3],
                     [i for i in top if labels[i] != label][:3])
            marked = set(marks[0]) | set(marks[1])
            feedback["before_unmarked"].append(
                precision([i for i in ranked if i not in marked], labels, label, 20))
            request = RefineRequest([Example(relevant=True, tile=q)]
                                    + [Example(relevant=True, tile=i) for i in marks[0]]
                                    + [Example(relevant=False, tile=i) for i in marks[1]], k=20)
            for name, (scorer, propagation) in compared.items():
                hits = refine(searcher, request, scorer, propagation)["hits"]
                feedback[name].append(precision([h["id"] for h in hits], labels, label, 20))
            tie_stats(ties, q, ids, codes, labels, ranked)
    finally:
        searcher.close()
    return {"p_at_20": {name: round(float(np.mean(v)), 4) for name, v in feedback.items()},
            "ties": {k: {"queries": len(ids), "group_in_top": t["group_in_top"],
                         "crosses_k": t["crosses_k"],
                         **{key: round(float(np.mean(t[key])), 4)
                            for key in ("p_id_order", "p_score_order", "p_expected")}}
                     for k, t in ties.items()},
            "rank1_tie_count": {"mean": round(float(np.mean(first_ties)), 2),
                                "queries_with_more_than_itself": int(np.sum(
                                    np.array(first_ties) > 1))}}


def tie_stats(ties: dict, q: int, ids: np.ndarray, codes: np.ndarray, labels: dict,
              ranked: list[int]) -> None:
    """Tie groups in query q's top-k and P@k under three orders inside ties."""
    others = ids != q
    dist = np.unpackbits(codes[others] ^ codes[ids == q], axis=1).sum(axis=1)
    other_ids = ids[others]
    relevant = np.array([labels[i] == labels[q] for i in other_ids.tolist()])
    by_id = other_ids[np.lexsort((other_ids, dist))]
    sorted_dist = np.sort(dist)
    for k, t in ties.items():
        top = sorted_dist[:k]
        t["group_in_top"] += int(len(np.unique(top)) < k)
        t["crosses_k"] += int(sorted_dist[k - 1] == sorted_dist[k])
        t["p_id_order"].append(precision(by_id.tolist(), labels, labels[q], k))
        t["p_score_order"].append(precision(ranked, labels, labels[q], k))
        t["p_expected"].append(expected_precision(dist, relevant, k))


# -- (b): 1M tiles, this engine against the baseline's ----------------------------------------
RUNNER = r"""
import json, sys, time
import numpy as np
from mrhash.device import limit_threads
try:  # this engine's stage packages; a baseline before them had one flat folder
    from mrhash.index.hamming import query_threads
    from mrhash.search.searcher import Searcher
except ImportError:
    from mrhash.search import Searcher, query_threads
try:  # this engine: the protocol's types; the baseline engine had them in search.py
    from mrhash_contract.protocol import QueryRequest as Query
except ImportError:
    from mrhash.search import Query
limit_threads(); query_threads()
what, target = sys.argv[1], sys.argv[2]
if what == "grow":
    from pathlib import Path
    try:
        from mrhash.index.build import build_index
        from mrhash_research.benchmarks.indexing import grow_index
    except ImportError:
        from mrhash.benchmarks.indexing import grow_index
        from mrhash.indexer import build_index
    build_index(sys.argv[4], sys.argv[3], target, 64, rebuild=True)
    start = time.perf_counter()
    total = grow_index(Path(target), int(sys.argv[5]))
    print(json.dumps({"tiles": total, "grow_s": round(time.perf_counter() - start, 1)}))
    sys.exit()
if what == "index":
    try:
        from mrhash.index.build import build_index
        from mrhash.model.package import load_model
    except ImportError:
        from mrhash.indexer import build_index
        from mrhash.package import load_model
    model = load_model(sys.argv[3])
    model.encode(np.zeros((2, model.n_bands, model.patch_size, model.patch_size), np.float32))
    start = time.perf_counter()
    result = build_index(sys.argv[4], sys.argv[3], target, rebuild=True, model=model)
    seconds = time.perf_counter() - start
    print(json.dumps({"tiles": result.added, "tiles_per_s": result.added / seconds}))
    sys.exit()
start = time.perf_counter()
searcher = Searcher(target)
opened = time.perf_counter() - start
ids = np.random.default_rng(0).choice(searcher.index.all_ids(), 130, replace=False).tolist()
out = {"open_s": round(opened, 3)}
def timed(run, items):
    times = []
    for item in items:
        start = time.perf_counter(); run(item); times.append((time.perf_counter() - start) * 1000)
    times = times[10:]  # warm-up
    return {"p50_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}
out["query_tile"] = timed(lambda i: searcher.search(Query(tile=i, k=20)), ids)
if what == "refine":
    from mrhash_contract.protocol import Example, RefineRequest
    groups = [ids[j:j + 7] for j in range(0, 7 * 40, 7) if len(ids[j:j + 7]) == 7]
    requests = [RefineRequest([Example(relevant=True, tile=i) for i in g[:4]]
                              + [Example(relevant=False, tile=i) for i in g[4:]], k=20)
                for g in groups]
    out["refine"] = timed(searcher.refine, requests)
    weights = np.ones(searcher.embeddings.unit.shape[1], np.float32)
    out["score_pass"] = timed(lambda _: searcher.embeddings.scores(weights), range(30))
    out["embeddings_bytes"] = searcher.embeddings.memory_bytes()
out["codes_bytes"] = searcher.index.memory_bytes()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
# VmHWM: peak resident memory of this process image (ru_maxrss would carry the parent's)
out["peak_rss_mb"] = round(int(status["VmHWM"].split()[0]) / 1024, 1)
out["rss_mb"] = round(int(status["VmRSS"].split()[0]) / 1024, 1)
print(json.dumps(out))
"""


def run_engine(engine: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(engine)}
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{engine}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_engine(revision: str, work: Path) -> Path:
    """The engine package of `revision`, unpacked from git (the checkout is not touched)."""
    archive = work / "baseline.tar"
    subprocess.run(["git", "archive", "-o", str(archive), revision, "engine"], cwd=REPO,
                   check=True)
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tar:
        tar.extractall(work / "baseline", **safe)
    return work / "baseline" / "engine"


def at_one_million(dataset: Path, models: dict[str, Path], n: int, engines: dict[str, Path],
                   work: Path, repeats: int) -> dict:
    """Each engine indexes the dev set with its model and grows the index to n tiles, then
    both are timed in alternated processes."""
    out: dict = {name: {"grown": run_engine(engine, "grow", work / f"big_{name}",
                                            models[name], dataset, n), "runs": []}
                 for name, engine in engines.items()}
    for _ in range(repeats):  # alternated processes, so a busy spell hits both
        for name, engine in engines.items():
            out[name]["runs"].append(run_engine(engine, "refine", work / f"big_{name}"))
    out["median_p50_ms"] = {
        name: {part: float(np.median([r[part]["p50_ms"] for r in out[name]["runs"]]))
               for part in out[name]["runs"][0] if isinstance(out[name]["runs"][0][part], dict)}
        for name in engines}
    return out


def indexing(models: dict[str, Path], folder: Path, engines: dict[str, Path], work: Path,
             repeats: int) -> dict:
    runs: dict[str, list[float]] = {name: [] for name in engines}
    tiles = 0
    for _ in range(repeats):  # alternated, so a busy spell hits both
        for name, engine in engines.items():
            result = run_engine(engine, "index", work / f"index_{name}", models[name], folder)
            runs[name].append(round(result["tiles_per_s"], 1))
            tiles = result["tiles"]
    medians = {name: float(np.median(v)) for name, v in runs.items()}
    return {"tiles": tiles, "tiles_per_s": runs, "median": medians,
            "ratio_now_over_baseline": round(medians["now"] / medians["baseline"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/data/eurosat_ms_dev"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--baseline", required=True, help="commit of an engine with refine "
                        "but before the latent (speed and memory compared with it)")
    parser.add_argument("--index-model", help="model for the indexing comparison (13 bands)")
    parser.add_argument("--index-folder", help="rasters for the indexing comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    from mrhash.device import limit_threads

    figures: dict = {"threads": limit_threads(), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
        text=True).stdout.strip(), "baseline": args.baseline,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="mrhash-bench-refine-") as tmp:
        work = Path(tmp)
        engines = {"baseline": baseline_engine(args.baseline, work), "now": REPO / "engine"}
        seeds = [int(s) for s in args.seeds.split(",")]
        figures["dev_set"] = {}
        for seed in seeds:
            start = time.perf_counter()
            model = train_dev_model(Path(args.dataset), seed, work / f"dev_{seed}.safetensors")
            figures["dev_set"][seed] = dev_set(Path(args.dataset), model, work)
            figures["dev_set"][seed]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"seed {seed}: {json.dumps(figures['dev_set'][seed])}", file=sys.stderr)
            if seed == seeds[0]:
                first = model
        names = figures["dev_set"][seeds[0]]["p_at_20"]
        figures["p_at_20_mean"] = {name: round(float(np.mean(
            [figures["dev_set"][s]["p_at_20"][name] for s in seeds])), 4) for name in names}
        if args.tiles:
            models = {"now": first, "baseline": format1_copy(first, work / "first_v1.safetensors")}
            figures["million"] = at_one_million(Path(args.dataset), models, args.tiles,
                                                engines, work, args.repeats)
            print(f"1M: {json.dumps(figures['million'])}", file=sys.stderr)
        if args.index_model and args.index_folder:
            index_model = Path(args.index_model)
            models = {"now": index_model,
                      "baseline": format1_copy(index_model, work / "index_v1.safetensors")}
            figures["indexing"] = indexing(models, Path(args.index_folder), engines, work,
                                           args.repeats)
    figures["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
