"""Trace a training's remaining-time estimate against the time that really remained, at the
guided start's settings (primary RGB = bands 4,3,2 of 13-band Sentinel-2 files, the other
bands of the same files as auxiliary sources, a sample of tiles): is the ETA the dock shows
honest? Prints one line every few percent and writes the whole trace beside the model.

    .venv/bin/python scripts/probe_train_eta.py FOLDER_OR_RASTER --samples 1700 \\
        --output /tmp/eta.safetensors
"""

from __future__ import annotations

import argparse
import json
import time

from mrhash.jobs import JobControl
from mrhash.model.datasets import specs_from_paths
from mrhash.model.train import TrainConfig, train_model

AUX_BANDS = (("nir", (8,)), ("rededge_swir", (5, 6, 7, 13, 11, 12)), ("atmosphere", (1, 9, 10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("primary", help="a 13-band raster or a folder of them")
    parser.add_argument("--samples", type=int, default=1700, help="max_samples (default 1700)")
    parser.add_argument("--output", required=True, help="the model file to write")
    args = parser.parse_args()
    events: list[tuple[float, float | None, float | None, str]] = []
    started = time.monotonic()
    job = JobControl(lambda e: events.append((time.monotonic() - started, e.get("fraction"),
                                              e.get("eta_s"), e.get("message", "")[:40])),
                     min_interval_s=1.0)
    config = TrainConfig(primary=tuple(specs_from_paths([args.primary], (4, 3, 2), "primary")),
                         output=args.output, aux_bands=AUX_BANDS, max_samples=args.samples)
    train_model(config, job)
    total = time.monotonic() - started
    rows = [(round(t, 1), f, eta, round(total - t, 1), message)
            for t, f, eta, message in events if eta]
    with open(args.output + ".eta.json", "w") as out:
        json.dump({"total_s": total, "rows": rows}, out)
    for t, f, eta, left, message in rows[:: max(1, len(rows) // 25)]:
        print(f"{t:7.1f} s  {100 * (f or 0):5.1f} %  ETA {eta:6.1f} s  really left {left:6.1f} s"
              f"  ratio {eta / left if left else 0:4.2f}  {message}")
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
