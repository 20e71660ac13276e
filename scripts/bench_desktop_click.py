"""The click path as the analyst meets it, in the real QGIS desktop (docs/BENCHMARKS.md,
"Clicks in the desktop"): real clicks through the plugin's map tool on a real 13-band 4096 x
4096 mosaic of EuroSAT images, default settings (k = 12, snap on), on a 10,000-tile index of
the mosaic and on the same index grown to 1,000,000 tiles; per click, the time from the mouse
release to the thumbnails painted in the dock and to the hits drawn on the canvas, for the
first click after QGIS starts, places not seen before (cold) and the same places again (warm).

    .venv/bin/python scripts/bench_desktop_click.py --dataset ../shared/data/eurosat_ms_dev \\
        --json build/bench/desktop_click.json

The mosaic, the model (a short training on it), the 10k index (64 px tiles, stride 40) and
the grown 1M index are built once under --work and kept for the next run. QGIS runs under
xvfb-run with a throw-away profile (qgis_profile.py); qgis_click_bench.py does the clicking
inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "engine"))

from qgis_profile import make_profile  # noqa: E402

MRHASH = [sys.executable, "-m", "mrhash"]
CLICKS = 20  # places clicked cold, then the same again warm


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def prepare(dataset: Path, work: Path, grown: int) -> dict[str, Path]:
    """The mosaic, a model, the 10k index and its grown copy (each kept when present)."""
    from bench_thumbnails import build_mosaic

    folder = work / "mosaic"
    mosaic = build_mosaic(dataset, folder / "mosaic_4096.tif", 4096, False)
    model = work / "model.safetensors"
    if not model.exists():
        run(*MRHASH, "train", "--primary", str(mosaic), "--rgb", "4,3,2", "--epochs", "2",
            "--ae-epochs", "4", "--max-samples", "1500", "--output", str(model))
    small = work / "index_10k"
    if not (small / "index.sqlite").exists():
        run(*MRHASH, "index", str(folder), "--model", str(model), "--index",
            str(small), "--tile-size", "64", "--stride", "40")
    big = work / f"index_{grown // 1000}k"
    if not (big / "index.sqlite").exists():
        from mrhash_research.benchmarks.indexing import grow_index

        shutil.rmtree(big, ignore_errors=True)
        shutil.copytree(small, big)
        grow_index(big, grown)
    return {"mosaic": mosaic, "model": model, "10k": small, "1M": big}


def desktop(work: Path, mosaic: Path, index: Path, name: str, timeout: float) -> dict:
    """One QGIS session clicking on `index`: its figures (qgis_click_bench.py)."""
    out = work / f"clicks_{name}.json"
    out.unlink(missing_ok=True)
    profile = work / f"profile_{name}"
    shutil.rmtree(profile, ignore_errors=True)
    make_profile(profile, {"last/index": str(index)})
    config = work / f"click_config_{name}.json"
    config.write_text(json.dumps({"raster": str(mosaic), "index": str(index), "clicks": CLICKS,
                                  "out": str(out)}))
    venv_bin = str(REPO / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    env["MRHASH_CLICK_CONFIG"] = str(config)
    (work / "home").mkdir(exist_ok=True)
    env["HOME"] = str(work / "home")
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo",
               "--noversioncheck", "--profiles-path", str(profile), "--code",
               str(REPO / "scripts" / "qgis_click_bench.py")]
    started = time.perf_counter()
    with (work / f"qgis_{name}.log").open("w") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                       timeout=timeout)
    if not out.exists():
        raise SystemExit(f"QGIS wrote no figures: see {work / f'qgis_{name}.log'}")
    figures = json.loads(out.read_text())
    figures["session_s"] = round(time.perf_counter() - started, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="EuroSAT-MS dev folder")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench" / "click")
    parser.add_argument("--grown", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.dataset, work, args.grown)
    figures: dict = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                              cwd=REPO, capture_output=True,
                                              text=True).stdout.strip()}
    for name in ("10k", "1M"):
        figures["load_before_" + name] = [round(v, 2) for v in os.getloadavg()]
        figures[name] = desktop(work, paths["mosaic"], paths[name], name, args.timeout)
        print(name, json.dumps(figures[name]["summary"]), flush=True)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
