"""LSH and ITQ baselines."""

from __future__ import annotations

import numpy as np
import pytest
from mrhash_research.baselines import ITQ, LSH


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    # correlated, offset data like pooled CNN features
    return rng.standard_normal((300, 40)) @ rng.standard_normal((40, 64)) + 5.0


def _quantisation_error(v: np.ndarray, projection: np.ndarray) -> float:
    y = v @ projection
    return float(np.mean((np.where(y >= 0, 1.0, -1.0) - y) ** 2))


def test_itq_rotation_lowers_quantisation_error(features: np.ndarray) -> None:
    model = ITQ.fit(features, 16, iterations=50)
    codes = model.encode(features)
    assert codes.shape == (300, 16) and codes.dtype == bool
    x = features - model.mean
    pca = np.linalg.svd(x, full_matrices=False)[2][:16].T
    rotation = pca.T @ model.projection
    assert np.allclose(rotation @ rotation.T, np.eye(16), atol=1e-6)  # orthogonal
    no_rotation = ITQ.fit(features, 16, iterations=0)
    assert _quantisation_error(x @ pca, rotation) < _quantisation_error(
        x @ pca, pca.T @ no_rotation.projection)
    # bits are roughly balanced: each is on for 10-90 % of the samples
    assert np.all((codes.mean(axis=0) > 0.1) & (codes.mean(axis=0) < 0.9))
    with pytest.raises(ValueError):
        ITQ.fit(features[:8], 16)


def test_lsh_is_seeded_and_preserves_angles(features: np.ndarray) -> None:
    a = LSH.fit(features, 64, seed=3).encode(features)
    b = LSH.fit(features, 64, seed=3).encode(features)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, LSH.fit(features, 64, seed=4).encode(features))
    # random hyperplanes: P(bit differs) = angle / pi (Charikar 2002)
    x = features - features.mean(axis=0)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    angle = np.arccos(np.clip(unit @ unit.T, -1, 1)) / np.pi
    many = LSH.fit(features, 1024, seed=0).encode(features).astype(np.float32)
    ham = (many @ (1 - many).T + (1 - many) @ many.T) / 1024
    assert abs(float((ham - angle).mean())) < 0.02
    assert np.corrcoef(ham.ravel(), angle.ravel())[0, 1] > 0.9


def test_float_with_band_stats_weighs_both_blocks_equally(features: np.ndarray) -> None:
    from mrhash_research.baselines import float_with_band_stats

    rng = np.random.default_rng(1)
    stats = rng.standard_normal((300, 26)) * 1000 + 50  # raw scale must not matter
    both = float_with_band_stats(features, stats)
    assert both.shape == (300, 64 + 26)
    assert np.allclose(np.linalg.norm(both[:, :64], axis=1), 1)
    assert np.allclose(np.linalg.norm(both[:, 64:], axis=1), 1)
    # the statistics block is standardised: its raw offset and scale are gone
    assert np.allclose(both[:, 64:], float_with_band_stats(features, stats / 1000 - 7)[:, 64:])
