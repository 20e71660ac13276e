"""Indexing throughput (read + encode + add, end to end) against the bare encoder, and the
warm worker's round trip for one query on a large index.

1. end to end: `build_index` of `--folder` into a fresh index (tiles/s of the whole job);
2. bare encoder: the same tiles, read into memory beforehand, through `model.encode` with the
   same batches; ratio = (1) / (2) (1.0 = reading, SQLite and FAISS cost nothing visible).
   (1) and (2) alternate `--repeats` times, for each of `--encoders` in turn (the compiled
   ONNX encoder and torch side by side); medians are reported per encoder;
3. worker round trip: the index of (1) is grown to `--worker-tiles` rows (its real tiles
   replicated with every bit flipped with probability 0.03, rows pointing to the real
   rasters; embeddings alike), `mrhash serve` is started, and one query at a time is timed
   from the request line written to the result line read, by tile id and by point (read +
   encode + search).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mrhash_contract import index_layout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--folder", required=True, help="folder of rasters to index")
    parser.add_argument("--tile-size", type=int, help="default: the model's patch size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoders", default="onnx,torch",
                        help="encoders compared, comma-separated (onnx_encoder.ENCODER_CHOICES)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate end-to-end and bare runs this many times (medians)")
    parser.add_argument("--worker-tiles", type=int, default=1_000_000,
                        help="rows of the index the worker queries (0: skip that part)")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--workdir", help="keep the indexes here (default: a temp folder)")


def bare_encoder(model, folder: str, tile_size: int, batch_size: int) -> dict:
    """Encoder-only tiles/s over every tile of the folder, read into memory first."""
    from mrhash.index.build import discover
    from mrhash.index.encode import open_for_model, tile_patches
    from mrhash.raster.tiling import tile_grid

    batches = []
    for spec in discover(folder, model.primary.bands)[0]:
        try:
            with open_for_model(spec, model) as source:
                tiles = tile_grid(source, tile_size, None)
                batches += [(b, v) for _, b, v in tile_patches(source, tiles,
                                                               model.patch_size, batch_size)]
        except Exception as error:  # a bad raster is skipped as the indexer skips it
            print(f"bench: skipped {spec.paths[0]}: {error}", file=sys.stderr)
    n = sum(len(b) for b, _ in batches)
    start = time.perf_counter()
    for batch, valid in batches:
        model.encode(batch, valid)
    seconds = time.perf_counter() - start
    return {"tiles": n, "seconds": round(seconds, 2), "tiles_per_s": round(n / seconds, 1)}


def grow_index(index_dir: Path, n_rows: int, seed: int = 0, flip: float = 0.03) -> int:
    """Replicate an index's real tiles until it holds `n_rows`: each copy's code has every bit
    flipped with probability `flip`, and its embedding the same signs flipped (its latent
    kept); a copy's stored thumbnail is its original's (the same window), as a build of that
    many tiles would have stored one for each."""
    import sqlite3

    from mrhash.index.folder import IndexFolder
    from mrhash.index.store import TileRow, Transaction
    from mrhash_contract.index_layout import THUMBNAILS_FILE

    folder = IndexFolder(index_dir)
    store = folder.store
    pictures = (sqlite3.connect(index_dir / THUMBNAILS_FILE, isolation_level=None)
                if (index_dir / THUMBNAILS_FILE).is_file() else None)
    rng = np.random.default_rng(seed)
    real = list(store.tiles(store.all_codes(folder.bits // 8)[0].tolist()).values())
    embeddings = store.all_embeddings(folder.bits, folder.latent).rows(
        np.array([r.id for r in real]))
    files = {r.path: r for r in store.files().values()}
    next_ordinal = {r.id: r.n_grid for r in files.values()}
    missing = n_rows - len(real)
    chunk = 50_000
    while missing > 0:
        picks = rng.integers(0, len(real), min(chunk, missing))
        by_file: dict[int, list[int]] = {}
        for p in picks:
            by_file.setdefault(files[real[p].path].id, []).append(int(p))
        for file_id, chosen in by_file.items():
            rows = []
            for p in chosen:
                record = real[p]
                rows.append(TileRow(next_ordinal[file_id], record.window, record.bounds,
                                    record.bounds4326, record.valid_fraction))
                next_ordinal[file_id] += 1
            codes = np.frombuffer(b"".join(real[p].code for p in chosen), np.uint8)
            bits = np.unpackbits(codes.reshape(len(chosen), -1), axis=1)
            flips = rng.random(bits.shape) < flip
            bits ^= flips.astype(np.uint8)
            signs = np.hstack([np.where(flips, -1, 1), np.ones((len(chosen), folder.latent))])
            ids = store.add_tiles(file_id, rows, np.packbits(bits, axis=1), done=True,
                                  embeddings=embeddings[chosen] * signs)
            if pictures is not None:
                with Transaction(pictures):
                    pictures.executemany(
                        "INSERT INTO pictures SELECT ?, image FROM pictures WHERE id = ?",
                        [(int(new), real[p].id) for new, p in zip(ids, chosen, strict=True)])
        missing -= len(picks)
    if pictures is not None:
        pictures.close()
    folder.save_codes(folder.load_codes())
    folder.save_embeddings(folder.load_embeddings())
    total = folder.n_tiles()
    folder.close()
    return total


def worker_round_trip(index_dir: Path, n_queries: int) -> dict:
    """p50/p95 ms of one query request -> result line through a warm `mrhash serve`."""
    from mrhash.index.folder import IndexFolder

    folder = IndexFolder(index_dir)
    ids = [row[0] for row in index_layout.footprints(folder.store.db, 200)]
    points = []
    for record in folder.store.tiles(ids[:n_queries]).values():
        minx, miny, maxx, maxy = record.bounds
        points.append(([(minx + maxx) / 2, (miny + maxy) / 2], record.crs))
    folder.close()
    process = subprocess.Popen([sys.executable, "-m", "mrhash", "serve"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               bufsize=1)
    try:
        json.loads(process.stdout.readline())  # ready

        def ask(number: int, params: dict) -> float:
            start = time.perf_counter()
            process.stdin.write(json.dumps({"id": str(number), "method": "query",
                                            "params": {"index": str(index_dir), "k": 20,
                                                       **params}}) + "\n")
            reply = json.loads(process.stdout.readline())
            elapsed = (time.perf_counter() - start) * 1000
            if "result" not in reply:
                raise RuntimeError(f"worker answered {reply}")
            return elapsed

        first = ask(0, {"tile": ids[0]})  # opens the index and loads the model
        ask(1, {"point": points[0][0], "crs": points[0][1]})
        by_id = [ask(10 + i, {"tile": ids[i % len(ids)]}) for i in range(n_queries)]
        by_point = [ask(1000 + i, {"point": p, "crs": c})
                    for i, (p, c) in enumerate(points[:n_queries])]
        process.stdin.write(json.dumps({"id": "end", "method": "shutdown"}) + "\n")
        process.stdin.flush()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    return {"cold_first_query_ms": round(first, 1),
            "tile_id_p50_ms": round(float(np.median(by_id)), 2),
            "tile_id_p95_ms": round(float(np.percentile(by_id, 95)), 2),
            "point_p50_ms": round(float(np.median(by_point)), 2),
            "point_p95_ms": round(float(np.percentile(by_point, 95)), 2)}


def summary(runs: list[dict]) -> dict:
    """Medians of one encoder's alternated runs, and the runs."""
    e2e_rate = float(np.median([r["end_to_end_tiles_per_s"] for r in runs]))
    bare_rate = float(np.median([r["bare_tiles_per_s"] for r in runs]))
    return {"end_to_end_tiles_per_s": e2e_rate, "bare_tiles_per_s": bare_rate,
            "ratio": round(e2e_rate / bare_rate, 3),
            "median_run_ratio": float(np.median([r["ratio"] for r in runs])), "runs": runs}


def run(args: argparse.Namespace) -> dict:
    from mrhash.device import limit_threads
    from mrhash.index.build import build_index
    from mrhash.model.package import load_model

    threads = limit_threads()
    encoders = args.encoders.split(",")
    models = {name: load_model(args.model).use_encoder(name) for name in encoders}
    model = models[encoders[0]]
    tile_size = args.tile_size or model.patch_size
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mrhash-bench-"))
    index_dir = workdir / "index"
    for each in models.values():  # warm-up so neither measure pays first-call costs
        each.encode(np.zeros((2, each.n_bands, each.patch_size, each.patch_size), np.float32))
    runs: dict[str, list[dict]] = {name: [] for name in encoders}
    for _ in range(args.repeats):  # alternated, so a busy spell on a shared CPU hits all
        for name, each in models.items():
            start = time.perf_counter()
            result = build_index(args.folder, args.model, index_dir, tile_size, None,
                                 rebuild=True, batch_size=args.batch_size, model=each)
            e2e_s = time.perf_counter() - start
            bare = bare_encoder(each, args.folder, tile_size, args.batch_size)
            runs[name].append({"tiles": result.added, "skipped": len(result.skipped),
                               "end_to_end_tiles_per_s": round(result.added / e2e_s, 1),
                               "bare_tiles_per_s": bare["tiles_per_s"],
                               "ratio": round(result.added / e2e_s / bare["tiles_per_s"], 3)})
    figures = {"model_bits": model.bits, "patch_size": model.patch_size,
               "input_size": model.config.get("input_size"), "tile_size": tile_size,
               "batch_size": args.batch_size, "torch_threads": threads,
               "tiles": runs[encoders[0]][0]["tiles"],
               "encoders": {name: summary(rows) for name, rows in runs.items()}}
    if args.worker_tiles:
        start = time.perf_counter()
        figures["worker_index_tiles"] = grow_index(index_dir, args.worker_tiles)
        figures["grow_index_s"] = round(time.perf_counter() - start, 1)
        figures["worker"] = worker_round_trip(index_dir, args.queries)
    return figures
