"""Pseudo multi-labels, DEC style: k-means centres on the latent, a Student-t soft assignment
q of each sample to every centre, and a sharpened target p that the hash codes must keep."""

from __future__ import annotations

import torch


def kmeans(x: torch.Tensor, k: int, *, iterations: int = 50, n_init: int = 4,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; best of `n_init` runs by inertia. Deterministic
    for a given generator. Returns [k, d] centres."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n samples, got k={k}, n={n}")
    x = x.detach().float()
    best, best_inertia = None, float("inf")
    for _ in range(n_init):
        centres = _plus_plus(x, k, generator)
        for _ in range(iterations):
            assign = torch.cdist(x, centres).argmin(dim=1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
            if torch.allclose(moved, centres):
                break
            centres = moved
        inertia = float((torch.cdist(x, centres).min(dim=1).values ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def _plus_plus(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        # a point already chosen has d2 == 0, so it is never drawn twice while others remain
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(dim=1))
    return torch.stack(centres)


def soft_assign(z: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student-t kernel q_ij ∝ (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2), rows sum to 1."""
    d2 = torch.cdist(z, centres) ** 2
    q = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC target p_ij ∝ q_ij^2 / f_j (f_j = soft cluster frequency): sharpens confident
    assignments and keeps big clusters from swallowing the rest."""
    weight = q ** 2 / q.sum(dim=0, keepdim=True)
    return (weight / weight.sum(dim=1, keepdim=True)).detach()


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """KL(p || q), averaged over samples."""
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=1).mean()
