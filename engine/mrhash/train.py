"""MrHash training: multisource features -> reconstruction autoencoder -> k-means pseudo
multi-labels -> hash network trained with KL losses; the result is one model package file.

Stages (all on cached features, so a CPU can train on 10,000 tiles in minutes):

1. features: every source's patches are normalised (per-source `BandStats`, p2-p98) and run
   through the ImageNet Lite0 backbone once. The primary's activation entering the last
   `trainable_blocks` blocks is cached (those blocks are fine-tuned later); each source's
   pooled features and per-band mean/std statistics become its reconstruction targets.
2. autoencoder: primary features -> latent -> every source's targets (weighted MSE).
3. pseudo-labels: k-means on the latent gives centres; Student-t soft assignment q.
4. hash network: backbone tail + linear + tanh -> bits; a linear map of the code to the latent.
   Each epoch the DEC target p is recomputed from q of the features; the loss is
   KL(p || q_code) + KL(p || q_features) + lambda * reconstruction.

BatchNorm statistics of the backbone stay frozen (eval mode) so small batches cannot wreck
the ImageNet statistics and CPU runs are deterministic for a given seed.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrhash.backbone import BACKBONE_NAME, FEATURE_DIM, Backbone
from mrhash.config import VALID_BITS, TrainConfig
from mrhash.datasets import Samples
from mrhash.errors import BadInput
from mrhash.jobs import JobControl
from mrhash.model import HashNet, MultiSourceAutoencoder, TargetBlock
from mrhash.normalize import BandStats, compute_stats
from mrhash.pseudolabels import kl_divergence, kmeans, soft_assign, target_distribution

STATS_SAMPLE = 512  # patches per source used to compute the normalisation percentiles


@dataclass
class TrainResult:
    model: str
    fingerprint: str
    seconds: float
    n_samples: int
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    previous: str | None = None  # where the model this run replaced was kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FeatureCache:
    """Backbone outputs of every sample, computed once (and shared by several bit lengths)."""

    names: tuple[str, ...]
    band_counts: tuple[int, ...]
    stats: list[BandStats]
    backbone: Backbone             # the primary's, with ImageNet weights (copied per fit)
    cut: int
    front: torch.Tensor            # primary activation at `cut`
    pooled: torch.Tensor           # primary pooled features [N, 1280]
    blocks: list[TargetBlock]
    targets: list[torch.Tensor]    # standardised, one per block
    refs: list[str]
    seconds: float

    def __len__(self) -> int:
        return len(self.refs)


class Progress:
    """Turns stage-local counts into one done/total for JobControl (so its ETA is global):
    a feature batch, an autoencoder batch and a hash batch are weighted by rough costs."""

    def __init__(self, job: JobControl | None, total: float):
        self.job, self.total, self.done = job, total, 0.0

    def step(self, amount: float, message: str, **metrics: Any) -> None:
        self.done += amount
        if self.job is not None:
            self.job.check()
            self.job.report(self.done, self.total, message, **metrics)


def normalise(batch: np.ndarray, mask: np.ndarray, stats: BandStats) -> np.ndarray:
    """Raw [B, C, H, W] -> [0, 1] with the source's percentiles; invalid pixels -> 0."""
    return stats.apply(batch) * mask[:, None, :, :]


def band_statistics(x01: torch.Tensor) -> torch.Tensor:
    """Per-band mean and std of normalised patches: [B, C, H, W] -> [B, 2C]."""
    return torch.cat([x01.mean(dim=(2, 3)), x01.std(dim=(2, 3))], dim=1)


def _batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def compute_source_stats(samples: Samples) -> list[BandStats]:
    """Percentile stats per source from up to STATS_SAMPLE patches spread over the set."""
    n = len(samples)
    picks = np.unique(np.linspace(0, n - 1, min(n, STATS_SAMPLE)).round().astype(int))
    per_source: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in samples.names]
    for idx in _batches(len(picks), 64):
        for s, (arrays, masks) in enumerate(samples.read_batch(picks[idx])):
            per_source[s] += list(zip(arrays, masks, strict=True))
    return [compute_stats(arrays) for arrays in per_source]


def extract_features(samples: Samples, config: TrainConfig, device: torch.device,
                     progress: Progress | None = None) -> FeatureCache:
    """Stage 1: normalisation stats, then one backbone pass over every source of every sample."""
    started = time.monotonic()
    if len(samples) < config.clusters:
        raise BadInput(f"{len(samples)} samples are fewer than the {config.clusters} clusters "
                       "asked for: give more data or fewer --clusters")
    n_bands = samples.band_counts[0]
    if config.rgb and (len(config.rgb) != 3 or not all(0 <= i < n_bands for i in config.rgb)):
        raise BadInput(f"--rgb needs the positions of red, green and blue among the primary's "
                       f"{n_bands} bands (1..{n_bands}), got "
                       f"{','.join(str(i + 1) for i in config.rgb)}")
    stats = compute_source_stats(samples)
    primary = Backbone(n_bands, config.rgb, config.input_size,
                       weights_path=config.backbone_weights).to(device).eval()
    # auxiliary sources share the primary's Lite0 weights, each with its own band stem
    aux_nets = [Backbone(c, None, config.input_size, net=primary.net).to(device).eval()
                for c in samples.band_counts[1:]]
    cut = primary.cut_for(config.trainable_blocks)
    fronts, pooled = [], []
    raw_targets: list[list[torch.Tensor]] = [[] for _ in range(2 * len(samples.names))]
    with torch.no_grad():
        for idx in _batches(len(samples), config.batch_size):
            reads = samples.read_batch(idx)
            for s, (arrays, masks) in enumerate(reads):
                x = torch.from_numpy(normalise(arrays, masks, stats[s])).to(device)
                if s == 0:
                    front = primary.front(x, cut)
                    feats = primary.tail(front, cut)
                    fronts.append(front.cpu())
                    pooled.append(feats.cpu())
                else:
                    feats = aux_nets[s - 1](x)
                raw_targets[2 * s].append(feats.cpu())
                raw_targets[2 * s + 1].append(band_statistics(x).cpu())
            if progress:
                progress.step(len(idx) * len(reads) * (config.input_size / 64) ** 2,
                              f"features {idx[-1] + 1}/{len(samples)}")
    blocks, targets = [], []
    for s, name in enumerate(samples.names):
        for kind, weight in (("features", 1.0), ("stats", config.stats_weight)):
            t = torch.cat(raw_targets[2 * s + (kind == "stats")])
            blocks.append(TargetBlock(name, kind, t.shape[1], weight))
            targets.append(_standardise(t))
    return FeatureCache(samples.names, samples.band_counts, stats, primary.cpu(), cut,
                        torch.cat(fronts), torch.cat(pooled), blocks, targets,
                        list(samples.refs), time.monotonic() - started)


def _standardise(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(dim=0)) / t.std(dim=0).clamp(min=1e-4)


def fit(cache: FeatureCache, config: TrainConfig, device: torch.device,
        progress: Progress | None = None) -> tuple[HashNet, list[dict[str, Any]]]:
    """Stages 2-4 on cached features; returns the trained hash network (on CPU) and the
    per-epoch history."""
    import copy

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(cache)
    backbone = copy.deepcopy(cache.backbone).to(device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    tail_params = backbone.tail_parameters(cache.cut)
    for p in tail_params:
        p.requires_grad_(True)

    pooled = cache.pooled.to(device)
    mean, scale = pooled.mean(dim=0), pooled.std(dim=0).clamp(min=1e-4)
    front = cache.front.to(device)
    targets = [t.to(device) for t in cache.targets]
    ae = MultiSourceAutoencoder(cache.blocks, FEATURE_DIM, config.latent_dim).to(device)
    history: list[dict[str, Any]] = []
    ae_epochs, hash_epochs = config.stage_epochs(n)

    # stage 2: autoencoder on the (fixed) ImageNet features
    opt = torch.optim.Adam(ae.parameters(), lr=config.lr)
    x_std = (pooled - mean) / scale
    for epoch in range(ae_epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            idx = idx.to(device)
            _, outs = ae(x_std[idx])
            loss = ae.reconstruction_loss(outs, [t[idx] for t in targets])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            if progress:
                progress.step(len(idx) * AE_COST, f"autoencoder epoch {epoch + 1}")
        history.append({"stage": "autoencoder", "epoch": epoch + 1, "loss": total / n})
        if progress:
            progress.step(0, f"autoencoder epoch {epoch + 1}/{ae_epochs}",
                          stage="autoencoder", epoch=epoch + 1, loss=round(total / n, 5))

    # stage 3: centres of the latent
    with torch.no_grad():
        latent = ae.encoder(x_std)
    centres = torch.nn.Parameter(kmeans(latent.cpu(), config.clusters, generator=gen).to(device))

    # stage 4: hash network
    net = HashNet(backbone, config.bits).to(device)
    net.head.set_standardisation(mean, scale)
    to_latent = torch.nn.Linear(config.bits, config.latent_dim).to(device)
    heads = list(net.head.parameters()) + list(to_latent.parameters()) + list(ae.parameters())
    groups = [{"params": heads + [centres], "lr": config.lr}]
    if tail_params:
        groups.append({"params": tail_params, "lr": config.backbone_lr})
    opt = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, config.lr_step),
                                               gamma=config.lr_gamma)
    for epoch in range(hash_epochs):
        with torch.no_grad():  # DEC target from the current features, fixed for the epoch
            q_all = torch.cat([soft_assign(ae.encoder((backbone.tail(front[i], cache.cut)
                                                       - mean) / scale), centres, config.alpha)
                               for i in torch.arange(n, device=device).split(256)])
            p_all = target_distribution(q_all)
        sums = {"loss": 0.0, "kl_code": 0.0, "kl_features": 0.0, "reconstruction": 0.0}
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            idx = idx.to(device)
            feats = backbone.tail(front[idx], cache.cut)
            latent, outs = ae((feats - mean) / scale)
            code = net.head(feats)
            p = p_all[idx]
            kl_code = kl_divergence(p, soft_assign(to_latent(code), centres, config.alpha))
            kl_feat = kl_divergence(p, soft_assign(latent, centres, config.alpha))
            recon = ae.reconstruction_loss(outs, [t[idx] for t in targets])
            loss = kl_code + kl_feat + config.recon_weight * recon
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, value in zip(sums, (loss, kl_code, kl_feat, recon), strict=True):
                sums[key] += value.item() * len(idx)
            if progress:
                progress.step(len(idx) * HASH_COST, f"hash epoch {epoch + 1}")
        schedule.step()
        record = {"stage": "hash", "epoch": epoch + 1, **{k: v / n for k, v in sums.items()}}
        history.append(record)
        if progress:
            progress.step(0, f"hash epoch {epoch + 1}/{hash_epochs}", stage="hash",
                          epoch=epoch + 1, loss=round(record["loss"], 5),
                          kl_code=round(record["kl_code"], 5))
    return net.cpu().eval(), history


# rough per-sample costs relative to one 64 px backbone pass of one source (for the ETA only;
# measured ratios on CPU: an autoencoder step ~0.3, a hash step with the fine-tuned tail ~0.8)
AE_COST = 0.3
HASH_COST = 0.8


def total_work(n: int, n_sources: int, config: TrainConfig) -> float:
    ae_epochs, hash_epochs = config.stage_epochs(n)
    backbone = n_sources * (config.input_size / 64) ** 2
    return n * (backbone + ae_epochs * AE_COST + hash_epochs * HASH_COST)


def package_config(config: TrainConfig, cache: FeatureCache, samples_meta: dict[str, Any]
                   ) -> dict[str, Any]:
    """The JSON config stored in the model package (see package.py)."""
    names = zip(cache.names, cache.band_counts, strict=True)
    return {
        "sources": [{"name": name, "bands": n} for name, n in names],
        "primary": config.primary[0].to_dict(),
        "auxiliary": [spec.to_dict() for spec in config.auxiliary]
        + [{"name": name, "bands": list(bands), "from": "primary file"}
           for name, bands in config.aux_bands],
        "bands": cache.band_counts[0],
        "rgb": list(config.rgb) if config.rgb else None,
        "patch_size": config.patch_size,
        "input_size": config.input_size,
        "stats": cache.stats[0].to_dict(),
        "source_stats": {name: stats.to_dict()
                         for name, stats in zip(cache.names, cache.stats, strict=True)},
        "bits": config.bits,
        "backbone": BACKBONE_NAME,
        "params": config.params(),
        "training": samples_meta,
    }


def train_model(config: TrainConfig, job: JobControl | None = None) -> TrainResult:
    """Train and write the model package to `config.output` (atomically, only at the end: a
    cancelled or failed run leaves no file)."""
    from mrhash.datasets import RasterSamples
    from mrhash.device import resolve_device
    from mrhash.package import save_model

    config.validate()
    started = time.monotonic()
    device = resolve_device(config.device)
    with contextlib.ExitStack() as stack:
        samples = stack.enter_context(RasterSamples.from_config(config))
        skipped = samples.skipped
        if len(samples) == 0:
            raise BadInput("no usable sample in the primary rasters" + (
                f" ({len(skipped)} skipped, first: {skipped[0]})" if skipped else ""))
        progress = Progress(job, total_work(len(samples), len(samples.names), config))
        cache = extract_features(samples, config, device, progress)
    t_features = time.monotonic() - started
    net, history = fit(cache, config, device, progress)
    meta = {"n_samples": len(cache), "skipped": len(skipped), "history": history[-1:]}
    previous = keep_previous(Path(config.output))
    fingerprint = save_model(config.output, net, package_config(config, cache, meta))
    seconds = time.monotonic() - started
    return TrainResult(str(Path(config.output)), fingerprint, round(seconds, 2), len(cache),
                       str(device), history, skipped,
                       {"features_s": round(t_features, 2),
                        "fit_s": round(seconds - t_features, 2)}, previous)


def keep_previous(output: Path) -> str | None:
    """A model about to be replaced is kept as `<name>.previous.safetensors`: indexes built
    with it still need it (their queries name it and take `--model` to find it)."""
    if not output.is_file():
        return None
    previous = output.with_name(f"{output.stem}.previous{output.suffix}")
    shutil.copy2(output, previous)
    return str(previous)


def check_bits(bits: Sequence[int]) -> None:
    bad = [b for b in bits if b not in VALID_BITS]
    if bad:
        raise BadInput(f"bits must be among {VALID_BITS}, got {bad}")

