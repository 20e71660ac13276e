"""Robust per-band normalisation: low/high percentiles of valid pixels (p2/p98 by default) map
raw values to [0, 1]. Serialisable so a model package carries the stats it was trained with."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mrhash.errors import BadInput


@dataclass
class BandStats:
    low: list[float]   # per band
    high: list[float]

    def __post_init__(self) -> None:
        self.low = [float(v) for v in self.low]
        self.high = [float(v) for v in self.high]
        if len(self.low) != len(self.high) or not self.low:
            raise BadInput(f"band stats need one low and one high per band, got "
                           f"{len(self.low)} and {len(self.high)}")
        if not all(math.isfinite(v) for v in self.low + self.high):
            raise BadInput("band stats must be finite numbers")

    @property
    def bands(self) -> int:
        return len(self.low)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Scale [C, H, W] or [N, C, H, W] raw values to float32 in [0, 1] (NaN -> 0)."""
        array = np.asarray(array, dtype=np.float32)
        axis = array.ndim - 3
        if array.ndim not in (3, 4) or array.shape[axis] != self.bands:
            raise BadInput(f"expected [C, H, W] or [N, C, H, W] with C={self.bands}, got "
                           f"shape {array.shape}")
        shape = [1] * array.ndim
        shape[axis] = self.bands
        low = np.asarray(self.low, dtype=np.float32).reshape(shape)
        span = np.asarray(self.high, dtype=np.float32).reshape(shape) - low
        span = np.where(span > 0, span, np.float32(1.0))  # constant band -> 0, not inf
        scaled = (array - low) / span
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> BandStats:
        try:
            return cls(low=list(d["low"]), high=list(d["high"]))
        except (KeyError, TypeError) as error:
            raise BadInput(f"malformed band stats: {error}") from None


def compute_stats(arrays: Iterable, low_pct: float = 2, high_pct: float = 98,
                  max_pixels: int = 2_000_000, seed: int = 0) -> BandStats:
    """Percentiles per band over the valid pixels of many [C, H, W] arrays.

    Each item is an array (NaN marks nodata) or an (array, valid_mask) pair as returned by
    `Source.read`. At most about `max_pixels` pixels are kept: when more arrive, the kept ones
    are thinned at random and later ones sampled at the same rate, so all arrays weigh equally.
    """
    if not 0 <= low_pct < high_pct <= 100:
        raise BadInput(f"need 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []  # [C, n] valid pixel columns
    n_kept = 0
    rate = 1.0
    bands = None
    for item in arrays:
        array, mask = item if isinstance(item, tuple) else (item, None)
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 2:
            array = array[None]
        if bands is None:
            bands = array.shape[0]
        elif array.shape[0] != bands:
            raise BadInput(f"arrays have different band counts ({bands} and {array.shape[0]})")
        pixels = array.reshape(bands, -1)
        ok = np.isfinite(pixels).all(axis=0)
        if mask is not None:
            ok &= np.asarray(mask, dtype=bool).reshape(-1)
        if rate < 1.0:
            ok &= rng.random(ok.shape[0]) < rate
        if ok.any():
            kept.append(pixels[:, ok])
            n_kept += int(ok.sum())
        if n_kept > 2 * max_pixels:
            merged = np.concatenate(kept, axis=1)
            keep = rng.random(merged.shape[1]) < 0.5
            kept, n_kept, rate = [merged[:, keep]], np.count_nonzero(keep), rate / 2
    if not n_kept:
        raise BadInput("no valid pixels to compute normalisation statistics from "
                       "(all nodata or no arrays)")
    merged = np.concatenate(kept, axis=1)
    low, high = np.percentile(merged, [low_pct, high_pct], axis=1)
    return BandStats(low=low.tolist(), high=high.tolist())
