"""Ablation of the training options on a labelled folder: each option alone and together,
MrHash mAP over several seeds (mean and SAMPLE sd), scored like `mrhash eval` (codes from the
saved package's `encode`, leave-one-out, ties at their expectation).

    python -m mrhash.benchmarks.ablation --dataset DIR --seeds 0-7 --bits 64 --json out.json

Features (8 views) are extracted once; every variant is the former defaults ("before") plus
the overrides listed in VARIANTS. Labels are read only to score.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

# what each option was before issue 14, so a variant changes only what it names
BEFORE: dict[str, Any] = {"views": 1, "consistency_weight": 0.0, "similarity_weight": 0.0,
                          "kmeans_restarts": 4, "kmeans_select": "inertia", "heads": 1,
                          "head_step": 0}
VIEWS = {"views": 8}
CONSISTENCY = {"views": 8, "consistency_weight": 1.0}
HEADS4 = {"heads": 4, "head_step": 8}      # k = 16, 24, 32, 40
HEADS8 = {"heads": 8, "head_step": 4}      # k = 16, 20, ..., 44
HEADS16 = {"heads": 16, "head_step": 2}    # k = 16, 18, ..., 46 (the default)
SIMILARITY = {"similarity_weight": 1.0}
RESTARTS = {"kmeans_restarts": 20}
VARIANTS: dict[str, dict[str, Any]] = {
    "before (1 view, 1 head, 4 restarts by inertia)": {},
    "k-means 20 restarts, lowest inertia": RESTARTS,
    "k-means 20 restarts, most agreeing (ARI medoid)": {**RESTARTS, "kmeans_select": "agreement"},
    "8 views (autoencoder + hash KL)": VIEWS,
    "8 views + code consistency": CONSISTENCY,
    "4 heads": HEADS4,
    "16 heads": HEADS16,
    "similarity term": SIMILARITY,
    "8 views + consistency + 20 restarts": {**CONSISTENCY, **RESTARTS},
    "8 views + consistency + 4 heads": {**CONSISTENCY, **HEADS4},
    "8 views + consistency + 4 heads + 20 restarts": {**CONSISTENCY, **HEADS4, **RESTARTS},
    "8 views + consistency + 8 heads": {**CONSISTENCY, **HEADS8},
    "8 views + consistency + 4 heads + similarity": {**CONSISTENCY, **HEADS4, **SIMILARITY},
    "8 views + consistency + 8 heads + similarity": {**CONSISTENCY, **HEADS8, **SIMILARITY},
    "8 views + consistency + 16 heads + similarity (default)": {**CONSISTENCY, **HEADS16,
                                                                **SIMILARITY},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="folder of class sub-folders")
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--bits", default="64")
    parser.add_argument("--variants", help="comma-separated variant numbers (default: all)")
    parser.add_argument("--json", help="write the figures here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    import torch
    from mrhash.app.commands.model import EUROSAT_AUX, parse_aux_bands
    from mrhash.model.datasets import encode_samples
    from mrhash.model.train import TrainConfig
    from mrhash.raster.sources import SourceSpec

    from mrhash_research.commands import parse_seeds
    from mrhash_research.evaluate import (
        hamming_distances,
        prepare,
        scan_dataset,
        score,
        train_package,
    )

    paths, labels = scan_dataset(args.dataset)
    chosen = list(VARIANTS.items())
    if args.variants:
        chosen = [chosen[int(i)] for i in args.variants.split(",")]
    seeds, bits = parse_seeds(args.seeds), [int(b) for b in args.bits.split(",")]
    device = torch.device("cpu")
    out: dict[str, Any] = {"dataset": args.dataset, "seeds": seeds, "variants": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = TrainConfig(primary=tuple(SourceSpec("primary", (p,), (4, 3, 2)) for p in paths),
                           output=str(Path(tmp) / "m.safetensors"),
                           aux_bands=parse_aux_bands(EUROSAT_AUX), device="cpu", views=8)
        samples, cache = prepare(base, device, None)
        try:
            for name, overrides in chosen:
                for b in bits:
                    maps = []
                    for seed in seeds:
                        config = TrainConfig(**{**base.__dict__, **BEFORE, **overrides,
                                                "bits": b, "seed": seed})
                        model = train_package(_with_views(cache, config.views), config, device)
                        codes = encode_samples(model, samples)
                        maps.append(round(float(score(hamming_distances(codes), labels)
                                                .ap.mean()), 4))
                    row = {"variant": name, "overrides": overrides, "bits": b, "map": maps,
                           "mean": round(float(np.mean(maps)), 4),
                           "sd": round(float(np.std(maps, ddof=1)), 4) if len(maps) > 1 else None}
                    print(f"{name:<50} {b:>3} bits  mAP {row['mean']:.4f} ± {row['sd']}",
                          file=sys.stderr, flush=True)
                    out["variants"].append(row)
        finally:
            samples.close()
    return out


def _with_views(cache, views: int):
    """The cache with only the first `views` views (1 = none)."""
    import dataclasses

    if views <= 1:
        return dataclasses.replace(cache, view_front=None, view_pooled=None)
    return dataclasses.replace(cache, view_front=cache.view_front[:views - 1],
                               view_pooled=cache.view_pooled[:views - 1])


def main(argv: list[str] | None = None) -> int:
    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads

    parser = argparse.ArgumentParser(prog="python -m mrhash.benchmarks.ablation",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    limit_threads()
    write_json(args.json, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
