"""Training configuration, apart from the training code: the CLI builds its parser from these
defaults without importing torch (so `mrhash --help` and `mrhash serve` start fast, and a
missing torch is reported by the worker instead of crashing the parser)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrhash_contract import choices
from mrhash_contract.protocol import RequestError, TrainOptions

from mrhash.errors import BadInput

if TYPE_CHECKING:
    from mrhash.raster.sources import SourceSpec

VALID_BITS = choices.BITS
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
        except (BadInput, RequestError) as error:
            raise argparse.ArgumentTypeError(error.message) from None
        return value

    parse.__name__ = convert.__name__  # argparse's word for a bad value
    return parse


def option_type(name: str, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type of a number in low..high (whole when the bounds are): check_range."""
    whole = isinstance(low, int) and isinstance(high, int)
    return _option(name, int if whole else float, lambda v: check_range(name, v, low, high),
                   "whole number" if whole else "number")


def train_option(name: str) -> Callable[[str], Any]:
    """The argparse type of a numeric training option: the contract's bounds of it
    (`TrainOptions.checked`, what a worker's request is held to)."""
    whole = TrainOptions.whole(name)
    return _option(name, int if whole else float, lambda v: TrainOptions.checked(name, v),
                   "whole number" if whole else "number")


@dataclass(kw_only=True)
class TrainConfig(TrainOptions):
    """Everything a training run needs: the options a user chooses (the contract's
    `TrainOptions`, their defaults and bounds) and the sources. No field carries labels:
    training is unsupervised."""

    primary: tuple[SourceSpec, ...]   # one spec per primary raster (a folder expands to many)
    output: str                        # model package file (.safetensors) written at the end
    auxiliary: tuple[SourceSpec, ...] = ()   # other rasters covering the primary footprints
    # named band groups read from each primary file itself, e.g. (("nir", (8,)),)
    aux_bands: tuple[tuple[str, tuple[int | str, ...]], ...] = ()

    def validate(self) -> None:
        if not self.primary:
            raise BadInput("no primary raster given")
        if self.backbone_weights and not Path(self.backbone_weights).is_file():
            raise BadInput("backbone weights file not found", path=self.backbone_weights)
        try:
            self.check()
        except RequestError as error:  # the engine's API raises MrHashError
            raise BadInput(error.message) from None

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


def check_remote_defaults(date: str | None, max_cloud: float | None, stac: bool) -> None:
    """aux_date / aux_max_cloud select STAC items: without a STAC source they would be
    ignored without a word (the CLI's --aux-date, the worker's aux_date)."""
    if (date or max_cloud is not None) and not stac:
        raise BadInput("--aux-date / --aux-max-cloud (aux_date, aux_max_cloud) select the items "
                       "of a STAC auxiliary source, and none is given (--aux-source "
                       "NAME=STAC_URL@ASSETS)")
