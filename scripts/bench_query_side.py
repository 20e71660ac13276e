"""The query side of issue 26, side by side in one run (docs/BENCHMARKS.md, *Thumbnails stored
at index time, the index opened when chosen, `mrhash query --tile` without torch*).

1. Builds of a real-EuroSAT `--side` x `--side` 13-band mosaic (scripts/bench_thumbnails.py's
   `build_mosaic`, 64 px tiles: 4,096 at 4096 px) with and without stored thumbnails, alternated,
   `--repeats` each: tiles/s, and the store's bytes per tile (extrapolated to 1M tiles).
2. Queries by tile (k = 20, thumbnails) on both indexes, the PNG cache emptied before each:
   milliseconds with the pictures read from the store vs rendered from the raster.
3. The first query by point on a fresh searcher of `--big` (an index grown to ~1M tiles with
   `benchmarks.indexing.grow_index`), with and without `Searcher.warm()` (the worker's `open`)
   before it, and the second query for reference.
4. `mrhash query --tile` wall time, process start included, on `--big`: this engine and the
   engine of `--base` (a copy of the engine before, e.g. `git archive 6c517cb engine`),
   alternated.

    PYTHONPATH=engine .venv/bin/python scripts/bench_query_side.py --model M.safetensors \\
        --big build/big/index --base build/base/engine [--json build/bench/query_side.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_thumbnails import build_mosaic  # noqa: E402
from mrhash.app.cli import write_json  # noqa: E402
from mrhash.index.build import build_index  # noqa: E402
from mrhash.search.searcher import Searcher  # noqa: E402
from mrhash_contract.index_layout import DB_FILE, THUMBNAILS_FILE  # noqa: E402
from mrhash_contract.protocol import QueryRequest  # noqa: E402


def builds(mosaic_dir: Path, model: str, work: Path, repeats: int) -> dict:
    """Tiles/s with and without stored thumbnails, alternated; the last index of each kept."""
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(repeats):
        for kind in ("without", "with"):
            index = work / f"index_{kind}"
            shutil.rmtree(index, ignore_errors=True)
            result = build_index(mosaic_dir, model, index, 64, thumbnails=kind == "with")
            rates[kind].append(result.added / result.seconds)
    n_tiles = result.n_tiles
    store = (work / "index_with" / THUMBNAILS_FILE).stat().st_size
    database = (work / "index_with" / DB_FILE).stat().st_size
    with_s, without_s = (statistics.median(rates[k]) for k in ("with", "without"))
    return {"tiles": n_tiles, "tiles_per_s_with": round(with_s, 1),
            "tiles_per_s_without": round(without_s, 1), "all_rates": rates,
            "speed_ratio": round(with_s / without_s, 3),
            "store_bytes_per_tile": round(store / n_tiles), "store_mb_per_1m": round(
                store / n_tiles * 1e6 / 1e6), "database_bytes_per_tile": round(database / n_tiles)}


def tile_queries(work: Path, n: int) -> dict:
    """ms of a tile query with thumbnails, cold PNG cache: stored vs rendered, alternated."""
    times: dict[str, list[float]] = {"stored": [], "rendered": []}
    searchers = {"stored": Searcher(work / "index_with"),
                 "rendered": Searcher(work / "index_without")}
    try:
        for i in range(n):
            for kind, searcher in searchers.items():
                shutil.rmtree(searcher.folder.thumbnail_dir, ignore_errors=True)
                start = time.perf_counter()
                searcher.search(QueryRequest(tile=1 + 97 * i % searcher.index.ntotal, k=20,
                                             thumbnails=True))
                times[kind].append((time.perf_counter() - start) * 1000)
    finally:
        for searcher in searchers.values():
            searcher.close()
    stored, rendered = (statistics.median(times[k]) for k in ("stored", "rendered"))
    return {"stored_ms": round(stored, 1), "rendered_ms": round(rendered, 1),
            "ratio": round(rendered / stored, 1), "queries": n}


def first_queries(big: Path, repeats: int) -> dict:
    """The first point query of a fresh searcher, after open + warm() or without it."""
    searcher = Searcher(big)
    record = searcher.folder.store.tiles([1])[1]
    searcher.close()
    west, south, east, north = record.bounds
    query = QueryRequest(point=((west + east) / 2, (south + north) / 2), crs=record.crs, k=20)
    out: dict[str, list[float]] = {"open_s": [], "warm_s": [], "first_warmed_ms": [],
                                   "first_cold_ms": [], "second_ms": []}
    for _ in range(repeats):
        for warm in (True, False):
            start = time.perf_counter()
            searcher = Searcher(big)
            opened = time.perf_counter()
            if warm:
                searcher.warm()
            warmed = time.perf_counter()
            searcher.search(query)
            first = time.perf_counter()
            searcher.search(query)
            second = time.perf_counter()
            searcher.close()
            if warm:
                out["open_s"].append(opened - start)
                out["warm_s"].append(warmed - opened)
                out["first_warmed_ms"].append((first - warmed) * 1000)
            else:
                out["first_cold_ms"].append((first - warmed) * 1000)
            out["second_ms"].append((second - first) * 1000)
    return {k: round(statistics.median(v), 3 if k.endswith("_s") else 1) for k, v in out.items()}


def cli_tile_query(big: Path, base: Path, repeats: int) -> dict:
    """Wall seconds of `mrhash query --tile` (process start, imports, index open, search)."""
    walls: dict[str, list[float]] = {"now": [], "before": []}
    for i in range(repeats):
        for kind, engine in (("before", base), ("now", REPO / "engine")):
            env = {**os.environ, "PYTHONPATH": str(engine)}
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mrhash", "query", "--index", str(big),
                            "--tile", str(5 + i), "-k", "20"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            walls[kind].append(time.perf_counter() - start)
    now, before = (statistics.median(walls[k]) for k in ("now", "before"))
    return {"now_s": round(now, 2), "before_s": round(before, 2),
            "ratio": round(before / now, 1), "all": walls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--big", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/data/eurosat_ms_dev"))
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench_query_side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=4096, help="mosaic side in pixels")
    parser.add_argument("--json")
    args = parser.parse_args()
    mosaic_dir = args.work / f"mosaic{args.side}"
    build_mosaic(args.dataset, mosaic_dir / "mosaic.tif", args.side, overviews=False)
    figures = {"load_before": os.getloadavg(),
               "builds": builds(mosaic_dir, args.model, args.work, args.repeats),
               "tile_queries": tile_queries(args.work, 15),
               "first_queries": first_queries(args.big, args.repeats),
               "cli_tile_query": cli_tile_query(args.big, args.base, 5),
               "load_after": os.getloadavg()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, figures)  # stdout without --json


if __name__ == "__main__":
    main()
