"""Robust per-band statistics on real EuroSAT patches: percentiles of valid pixels only,
bounded memory, [0, 1] scaling, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from mrhash.errors import BadInput
from mrhash.raster.normalize import BandStats, compute_stats


@pytest.fixture(scope="module")
def patches(eurosat_dir) -> list[np.ndarray]:
    paths = sorted(eurosat_dir.glob("*/*.tif"))[::5]  # 10 real 13-band patches, 1 per class
    arrays = []
    for path in paths:
        with rasterio.open(path) as ds:
            arrays.append(ds.read([4, 3, 2, 8]).astype(np.float32))
    return arrays


def test_percentiles_match_numpy(patches):
    stats = compute_stats(patches)
    pixels = np.concatenate([p.reshape(4, -1) for p in patches], axis=1)
    np.testing.assert_allclose(stats.low, np.percentile(pixels, 2, axis=1))
    np.testing.assert_allclose(stats.high, np.percentile(pixels, 98, axis=1))
    assert all(lo < hi for lo, hi in zip(stats.low, stats.high, strict=True))


def test_nodata_is_ignored(patches):
    clean = compute_stats(patches)
    masked = []
    for patch in patches:
        spoiled = patch.copy()
        spoiled[:, :8] = 65535  # "nodata" rows, flagged by the mask
        mask = np.ones(patch.shape[1:], bool)
        mask[:8] = False
        masked.append((spoiled, mask))
    with_mask = compute_stats(masked)
    expected = compute_stats([p[:, 8:] for p in patches])
    assert with_mask.to_dict() == expected.to_dict() != clean.to_dict()
    nan = [np.where(m, a, np.nan) for a, m in masked]
    assert compute_stats(nan).to_dict() == expected.to_dict()


def test_max_pixels_bounds_the_sample(patches):
    exact = compute_stats(patches)
    sampled = compute_stats(patches * 5, max_pixels=20_000)  # thinned repeatedly
    spread = np.array(exact.high) - np.array(exact.low)
    assert np.all(np.abs(np.array(sampled.low) - exact.low) < 0.05 * spread)
    assert np.all(np.abs(np.array(sampled.high) - exact.high) < 0.05 * spread)


def test_apply_scales_into_unit_range(patches):
    stats = compute_stats(patches)
    batch = np.stack(patches)  # p2/p98 of these very pixels: both ends get clipped
    scaled = stats.apply(batch)
    assert scaled.dtype == np.float32 and scaled.shape == batch.shape
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(stats.apply(patches[0]), scaled[0])
    flat = BandStats(low=[5.0], high=[5.0]).apply(np.full((1, 2, 2), 7.0))
    assert np.all(flat == 1.0)  # constant band: no division by zero
    with pytest.raises(BadInput, match="C=4"):
        stats.apply(np.zeros((3, 8, 8)))


def test_round_trip_and_bad_dicts(patches):
    stats = compute_stats(patches)
    assert BandStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    with pytest.raises(BadInput, match="malformed band stats"):
        BandStats.from_dict({"low": [1.0]})
    with pytest.raises(BadInput, match="one low and one high per band"):
        BandStats.from_dict({"low": [1.0], "high": [1.0, 2.0]})


def test_all_nodata_is_bad_input(patches):
    mask = np.zeros(patches[0].shape[1:], bool)
    with pytest.raises(BadInput, match="no valid pixels"):
        compute_stats([(patches[0], mask)])
