"""MrHash training: multisource features -> reconstruction autoencoder -> k-means pseudo
multi-labels -> hash network trained with KL losses; the result is one model package file.

Stages (all on cached features, so a CPU can train on 10,000 tiles in minutes):

1. features: every source's patches are normalised (per-source `BandStats`, p2-p98) and run
   through the ImageNet Lite0 backbone once. The primary's activation entering the last
   `trainable_blocks` blocks is cached (those blocks are fine-tuned later), also for `views`
   rotations/flips of each tile (training-only augmentation); each source's pooled features
   and per-band mean/std statistics become its reconstruction targets.
2. autoencoder: primary features (of a random view) -> latent -> every source's targets.
3. pseudo-labels: k-means on the latent (averaged over the views) gives centres, one set per
   head (several partitions = pseudo multi-labels); Student-t soft assignment q.
4. hash network: backbone tail + linear + tanh -> bits; a linear map of the code to the latent.
   Each epoch the DEC target p is recomputed from q of the features; the loss is
   KL(p || q_code) (tile and one random view) + KL(p || q_features) + lambda * reconstruction
   + consistency (code of the tile vs code of its view) + similarity (code cosines follow the
   latent's, so Hamming ranking inside a cluster follows the multisource latent too).

BatchNorm statistics of the backbone stay frozen (eval mode) so small batches cannot wreck
the ImageNet statistics and CPU runs are deterministic for a given seed. The network saved
is the same with or without the training-only terms: encoding costs the same.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mrhash_contract.protocol import TrainRequest, TrainResult

from mrhash.device import resolve_device
from mrhash.errors import BadInput
from mrhash.jobs import JobControl
from mrhash.model.backbone import Backbone, backbone_spec
from mrhash.model.config import VALID_BITS, TrainConfig
from mrhash.model.datasets import RasterSamples, Samples, auxiliary_specs, entry_specs
from mrhash.model.history import keep_replaced
from mrhash.model.networks import HashNet, MultiSourceAutoencoder, TargetBlock
from mrhash.model.package import save_model
from mrhash.model.pseudolabels import kl_divergence, kmeans, soft_assign, target_distribution
from mrhash.model.report import model_report
from mrhash.raster.normalize import BandStats, compute_stats
from mrhash.raster.pull_cache import PullStats, prefetch, remote_specs

STATS_SAMPLE = 512  # patches per source used to compute the normalisation percentiles
# memory allowed for the cached activations of the augmented views: at input 64 a view costs
# 3 KB per tile (8 views of 10,000 tiles: 250 MB); at 224 it is 38 KB, so fewer views fit
VIEW_CACHE_BYTES = 1_500_000_000


def dihedral(x: torch.Tensor, view: int) -> torch.Tensor:
    """View 0..7 of [B, C, H, W] patches: rotation by (view % 4) x 90 degrees, mirrored for
    views 4..7 (the 8 symmetries of a square; overhead imagery has no preferred "up")."""
    x = torch.rot90(x, view % 4, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if view >= 4 else x


def views_that_fit(config: TrainConfig, n: int, front_bytes: int) -> int:
    """config.views, reduced so the cached views stay within VIEW_CACHE_BYTES."""
    if config.views <= 1:
        return 1
    return max(1, min(config.views, 1 + VIEW_CACHE_BYTES // max(1, n * front_bytes)))


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
    # the primary's other rotations/flips (views 1.. of `dihedral`), training-only
    view_front: torch.Tensor | None = None    # [V - 1, N, ...] activation at `cut`
    view_pooled: torch.Tensor | None = None   # [V - 1, N, 1280]

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def n_views(self) -> int:
        return 1 + (0 if self.view_front is None else len(self.view_front))


PHASES = ("features", "autoencoder", "hash")


class Progress:
    """Turns stage-local counts into one done/total for JobControl: a feature batch, an
    autoencoder batch and a hash batch are weighted by rough costs (`stage_work`). The time
    left is measured, not assumed: the phase under way goes on at the rate it has shown, the
    phases still to come at the rate per unit of work seen so far — so a machine on which
    the weights are off (a GPU, a slow disk) still gets an honest remaining time."""

    def __init__(self, job: JobControl | None, total: float | None,
                 plan: dict[str, float] | None = None):
        self.job, self.total, self.done = job, total, 0.0
        self.plan = plan or {}
        self._phase: str | None = None
        self._phase_done, self._phase_started = 0.0, time.monotonic()
        self._last = self._phase_started  # the end of the previous step
        self._seen_units, self._seen_s = 0.0, 0.0  # phases finished

    def replan(self, plan: dict[str, float]) -> None:
        self.plan, self.total = plan, sum(plan.values())

    def step(self, amount: float, message: str, phase: str | None = None,
             **metrics: Any) -> None:
        self.done += amount
        now = time.monotonic()
        if phase is not None and phase != self._phase:
            # this step's work began when the previous step ended: the new phase did it
            if self._phase is not None:
                self._seen_units += self._phase_done
                self._seen_s += self._last - self._phase_started
            self._phase, self._phase_done, self._phase_started = phase, 0.0, self._last
        if phase is not None:
            self._phase_done += amount
            self._last = now
        if self.job is not None:
            self.job.check()
            self.job.report(self.done, self.total, message, eta_s=self.remaining_s(now),
                            **metrics)

    def remaining_s(self, now: float) -> float | None:
        """Seconds left by the rates measured so far (None before any is known)."""
        if self._phase not in self.plan:
            return None
        in_phase = now - self._phase_started
        units, seconds = self._seen_units + self._phase_done, self._seen_s + in_phase
        if units <= 0 or seconds <= 0:
            return None
        average = seconds / units
        # the phase's own rate once it has done enough to tell (its first batches warm up)
        rate = (in_phase / self._phase_done if self._phase_done > 0.05 * self.plan[self._phase]
                else average)
        left = max(self.plan[self._phase] - self._phase_done, 0.0) * rate
        for later in PHASES[PHASES.index(self._phase) + 1:]:
            left += self.plan.get(later, 0.0) * average
        return round(left, 1)


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
                       weights_path=config.backbone_weights, name=config.backbone
                       ).to(device).eval()
    # auxiliary sources share the primary's Lite0 weights, each with its own band stem
    aux_nets = [Backbone(c, None, config.input_size, net=primary.net, name=config.backbone
                         ).to(device).eval()
                for c in samples.band_counts[1:]]
    cut = primary.cut_for(config.trainable_blocks)
    fronts, pooled = [], []
    views: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    n_views = 0  # known once the first front's size is
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
                    if not n_views:
                        n_views = views_that_fit(config, len(samples),
                                                 front[0].numel() * front.element_size())
                        views = [([], []) for _ in range(1, n_views)]
                        if progress and n_views < config.views:  # the ETA counted them
                            progress.replan(stage_work(len(samples), len(samples.names),
                                                       config, n_views))
                    for v, (v_fronts, v_pooled) in enumerate(views, start=1):
                        v_front = primary.front(dihedral(x, v), cut)
                        v_fronts.append(v_front.cpu())
                        v_pooled.append(primary.tail(v_front, cut).cpu())
                else:
                    feats = aux_nets[s - 1](x)
                raw_targets[2 * s].append(feats.cpu())
                raw_targets[2 * s + 1].append(band_statistics(x).cpu())
            if progress:
                progress.step(len(idx) * (len(reads) + len(views)) * (config.input_size / 64) ** 2,
                              f"features {idx[-1] + 1}/{len(samples)}", phase="features")
    blocks, targets = [], []
    for s, name in enumerate(samples.names):
        for kind, weight in (("features", 1.0), ("stats", config.stats_weight)):
            t = torch.cat(raw_targets[2 * s + (kind == "stats")])
            blocks.append(TargetBlock(name, kind, t.shape[1], weight))
            targets.append(_standardise(t))
    view_front = torch.stack([torch.cat(f) for f, _ in views]) if views else None
    view_pooled = torch.stack([torch.cat(p) for _, p in views]) if views else None
    return FeatureCache(samples.names, samples.band_counts, stats, primary.cpu(), cut,
                        torch.cat(fronts), torch.cat(pooled), blocks, targets,
                        list(samples.refs), time.monotonic() - started, view_front, view_pooled)


def _standardise(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(dim=0)) / t.std(dim=0).clamp(min=1e-4)


@dataclass
class Fitted:
    """What `fit` gives: the hash network (on CPU), the per-epoch history and the final
    pseudo-label cluster of every training tile (for the model report)."""

    net: HashNet
    history: list[dict[str, Any]]
    assignments: np.ndarray
    clusters: int


def fit(cache: FeatureCache, config: TrainConfig, device: torch.device,
        progress: Progress | None = None) -> Fitted:
    """Stages 2-4 on cached features."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    backbone = copy.deepcopy(cache.backbone).to(device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    for p in backbone.tail_parameters(cache.cut):
        p.requires_grad_(True)
    pooled = cache.pooled.to(device)
    views = torch.stack([pooled] + ([] if cache.view_pooled is None
                                    else list(cache.view_pooled.to(device))))
    # standardisation over every view: a feature nearly constant over the upright tiles but
    # not over their rotations would otherwise be divided by its tiny upright spread
    mean, scale = views.mean(dim=(0, 1)), views.flatten(0, 1).std(dim=0).clamp(min=1e-4)
    x_views = (views - mean) / scale  # view 0 = the tile as it is
    if not config.augment_ae:
        x_views = x_views[:1]
    state = _FitState(cache, config, device, backbone, mean, scale, gen, progress)
    state.train_autoencoder(x_views)
    state.cluster(x_views)
    return state.train_hash()


@dataclass
class _FitState:
    """What stages 2-4 share: the cached data on the device, the models and the history."""

    cache: FeatureCache
    config: TrainConfig
    device: torch.device
    backbone: Backbone
    mean: torch.Tensor
    scale: torch.Tensor
    gen: torch.Generator
    progress: Progress | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = [t.to(self.device) for t in self.cache.targets]
        self.ae = MultiSourceAutoencoder(self.cache.blocks, self.backbone.feature_dim,
                                         self.config.latent_dim).to(self.device)
        self.ae_epochs, self.hash_epochs = self.config.stage_epochs(len(self.cache))

    def _report(self, amount: float, message: str, **metrics: Any) -> None:
        if self.progress:
            self.progress.step(amount, message, **metrics)

    def _batches(self) -> list[torch.Tensor]:
        n = len(self.cache)
        return [idx.to(self.device)
                for idx in torch.randperm(n, generator=self.gen).split(self.config.batch_size)]

    def _random_views(self, size: int, n_views: int, low: int = 0) -> torch.Tensor:
        if n_views - low == 1:  # no draw: a run without views repeats the seed's stream
            return torch.full((size,), low, dtype=torch.long, device=self.device)
        return torch.randint(low, n_views, (size,), generator=self.gen).to(self.device)

    def train_autoencoder(self, x_views: torch.Tensor) -> None:
        """Stage 2: reconstruct every source's targets from the (fixed) ImageNet features of
        the primary, each sample seen in a random view: the targets of a tile do not depend
        on its orientation, so the latent learns not to either."""
        n = len(self.cache)
        opt = torch.optim.Adam(self.ae.parameters(), lr=self.config.lr)
        for epoch in range(self.ae_epochs):
            total = 0.0
            for idx in self._batches():
                x = x_views[self._random_views(len(idx), len(x_views)), idx]
                _, outs = self.ae(x)
                loss = self.ae.reconstruction_loss(outs, [t[idx] for t in self.targets])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                self._report(len(idx) * AE_COST, f"autoencoder epoch {epoch + 1}",
                             phase="autoencoder")
            self.history.append({"stage": "autoencoder", "epoch": epoch + 1, "loss": total / n})
            self._report(0, f"autoencoder epoch {epoch + 1}/{self.ae_epochs}",
                         stage="autoencoder", epoch=epoch + 1, loss=round(total / n, 5))

    def cluster(self, x_views: torch.Tensor) -> None:
        """Stage 3: k-means centres of the latent (averaged over the views seen in stage 2,
        an orientation-free position of each tile), one set per pseudo-label head."""
        with torch.no_grad():
            latent = torch.stack([self.ae.encoder(x) for x in x_views]).mean(dim=0).cpu()
        self.sizes = self.config.head_sizes(len(self.cache))
        centres = [kmeans(latent, k, n_init=self.config.kmeans_restarts, generator=self.gen,
                          select=self.config.kmeans_select) for k in self.sizes]
        self.centres = torch.nn.Parameter(torch.cat(centres).to(self.device))

    def _assign(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Soft assignment q of latent points to each head's centres."""
        return [soft_assign(z, c, self.config.alpha) for c in self.centres.split(self.sizes)]

    def _kl(self, p: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """KL(p || q(z)), averaged over the pseudo-label heads."""
        return sum(kl_divergence(ph, qh) for ph, qh in zip(p, self._assign(z), strict=True)
                   ) / len(p)

    def _soft_assign_all(self, front: torch.Tensor) -> list[torch.Tensor]:
        """q of every tile from the current features, per head."""
        cut = self.cache.cut
        with torch.no_grad():
            parts = [self._assign(self.ae.encoder((self.backbone.tail(front[i], cut)
                                                   - self.mean) / self.scale))
                     for i in torch.arange(len(front), device=self.device).split(256)]
        return [torch.cat(head) for head in zip(*parts, strict=True)]

    def train_hash(self) -> Fitted:
        """Stage 4: backbone tail + hash head trained so the codes keep the pseudo-labels
        (KL to the DEC target), of the tile and of one of its views, with the codes of both
        pulled together."""
        config, cut, n = self.config, self.cache.cut, len(self.cache)
        front = self.cache.front.to(self.device)
        view_front = (None if self.cache.view_front is None
                      else self.cache.view_front.to(self.device))
        net = HashNet(self.backbone, config.bits, latent=self.ae.encoder).to(self.device)
        net.head.set_standardisation(self.mean, self.scale)
        to_latent = torch.nn.Linear(config.bits, config.latent_dim).to(self.device)
        heads = (list(net.head.parameters()) + list(to_latent.parameters())
                 + list(self.ae.parameters()))
        groups = [{"params": heads + [self.centres], "lr": config.lr}]
        tail_params = self.backbone.tail_parameters(cut)
        if tail_params:
            groups.append({"params": tail_params, "lr": config.backbone_lr})
        opt = torch.optim.Adam(groups)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, config.lr_step),
                                                   gamma=config.lr_gamma)
        keys = ("loss", "kl_code", "kl_features", "reconstruction", "consistency", "similarity")
        for epoch in range(self.hash_epochs):
            # DEC targets, fixed for the epoch
            p_all = [target_distribution(q) for q in self._soft_assign_all(front)]
            sums = dict.fromkeys(keys, 0.0)
            for idx in self._batches():
                feats = self.backbone.tail(front[idx], cut)
                latent, outs = self.ae((feats - self.mean) / self.scale)
                code = net.head(feats)
                p = [ph[idx] for ph in p_all]
                kl_code = self._kl(p, to_latent(code))
                consistency = code.new_zeros(())
                if view_front is not None:
                    v = self._random_views(len(idx), len(view_front) + 1, low=1) - 1
                    code_v = net.head(self.backbone.tail(view_front[v, idx], cut))
                    kl_code = (kl_code + self._kl(p, to_latent(code_v))) / 2
                    consistency = (config.consistency_weight * ((code - code_v) ** 2).mean()
                                   + config.contrastive_weight * nt_xent(code, code_v))
                kl_feat = self._kl(p, latent)
                recon = self.ae.reconstruction_loss(outs, [t[idx] for t in self.targets])
                similarity = (similarity_loss(code, latent.detach()) if config.similarity_weight
                              else code.new_zeros(()))
                loss = (kl_code + kl_feat + config.recon_weight * recon + consistency
                        + config.similarity_weight * similarity)
                opt.zero_grad()
                loss.backward()
                opt.step()
                for key, value in zip(keys, (loss, kl_code, kl_feat, recon, consistency,
                                             similarity), strict=True):
                    sums[key] += value.item() * len(idx)
                self._report(len(idx) * HASH_COST * (1 + (view_front is not None)),
                             f"hash epoch {epoch + 1}", phase="hash")
            schedule.step()
            record = {"stage": "hash", "epoch": epoch + 1, **{k: v / n for k, v in sums.items()}}
            self.history.append(record)
            self._report(0, f"hash epoch {epoch + 1}/{self.hash_epochs}", stage="hash",
                         epoch=epoch + 1, loss=round(record["loss"], 5),
                         kl_code=round(record["kl_code"], 5))
        assignments = self._soft_assign_all(front)[0].argmax(dim=1).cpu().numpy()
        return Fitted(net.cpu().eval(), self.history, assignments, config.clusters)


def similarity_loss(code: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Codes ranked like the multisource latent: the inner products of the relaxed codes (as
    cosines, i.e. 1 - 2 x Hamming / bits for binary codes) regress onto the cosine
    similarities of the latent, pair by pair within the batch."""
    f = torch.nn.functional.normalize
    return ((f(code, dim=1) @ f(code, dim=1).T - f(latent, dim=1) @ f(latent, dim=1).T) ** 2
            ).mean()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
    """Contrastive loss (SimCLR's NT-Xent) between two views' codes: each tile's code must be
    closer to its own view's code than to any other tile's in the batch."""
    za, zb = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    logits = za @ zb.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)) / 2


# rough per-sample costs relative to one 64 px backbone pass of one source (for progress and
# the ETA of the phases not started; measured on 2 CPU cores, 1,700 tiles of a 13-band mosaic,
# 4 sources, docs/BENCHMARKS.md: an autoencoder step ~0.13, a hash step with the fine-tuned
# tail ~0.28 per view; the ETA of the phase under way is its own measured rate)
AE_COST = 0.13
HASH_COST = 0.28


def stage_work(n: int, n_sources: int, config: TrainConfig, views: int | None = None
               ) -> dict[str, float]:
    """Work units of each phase of a run (see Progress); `views`: those that fit (default
    config.views)."""
    ae_epochs, hash_epochs = config.stage_epochs(n)
    views = config.views if views is None else views
    backbone = (n_sources + views - 1) * (config.input_size / 64) ** 2
    return {"features": n * backbone, "autoencoder": n * ae_epochs * AE_COST,
            "hash": n * hash_epochs * HASH_COST * (1 + (views > 1))}


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
        "backbone": config.backbone,
        "params": config.values(),  # the hyper-parameters
        "training": samples_meta,
    }


def train_model(config: TrainConfig, job: JobControl | None = None) -> TrainResult:
    """Train and write the model package to `config.output` (atomically, only at the end: a
    cancelled or failed run leaves no file)."""
    config.validate()
    backbone_spec(config.backbone)  # an unknown name fails before any raster is read
    started = time.monotonic()
    device = resolve_device(config.device)
    if job is not None:  # said at once: opening a large folder's rasters takes a while
        job.report(0, None, f"reading {len(config.primary)} primary raster(s)…", force=True)
    with contextlib.ExitStack() as stack:
        samples = stack.enter_context(RasterSamples.from_config(config))
        skipped = samples.skipped
        if len(samples) == 0:
            raise BadInput("no usable sample in the primary rasters" + (
                f" ({len(skipped)} skipped, first: {skipped[0]})" if skipped else ""))
        plan = stage_work(len(samples), len(samples.names), config)
        progress = Progress(job, sum(plan.values()), plan)
        cache = extract_features(samples, config, device, progress)
    t_features = time.monotonic() - started
    fitted = fit(cache, config, device, progress)
    report = training_report(fitted, cache)
    meta = {"n_samples": len(cache), "skipped": len(skipped), "history": fitted.history[-1:]}
    previous = keep_replaced(Path(config.output))
    fingerprint = save_model(config.output, fitted.net, package_config(config, cache, meta))
    seconds = time.monotonic() - started
    return TrainResult(str(Path(config.output)), fingerprint, round(seconds, 2), len(cache),
                       str(device), fitted.history, skipped,
                       {"features_s": round(t_features, 2),
                        "fit_s": round(seconds - t_features, 2)},
                       previous.kept if previous else None, report,
                       previous.removed if previous else [])


def training_codes(net: HashNet, cache: FeatureCache) -> tuple[np.ndarray, np.ndarray | None]:
    """Relaxed codes [N, bits] of the training tiles and [V - 1, N, bits] of their cached
    views, from the cached activations (the same numbers as encoding the patches: the
    backbone's front is frozen)."""
    def encode(front: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([net.head(net.backbone.tail(part, cache.cut))
                              for part in front.split(256)]).numpy()

    views = (None if cache.view_front is None
             else np.stack([encode(front) for front in cache.view_front]))
    return encode(cache.front), views


def training_report(fitted: Fitted, cache: FeatureCache) -> dict[str, Any]:
    """The label-free model report (report.py) of a trained network on its training tiles."""
    codes, views = training_codes(fitted.net, cache)
    return model_report(codes, views, fitted.assignments, fitted.clusters)


def check_bits(bits: Sequence[int]) -> None:
    bad = [b for b in bits if b not in VALID_BITS]
    if bad:
        raise BadInput(f"bits must be among {VALID_BITS}, got {bad}")


def train_config(request: TrainRequest) -> TrainConfig:
    """The TrainConfig of the contract's train request (the one place one is built from the
    request's options): each source entry becomes its specs, the options are the config's."""
    auxiliary = auxiliary_specs(request)  # first: a wrong aux_date is said before any file
    return TrainConfig(primary=tuple(entry_specs(request.primary, "primary")),
                       output=request.output, auxiliary=tuple(auxiliary),
                       aux_bands=tuple((name, tuple(bands)) for name, bands in request.aux_bands),
                       **request.options.values())


def train_request(request: TrainRequest, job: JobControl | None = None
                  ) -> tuple[TrainResult, PullStats | None]:
    """The training a request asks for: `train_model` of its config after pulling its remote
    sources (progress stage "pull", then the training's). The one way to a training: the
    worker's `train` and `mrhash train` each turn their input into a TrainRequest and call
    this."""
    return train_pulling(train_config(request), job)


def train_pulling(config: TrainConfig, job: JobControl | None = None
                  ) -> tuple[TrainResult, PullStats | None]:
    """`train_model` after pulling the config's remote sources (progress stage "pull", then
    the training's)."""
    config.auxiliary = tuple(remote_specs(config.auxiliary, config.output))
    pulled = prefetch(config.primary, config.auxiliary, job)
    result = train_model(config, job)
    result.pull = pulled
    return result, pulled
