"""Unsupervised hashing baselines on the same backbone features as MrHash: random-hyperplane
LSH and ITQ (Gong & Lazebnik 2011: PCA, then an orthogonal rotation minimising quantisation
error); float cosine is the unhashed reference (see evaluate.py), alone or with the band
statistics of every source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LSH:
    """sign(W^T (x - mean)) with Gaussian random hyperplanes W (centring keeps bits balanced)."""

    mean: np.ndarray
    planes: np.ndarray  # [d, bits]

    @classmethod
    def fit(cls, features: np.ndarray, bits: int, seed: int = 0) -> LSH:
        rng = np.random.default_rng(seed)
        return cls(features.mean(axis=0), rng.standard_normal((features.shape[1], bits)))

    def encode(self, features: np.ndarray) -> np.ndarray:
        """[N, d] -> bool codes [N, bits]."""
        return (features - self.mean) @ self.planes > 0


@dataclass
class ITQ:
    mean: np.ndarray
    projection: np.ndarray  # [d, bits]: top principal directions times the learnt rotation

    @classmethod
    def fit(cls, features: np.ndarray, bits: int, iterations: int = 50, seed: int = 0) -> ITQ:
        if bits > min(features.shape):
            raise ValueError(f"ITQ needs at least {bits} samples and feature dimensions, "
                             f"got {features.shape}")
        mean = features.mean(axis=0)
        x = features - mean
        # PCA by SVD of the centred data (rows of vt = principal directions)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        pca = vt[:bits].T
        v = x @ pca
        rng = np.random.default_rng(seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        for _ in range(iterations):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            # orthogonal Procrustes: R = argmin |B - V R|_F
            u, _, wt = np.linalg.svd(v.T @ b)
            rotation = u @ wt
        return cls(mean, pca @ rotation)

    def encode(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) @ self.projection >= 0


def float_with_band_stats(features: np.ndarray, band_stats: np.ndarray) -> np.ndarray:
    """The float reference with every band's colour: L2-normalised backbone features beside
    the per-band mean/std of all sources (each statistic standardised over the set, the block
    L2-normalised), so cosine on the result weighs texture and spectrum equally."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    stats = (band_stats - band_stats.mean(axis=0)) / np.maximum(band_stats.std(axis=0), 1e-12)
    return np.concatenate([unit(features), unit(stats)], axis=1)
