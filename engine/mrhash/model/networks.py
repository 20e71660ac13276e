"""MrHash networks: the multisource reconstruction autoencoder and the hash head.

The autoencoder maps primary-source features to a small latent and reconstructs, from that
latent, the feature *targets* of every source (primary included). Each target is made of blocks
(e.g. backbone features and per-band statistics) whose reconstruction errors are weighted
separately, so a 12-number statistics block is not drowned by 1280 backbone features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class TargetBlock:
    """One reconstruction target: `dim` numbers of source `source`, weighted by `weight`."""

    source: str
    kind: str  # "features" | "stats"
    dim: int
    weight: float = 1.0


class MultiSourceAutoencoder(nn.Module):
    """Encoder (primary features -> latent) and one decoder per target block."""

    def __init__(self, blocks: Sequence[TargetBlock], in_dim: int,
                 latent_dim: int = 64, hidden: int = 512):
        super().__init__()
        self.blocks = tuple(blocks)
        self.encoder = mlp([in_dim, hidden, latent_dim])
        self.decoders = nn.ModuleList(mlp([latent_dim, hidden, b.dim]) for b in self.blocks)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        latent = self.encoder(features)
        return latent, [decoder(latent) for decoder in self.decoders]

    def reconstruction_loss(self, outputs: Sequence[torch.Tensor],
                            targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum over blocks of each block's mean squared error (targets are
        standardised per dimension, so every block's MSE starts near 1)."""
        total = outputs[0].new_zeros(())
        for block, out, target in zip(self.blocks, outputs, targets, strict=True):
            total = total + block.weight * torch.mean((out - target) ** 2)
        return total / sum(b.weight for b in self.blocks)


class HashHead(nn.Module):
    """Linear + tanh from pooled backbone features to `bits` relaxed code bits; the sign of
    each output is the code bit at query time."""

    def __init__(self, bits: int, in_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, bits)
        # fixed standardisation of the pooled features (set from the training set)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))

    def set_standardisation(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.scale.copy_(scale)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(self.standardise(features)))


class HashNet(nn.Module):
    """What a model package holds and a query runs: backbone (with band stem) + hash head,
    and the multisource autoencoder's encoder (`latent`, None in packages older than it),
    whose latent joins the relaxed code in the embedding that refine scores."""

    def __init__(self, backbone: nn.Module, bits: int, latent: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = HashHead(bits, backbone.feature_dim)
        self.latent = latent

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x01))

    def embed(self, x01: torch.Tensor) -> torch.Tensor:
        """[N, bits + latent dim]: the relaxed code, then the encoder's latent of the same
        standardised features the autoencoder was trained on."""
        features = self.backbone(x01)
        code = self.head(features)
        if self.latent is None:
            return code
        return torch.cat([code, self.latent(self.head.standardise(features))], dim=1)
