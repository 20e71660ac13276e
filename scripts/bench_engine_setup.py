"""Benchmark the engine's set-up from the plugin zip and the engine's start-up, in one run:

- set-up from the package index (`python3 -m mrhash_qgis.setup_engine`, unzipped plugin
  only): seconds and size on disk of the environment;
- the wheels to download (count, MB) and a set-up from that wheel folder with the network cut;
- `mrhash --help` and `mrhash serve` (time to its ready line), medians, with the new
  environment's Python, against the engine of a baseline commit (git worktree) when given.

    .venv/bin/python scripts/bench_engine_setup.py [--baseline COMMIT] [--json FILE]

With --start-up-only, no environment is built: the start-up of this checkout's engine and of
the baseline's is timed with this Python (the checkout's venv), the two alternated run by run.

    .venv/bin/python scripts/bench_engine_setup.py --start-up-only --baseline COMMIT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from package_plugin import REPO, build  # noqa: E402

BASE_PYTHON = "/usr/bin/python3"
NO_NETWORK = {"PIP_CONFIG_FILE": os.devnull, "HTTP_PROXY": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
              "https_proxy": "http://127.0.0.1:9"}


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def set_up(plugins: Path, target: Path, *extra: str, offline: bool = False) -> float:
    """Seconds of one headless set-up (`offline`: pip configuration and network cut)."""
    dropped = {"PYTHONPATH", "VIRTUAL_ENV"} | ({"PIP_FIND_LINKS"} if offline else set())
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(NO_NETWORK if offline else {}, PYTHONPATH=str(plugins))
    started = time.monotonic()
    subprocess.run([BASE_PYTHON, "-m", "mrhash_qgis.setup_engine", "--target", str(target),
                    *extra], env=env, check=True, capture_output=True, cwd=target.parent)
    return time.monotonic() - started


def median_seconds(command: list[str], env: dict, repeats: int, stdin: str | None = None) -> float:
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run(command, env=env, input=stdin, capture_output=True, text=True, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def start_up(python: Path, engine_dir: Path | None, repeats: int) -> dict:
    """`mrhash --help`, and `mrhash serve` until it answers `status` then shuts down."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if engine_dir is not None:
        env["PYTHONPATH"] = str(engine_dir)
    serve_input = ('{"id": "1", "method": "status"}\n'
                   '{"id": "2", "method": "shutdown"}\n')
    return {
        "help_s": median_seconds([str(python), "-m", "mrhash", "--help"], env, repeats),
        "serve_status_s": median_seconds([str(python), "-m", "mrhash", "serve", "--device",
                                          "cpu"], env, repeats, serve_input),
    }


def alternated_start_up(python: Path, engines: dict[str, Path], repeats: int) -> dict:
    """`start_up` of each engine folder, one run of each in turn `repeats` times (a noisy
    machine slows both alike): medians per engine."""
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, folder in engines.items():
            runs[name].append(start_up(python, folder, 1))
    return {name: {key: statistics.median(run[key] for run in found) for key in found[0]}
            for name, found in runs.items()}


def baseline_tree(work: Path, commit: str) -> Path:
    tree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), commit], cwd=REPO,
                   check=True)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit whose engine start-up to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--start-up-only", action="store_true",
                        help="only the start-up, with this Python, against --baseline")
    parser.add_argument("--json", type=Path, default=REPO / "build" / "bench" / "engine_setup.json")
    args = parser.parse_args(argv)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                             capture_output=True, text=True).stdout.strip(),
                    "load_average_at_start": os.getloadavg()[0]}
    if args.start_up_only:
        if not args.baseline:
            parser.error("--start-up-only needs --baseline")
        with tempfile.TemporaryDirectory() as tmp:
            tree = baseline_tree(Path(tmp), args.baseline)
            try:
                result["baseline"] = args.baseline
                result["start_up"] = alternated_start_up(
                    Path(sys.executable), {"this": REPO / "engine", "baseline": tree / "engine"},
                    args.repeats)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
        print(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plugins = work / "plugins"
        zipfile.ZipFile(build(work / "dist")).extractall(plugins)
        index_env = work / "from-index"
        result["setup_from_index_s"] = set_up(plugins, index_env)
        result["env_size_gb"] = size_of(index_env) / 1e9
        wheels = work / "wheels"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "-r",
                        str(plugins / "mrhash_qgis" / "engine" / "requirements.txt")],
                       check=True, capture_output=True)
        result["download_s"] = time.monotonic() - started
        result["wheels"] = len(list(wheels.glob("*.whl")))
        result["wheels_mb"] = size_of(wheels) / 1e6
        result["setup_offline_s"] = set_up(plugins, work / "offline", "--find-links",
                                           str(wheels), offline=True)
        python = index_env / "bin" / "python"
        result["start_up"] = start_up(python, None, args.repeats)
        if args.baseline:
            tree = baseline_tree(work, args.baseline)
            try:
                result["baseline"] = args.baseline
                result["baseline_start_up"] = start_up(python, tree / "engine", args.repeats)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
        shutil.rmtree(work / "offline")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
