"""Cold point queries in a warm engine, this engine against another, side by side
(docs/BENCHMARKS.md, issue 26 "Clicks in the desktop": what the engine spends on a place not
seen before).

Each run opens the index in a fresh process (`Searcher`, warmed by one query), then queries
`--queries` points that no earlier query read, with thumbnails, as the map tool asks (k = 13:
12 hits and the clicked tile); the thumbnail cache of the index is emptied before each run, so
every thumbnail is made as at a first look. Runs of the two engines alternate, and so does
which goes first.

    .venv/bin/python scripts/bench_cold_query.py --index build/bench/click/index_1000k \\
        --base /tmp/base/engine [--runs 3] [--queries 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, random, sys, time
from mrhash_contract import index_layout
from mrhash_contract.protocol import QueryRequest
try:  # the engine's stage packages; an engine before them had one flat folder
    from mrhash.index.hamming import query_threads
    from mrhash.search.searcher import Searcher
except ImportError:
    from mrhash.search import Searcher, query_threads

index, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
query_threads()
searcher = Searcher(index)
ids = [row[0] for row in index_layout.footprints(searcher.folder.store.db, 20_000)]
random.Random(seed).shuffle(ids)
records = list(searcher.folder.store.tiles(ids[:n + 1]).values())

def centre(record):
    minx, miny, maxx, maxy = record.bounds
    return QueryRequest(point=((minx + maxx) / 2, (miny + maxy) / 2), crs=record.crs, k=13,
                        thumbnails=True)

searcher.search(centre(records[0]))  # the model loaded and warm, as after the worker's open
times = []
for record in records[1:]:
    started = time.perf_counter()
    searcher.search(centre(record))
    times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times))
"""


def run(engine: Path, index: Path, queries: int, seed: int) -> list[float]:
    shutil.rmtree(index / "thumbnails", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(engine)}
    out = subprocess.run([sys.executable, "-c", RUNNER, str(index), str(queries), str(seed)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="the other engine's folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args(argv)
    engines = {"this": REPO / "engine", "base": args.base}
    times: dict[str, list[float]] = {name: [] for name in engines}
    loads = []
    for number in range(args.runs):
        # the same places for both engines in a run (the one second finds the stored
        # pictures in the page cache: who goes first alternates), other places in the next
        for name in (list(engines) if number % 2 == 0 else list(engines)[::-1]):
            loads.append(round(os.getloadavg()[0], 2))
            times[name] += run(engines[name], args.index, args.queries, seed=number)
    result = {name: {"p50_ms": round(statistics.median(found), 1),
                     "p95_ms": round(sorted(found)[int(0.95 * (len(found) - 1))], 1),
                     "queries": len(found)} for name, found in times.items()}
    result["ratio_p50"] = round(result["base"]["p50_ms"] / result["this"]["p50_ms"], 2)
    result["load_at_each_run"] = loads
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
