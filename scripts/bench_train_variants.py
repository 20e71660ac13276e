"""Training variants side by side on the 200 EuroSAT-MS dev images (docs/benchmarks/model.md):
the features are computed once, then every variant is trained per seed on them, as
`mrhash eval` does, and scored by leave-one-out mAP of the 64-bit codes (labels only to score).

    # whole set, seeds 0-7: mean ± sample sd
    .venv/bin/python scripts/bench_train_variants.py --dataset ../shared/data/eurosat_ms_dev \\
        --seeds 0-7 --variants '{"defaults": {}, "agreement": {"kmeans_select": "agreement"}}'
    # two stratified halves: unseen / seen half and the gap
    .venv/bin/python scripts/bench_train_variants.py --dataset ... --seeds 0-3 --inductive

A variant is TrainConfig fields. Three prototypes that are not engine options (measured, not
kept) are switched on by --prototype: `crop-jitter` (views 1.. of training also randomly
cropped to >= 60% of the area and re-lit by +-0.15 brightness, +-20% contrast),
`ae-ensemble` (2 autoencoders of half the latent each, clustered on their joined latents) and
`no-aux` (the primary alone: no auxiliary source).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

PROTOTYPES = ("crop-jitter", "ae-ensemble", "no-aux")


def crop_jitter(dihedral, crop=0.6, brightness=0.15, contrast=0.2):
    """A view function: the dihedral view, then a random crop resized back, then jitter."""
    import torch

    gen = torch.Generator().manual_seed(1234)

    def view(x, v):
        x = dihedral(x, v)
        b = len(x)
        side = torch.empty(b).uniform_(crop, 1.0, generator=gen).sqrt()
        shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - side)[:, None]
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, :, 2] = shift
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, align_corners=False)
        gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * contrast
        offset = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * gain + mean + offset).clamp(0, 1)
    return view


def ae_ensemble(members: int = 2):
    """An autoencoder class of `members` independent autoencoders; latent = their join."""
    import torch
    from mrhash.model.networks import MultiSourceAutoencoder

    class Joined(torch.nn.Module):
        def __init__(self, models):
            super().__init__()
            self.models = models

        def forward(self, x):
            return torch.cat([m.encoder(x) for m in self.models], dim=1)

    class Ensemble(torch.nn.Module):
        def __init__(self, blocks, in_dim, latent_dim=64, hidden=512):
            super().__init__()
            self.models = torch.nn.ModuleList(
                MultiSourceAutoencoder(blocks, in_dim, latent_dim // members, hidden)
                for _ in range(members))
            self.encoder = Joined(self.models)

        def forward(self, x):
            pairs = [m(x) for m in self.models]
            return torch.cat([p[0] for p in pairs], dim=1), [p[1] for p in pairs]

        def reconstruction_loss(self, outputs, targets):
            return sum(m.reconstruction_loss(o, targets)
                       for m, o in zip(self.models, outputs, strict=True)) / members
    return Ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--variants", default='{"defaults": {}}')
    parser.add_argument("--inductive", action="store_true")
    parser.add_argument("--prototype", choices=PROTOTYPES)
    args = parser.parse_args()

    import mrhash.model.train as train
    from mrhash.app.commands.model import EUROSAT_AUX, EUROSAT_PRIMARY, parse_aux_bands
    from mrhash.device import resolve_device
    from mrhash.model.datasets import encode_samples
    from mrhash.raster.sources import SourceSpec
    from mrhash_contract.bands import parse_bands
    from mrhash_research.commands import parse_seeds
    from mrhash_research.evaluate import (
        evaluate_inductive,
        hamming_distances,
        prepare,
        scan_dataset,
        score,
        train_package,
    )

    if args.prototype == "crop-jitter":
        train.dihedral = crop_jitter(train.dihedral)
    elif args.prototype == "ae-ensemble":
        train.MultiSourceAutoencoder = ae_ensemble()
    seeds, device = parse_seeds(args.seeds), resolve_device("cpu")
    paths, labels = scan_dataset(args.dataset)
    base = train.TrainConfig(
        primary=tuple(SourceSpec("primary", (p,), parse_bands(EUROSAT_PRIMARY)) for p in paths),
        output=f"{tempfile.mkdtemp()}/model.safetensors",
        aux_bands=() if args.prototype == "no-aux" else parse_aux_bands(EUROSAT_AUX))
    prepared = None if args.inductive else prepare(base, device, None)
    for name, fields in json.loads(args.variants).items():
        started = time.monotonic()
        config = train.TrainConfig(**{**base.__dict__, **fields})
        label = f"{args.prototype or ''} {name}".strip()
        if args.inductive:  # the protocol of `mrhash eval --inductive`, on this variant
            halves = evaluate_inductive(config, paths, labels, [config.bits], seeds, None,
                                        device)["mrhash"][str(config.bits)]
            print(f"{label}: unseen half {halves['inductive']:.4f}, seen half "
                  f"{halves['transductive']:.4f}, gap {halves['gap']:.4f} "
                  f"({halves['runs']} runs, {time.monotonic() - started:.0f} s)")
            continue
        samples, cache = prepared
        aps = [float(score(hamming_distances(encode_samples(
            train_package(cache, train.TrainConfig(**{**config.__dict__, "seed": seed}),
                          device), samples)), labels).ap.mean()) for seed in seeds]
        print(f"{label}: mAP {np.mean(aps):.4f} ± {np.std(aps, ddof=1):.4f} "
              f"(min {min(aps):.3f}; {' '.join(f'{a:.3f}' for a in aps)}; "
              f"{time.monotonic() - started:.0f} s)")
    if prepared:
        prepared[0].close()

if __name__ == "__main__":
    main()
