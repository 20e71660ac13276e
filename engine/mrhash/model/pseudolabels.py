"""Pseudo multi-labels, DEC style: k-means centres on the latent, a Student-t soft assignment
q of each sample to every centre, and a sharpened target p that the hash codes must keep."""

from __future__ import annotations

import torch


def kmeans(x: torch.Tensor, k: int, *, iterations: int = 50, n_init: int = 4,
           generator: torch.Generator | None = None, select: str = "inertia") -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding, `n_init` restarts; the restart kept is the one
    of lowest inertia, or with select="agreement" the one whose partition agrees most with
    the others' (see `most_agreeing`). Deterministic for a given generator. Returns [k, d]
    centres."""
    runs = kmeans_runs(x, k, iterations=iterations, n_init=n_init, generator=generator)
    if select == "agreement":
        return runs[most_agreeing([labels for _, labels, _ in runs])][0]
    return min(runs, key=lambda run: run[2])[0]


def kmeans_runs(x: torch.Tensor, k: int, *, iterations: int = 50, n_init: int = 4,
                generator: torch.Generator | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(centres [k, d], labels [n], inertia) of each of `n_init` k-means restarts."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n samples, got k={k}, n={n}")
    x = x.detach().float()
    runs = []
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
        d2 = torch.cdist(x, centres) ** 2
        runs.append((centres, d2.argmin(dim=1), float(d2.min(dim=1).values.sum())))
    return runs


def adjusted_rand_index(a: torch.Tensor, b: torch.Tensor) -> float:
    """Adjusted Rand index of two partitions of the same items (1 = identical, ~0 = chance)."""
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    table = torch.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).double()

    def pairs(counts: torch.Tensor) -> float:
        return float((counts * (counts - 1) / 2).sum())

    both, rows, cols = pairs(table), pairs(table.sum(dim=1)), pairs(table.sum(dim=0))
    total = len(a) * (len(a) - 1) / 2
    expected = rows * cols / total if total else 0.0
    top = (rows + cols) / 2
    return 1.0 if top == expected else (both - expected) / (top - expected)


def most_agreeing(partitions: list[torch.Tensor]) -> int:
    """Index of the partition with the highest mean ARI to all others: the medoid of the
    restarts, a typical clustering rather than one restart's lucky or unlucky draw (needs no
    labels; with one or two partitions, the first)."""
    if len(partitions) < 3:
        return 0
    scores = [sum(adjusted_rand_index(p, q) for j, q in enumerate(partitions) if j != i)
              for i, p in enumerate(partitions)]
    return max(range(len(scores)), key=scores.__getitem__)


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
