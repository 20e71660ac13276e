"""Indexing throughput in one process vs on a local Dask cluster of 1 and 2 worker processes:
the same folder, the same model, `mrhash index` run as a user runs it (a fresh process, a
fresh index), the modes alternated `--repeats` times; medians reported, and the `mrhash info`
digest of every build compared (one process and the cluster must build the same index).

    .venv/bin/python scripts/bench_scaling.py --model M --folder F [--folder G] --json out.json

tiles/s are counted two ways: `build` over the build itself (the index command's own seconds:
after the model is loaded and the cluster is up) and `wall` over the whole command (start-up,
model load, cluster start included: what a user waits for).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MRHASH = [sys.executable, "-m", "mrhash"]


def run_index(folder: str, model: str, index: Path, mode: str, extra: list[str]) -> dict:
    out = index.with_suffix(".json")
    command = [*MRHASH, "index", folder, "--model", model, "--index", str(index),
               "--json", str(out), *extra]
    if mode != "single":
        command += ["--dask", mode]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    result = json.loads(out.read_text())
    info = json.loads(subprocess.run([*MRHASH, "info", "--index", str(index)], check=True,
                                     capture_output=True, text=True).stdout)
    return {"tiles": result["added"], "build_s": result["seconds"], "wall_s": round(wall, 2),
            "digest": info["digest"]}


def bench_folder(folder: str, model: str, modes: list[str], repeats: int, extra: list[str],
                 workdir: Path) -> dict:
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for repeat in range(repeats):
        for mode in modes:  # alternated: drift of a noisy machine hits every mode alike
            index = workdir / f"{Path(folder).name}_{mode.replace(':', '')}_{repeat}"
            runs[mode].append(run_index(folder, model, index, mode, extra))
            print(f"bench scaling: {folder} {mode} #{repeat}: {runs[mode][-1]}",
                  file=sys.stderr)
    summary = {}
    for mode, items in runs.items():
        tiles = items[0]["tiles"]
        build = statistics.median(r["build_s"] for r in items)
        wall = statistics.median(r["wall_s"] for r in items)
        summary[mode] = {"tiles": tiles, "build_s": build, "wall_s": wall,
                         "build_tiles_per_s": round(tiles / build, 1),
                         "wall_tiles_per_s": round(tiles / wall, 1)}
    base = summary[modes[0]]
    for mode in modes[1:]:
        summary[mode]["build_speedup"] = round(
            summary[mode]["build_tiles_per_s"] / base["build_tiles_per_s"], 2)
        summary[mode]["wall_speedup"] = round(
            summary[mode]["wall_tiles_per_s"] / base["wall_tiles_per_s"], 2)
    digests = {r["digest"] for items in runs.values() for r in items}
    return {"folder": folder, "modes": summary, "same_digest": len(digests) == 1,
            "runs": runs}


def coordinator_ceiling(model_path: str, raster: str, n_tiles: int, block: int,
                        workdir: Path) -> dict:
    """Tiles/s the coordinator commits (SQLite rows + R-tree, codes and embeddings caches) when
    encoded blocks arrive for free: the most a cluster of any size can index through one
    writer. Real tile rows of a raster's grid, random relaxed codes."""
    import numpy as np
    from mrhash.index.build import _check_settings, discover
    from mrhash.index.builder import Builder
    from mrhash.index.encode import open_for_model
    from mrhash.index.folder import IndexFolder
    from mrhash.index.store import FileState
    from mrhash.model.package import load_model

    model = load_model(model_path)
    spec = next(s for s in discover(raster, model.primary.bands)[0] if len(s.paths) > 1)
    folder = IndexFolder(workdir / "ceiling", create=True)
    _check_settings(folder, model, 8, 4, 0.0, model_path, model.primary.bands)
    builder = Builder(folder, model, 8, 4, 0.0, None, 32)
    rng = np.random.default_rng(0)
    with open_for_model(spec, model) as source:
        plan = builder.plan(spec, source, None, FileState.of(spec.paths))
    n_tiles = min(n_tiles, len(plan.todo))
    blocks = [np.tanh(rng.standard_normal((min(block, n_tiles - i),
                                           model.bits + model.latent_dim)))
              .astype(np.float32) for i in range(0, n_tiles, block)]
    start = time.perf_counter()
    for codes in blocks:
        builder.commit(plan, codes, 0)
    builder.save()
    seconds = time.perf_counter() - start
    folder.close()
    return {"tiles": n_tiles, "block": block, "seconds": round(seconds, 2),
            "tiles_per_s": round(n_tiles / seconds, 1)}


def task_probe(model_path: str, raster: str, n_tiles: int = 256) -> dict:
    """Seconds of one Dask task (`encode_parts`, n tiles of a real raster) in this process, on
    a fresh `local:1` worker (first and second task), and on a worker started the way Dask's
    nanny starts one by default (MALLOC_TRIM_THRESHOLD_ set; the engine's `mallopt` undoes
    it in the task) and with the variable the nanny sets left as it is (what the engine
    avoided before)."""
    import dask
    import torch
    from distributed import Client, LocalCluster
    from mrhash.device import limit_threads
    from mrhash.index.build import discover
    from mrhash.index.dask import NANNY_MALLOC_TRIM, Part, encode_parts
    from mrhash.index.encode import open_for_model
    from mrhash.model.package import load_model, package_bytes
    from mrhash.raster.tiling import tile_grid

    limit_threads()
    model = load_model(model_path)
    spec = next(s for s in discover(raster, model.primary.bands)[0] if len(s.paths) > 1)
    with open_for_model(spec, model) as source:
        tiles = tile_grid(source, model.patch_size)[:n_tiles]
    data = package_bytes(model_path)
    args = (model.fingerprint, model_path, model.encoder_used, [Part(0, spec, tiles, 0)], 32)

    def timed(run) -> list[float]:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            run()
            times.append(round(time.perf_counter() - start, 2))
        return times

    figures = {"tiles": len(tiles), "threads": torch.get_num_threads(),
               "in_process": timed(lambda: encode_parts(data, *args))}
    env = {"MRHASH_THREADS": str(torch.get_num_threads())}
    for name, trim in (("worker", None), ("worker_nanny_default", 65536)):
        with dask.config.set({NANNY_MALLOC_TRIM: trim}):
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40, env=env)
        client = Client(cluster)
        shared = client.scatter(data, broadcast=True)
        figures[name] = timed(lambda client=client, shared=shared: client.submit(
            encode_parts, shared, *args, pure=False).result())
        client.close()
        cluster.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder", action="append",
                        help="folder of rasters (repeat for several)")
    parser.add_argument("--stride", type=int, help="tile stride (more tiles of a big raster)")
    parser.add_argument("--modes", default="single,local:1,local:2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ceiling-raster", help="a big raster (product folder) whose grid of "
                        "8 px tiles, 4 px apart, gives the tiles of the coordinator ceiling")
    parser.add_argument("--ceiling-tiles", type=int, default=200_000)
    parser.add_argument("--probe-raster", help="a raster (product folder) whose first 256 "
                        "tiles time one Dask task in process and on workers")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    extra = ["--stride", str(args.stride)] if args.stride else []
    with tempfile.TemporaryDirectory(prefix="mrhash-scaling-") as tmp:
        figures = {
            "machine": f"{os.cpu_count()} cores",
            "threads": os.environ.get("MRHASH_THREADS") or "single: min(4, cores); local:N: "
                                                           "cores / N per worker",
            "folders": [bench_folder(folder, args.model, args.modes.split(","), args.repeats,
                                     extra, Path(tmp)) for folder in args.folder or ()]}
        if args.probe_raster:
            figures["task_probe"] = task_probe(args.model, args.probe_raster)
        if args.ceiling_raster:
            figures["coordinator_ceiling"] = coordinator_ceiling(
                args.model, args.ceiling_raster, args.ceiling_tiles, 256, Path(tmp))
    text = json.dumps(figures, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
