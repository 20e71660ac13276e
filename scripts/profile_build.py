"""Where an end-to-end `mrhash index` spends its time on a small CPU (issue 26).

1. `--stages`: one build in this process with the reader (`Source.read`), the encoder
   (`HashModel.embed`), the commits (`Builder.commit` less its thumbnails) and the
   thumbnails (`ThumbnailWriter.add`) timed where they run: wall seconds and the calling
   thread's CPU seconds per tile, and the whole process's CPU against the wall (2 cores
   saturated = 2.0). An onnxruntime pool thread's CPU is in the process's, not in the
   encoder's thread.
2. `--variants`: `mrhash index` runs (subprocesses, the real command) of named variants,
   alternated `--repeats` times, medians of the build's own tiles/s (model loading left
   out) and of the command's CPU seconds per tile. A variant is `name=ENV;FLAGS`, e.g.
   `t1=MRHASH_ENCODER_THREADS=1;` or `nothumbs=;--no-thumbnails`.

    .venv/bin/python scripts/profile_build.py --model build/model64.safetensors \\
        --folder build/mosaic_only --stages --variants 'default=;' 't1=MRHASH_ENCODER_THREADS=1;'

The mosaic: `--mosaic SIDE` builds scripts/bench_thumbnails.py's `build_mosaic` of the
EuroSAT dev images into `--folder` first (kept when present).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "scripts"))


class Stage:
    """Wall and thread-CPU seconds of every call of one function (calls of one thread at a
    time: each stage runs in one thread of the build)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def wrap(self, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.wall += time.perf_counter() - wall
                    self.cpu += time.thread_time() - cpu
                    self.calls += 1

        return timed


def stages(model_path: str, folder: str, encoder: str) -> dict:
    """One in-process build with its stages timed (see the module doc)."""
    from mrhash.device import limit_threads
    from mrhash.index import thumbnail_store
    from mrhash.index.build import build_index
    from mrhash.index.builder import Builder
    from mrhash.model.package import HashModel, load_model
    from mrhash.raster.sources import Source

    limit_threads()
    names = ("read", "encode", "commit", "thumbnails")
    timers = {name: Stage() for name in names}
    patched = [(Source, "read"), (HashModel, "embed"), (Builder, "commit"),
               (thumbnail_store.ThumbnailWriter, "add")]
    originals = [getattr(owner, attr) for owner, attr in patched]
    for (owner, attr), original, name in zip(patched, originals, names, strict=True):
        setattr(owner, attr, timers[name].wrap(original))
    model = load_model(model_path).use_encoder(encoder)
    model.embed(model.stats.apply(  # the compiled encoder loaded before the clock starts
        __import__("numpy").zeros((1, model.n_bands, model.patch_size, model.patch_size),
                                  "float32")))
    for timer in timers.values():
        timer.wall = timer.cpu = 0.0
        timer.calls = 0
    try:
        with tempfile.TemporaryDirectory(prefix="mrhash-profile-") as tmp:
            before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            result = build_index(folder, model_path, Path(tmp) / "index", model=model)
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for (owner, attr), original in zip(patched, originals, strict=True):
            setattr(owner, attr, original)
    tiles = result.added
    figures = {name: {"wall_ms_per_tile": round(t.wall / tiles * 1000, 3),
                      "thread_cpu_ms_per_tile": round(t.cpu / tiles * 1000, 3)}
               for name, t in timers.items()}
    # the commit's own share: its thumbnails are timed inside it
    for key in ("wall_ms_per_tile", "thread_cpu_ms_per_tile"):
        figures["commit"][key] = round(figures["commit"][key] - figures["thumbnails"][key], 3)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"tiles": tiles, "wall_s": round(wall, 2), "tiles_per_s": round(tiles / wall, 1),
            "process_cpu_ms_per_tile": round(cpu / tiles * 1000, 3),
            "cores_busy": round(cpu / wall, 2), "stages": figures}


def parse_variant(text: str) -> tuple[str, dict[str, str], list[str]]:
    """`name=ENV;FLAGS` -> (name, env, flags); ENV is space-separated KEY=VALUE pairs."""
    name, _, rest = text.partition("=")
    env_text, _, flags = rest.partition(";")
    env = dict(pair.split("=", 1) for pair in env_text.split())
    return name, env, shlex.split(flags)


def variants(model_path: str, folder: str, specs: list[str], repeats: int) -> dict:
    """Each variant's `mrhash index` runs, alternated (see the module doc)."""
    from mrhash_research.benchmarks import OthersCores

    runs: dict[str, list[dict]] = {}
    parsed = [parse_variant(spec) for spec in specs]
    with tempfile.TemporaryDirectory(prefix="mrhash-profile-") as tmp:
        for _ in range(repeats):
            for name, env, flags in parsed:
                out = Path(tmp) / f"{name}.json"
                command = [sys.executable, "-m", "mrhash", "index", folder, "--model",
                           model_path, "--index", str(Path(tmp) / name), "--rebuild",
                           "--json", str(out), *flags]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                load = os.getloadavg()[0]
                with OthersCores() as others:
                    subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONPATH": str(REPO / "engine"),
                                        **env})
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                result = json.loads(out.read_text())
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                runs.setdefault(name, []).append(
                    {"tiles_per_s": result["tiles_per_s"], "tiles": result["added"],
                     "command_cpu_ms_per_tile": round(cpu / result["added"] * 1000, 3),
                     "load_before": round(load, 2),
                     # cores other jobs kept busy meanwhile (0 on a quiet machine)
                     "others_cores": others.cores})
    return {name: {"tiles_per_s": statistics.median(r["tiles_per_s"] for r in rows),
                   "others_cores_max": max(r["others_cores"] for r in rows),
                   "command_cpu_ms_per_tile": statistics.median(r["command_cpu_ms_per_tile"]
                                                                for r in rows),
                   "runs": rows} for name, rows in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--mosaic", type=int, help="build a mosaic of this side first")
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/data/eurosat_ms_dev"))
    parser.add_argument("--encoder", default="onnx")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.mosaic:
        from bench_thumbnails import build_mosaic

        build_mosaic(Path(args.dataset), Path(args.folder) / f"mosaic_{args.mosaic}.tif",
                     args.mosaic, False)
    figures: dict = {"load_start": os.getloadavg()[0],
                     "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if args.stages:
        figures["stages"] = stages(args.model, args.folder, args.encoder)
    if args.variants:
        figures["variants"] = variants(args.model, args.folder, args.variants, args.repeats)
    figures["load_end"] = os.getloadavg()[0]
    from mrhash.app.cli import write_json

    write_json(args.json, figures)  # stdout without --json
    return 0


if __name__ == "__main__":
    sys.exit(main())
