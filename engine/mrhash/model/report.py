"""A model report that needs no labels: how well a freshly trained model's codes separate the
training tiles, with a plain-language verdict.

Everything is measured on the training tiles themselves (their relaxed codes, the codes of
their rotated/flipped views and the pseudo-label clusters), so a user with no ground truth
learns whether the model is usable and, if not, why. Thresholds (`Thresholds`, documented in
docs/benchmarks/model.md) were set from real runs: the 200-image EuroSAT dev models (good:
mAP 0.6+) sit far inside them; degenerate models (too few tiles or epochs, collapsed codes)
cross them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

GOOD = "This model separates your tiles well"
POOR = "This model separates your tiles poorly: try more data or more bits"
TOP_TIES = 5  # largest tie groups listed


@dataclass(frozen=True)
class Thresholds:
    """When a property of the codes counts against the model (see the module docstring)."""

    dead_bit: float = 0.45          # a bit whose mean is this far from 0.5 is (almost) constant
    dead_bits_fraction: float = 0.25  # ... too many such bits: the code is shorter than it looks
    mean_abs_corr: float = 0.35     # bits this correlated on average repeat each other
    largest_tie_fraction: float = 0.2  # this share of tiles in one code: searches cannot rank
    distinct_fraction: float = 0.05  # fewer distinct codes than this share of the tiles
    empty_clusters_fraction: float = 0.5  # pseudo-labels collapsed onto a few clusters
    largest_cluster_fraction: float = 0.6
    view_hamming_fraction: float = 0.2  # codes change this much when a tile is rotated


def _bit_balance(bits: np.ndarray, th: Thresholds) -> dict[str, Any]:
    means = bits.mean(axis=0)
    deviation = np.abs(means - 0.5)
    return {"mean_per_bit": [round(float(m), 4) for m in means],
            "mean_deviation": round(float(deviation.mean()), 4),
            "max_deviation": round(float(deviation.max()), 4),
            "dead_bits": int((deviation >= th.dead_bit).sum())}


def _bit_correlation(bits: np.ndarray) -> dict[str, float]:
    x = bits.astype(np.float64)
    x = x - x.mean(axis=0)
    norm = np.sqrt((x ** 2).sum(axis=0))
    live = norm > 0  # a constant bit has no correlation; it is counted as a dead bit instead
    if live.sum() < 2:
        return {"mean_abs": 0.0, "max_abs": 0.0}
    x = x[:, live] / norm[live]
    corr = np.abs(x.T @ x)
    off = corr[~np.eye(len(corr), dtype=bool)]
    return {"mean_abs": round(float(off.mean()), 4), "max_abs": round(float(off.max()), 4)}


def _ties(bits: np.ndarray) -> dict[str, Any]:
    counts = Counter(row.tobytes() for row in np.packbits(bits, axis=1))
    largest = sorted(counts.values(), reverse=True)[:TOP_TIES]
    return {"distinct": len(counts), "distinct_fraction": round(len(counts) / len(bits), 4),
            "largest_ties": largest, "largest_tie_fraction": round(largest[0] / len(bits), 4)}


def _clusters(assignments: np.ndarray, k: int) -> dict[str, Any]:
    sizes = np.bincount(assignments, minlength=k)
    return {"k": k, "sizes": [int(s) for s in sizes], "empty": int((sizes == 0).sum()),
            "largest_fraction": round(float(sizes.max() / sizes.sum()), 4)}


def _view_agreement(bits: np.ndarray, view_bits: np.ndarray | None) -> dict[str, Any] | None:
    if view_bits is None or len(view_bits) == 0:
        return None
    hamming = (view_bits != bits[None]).sum(axis=2)  # [views, tiles]
    return {"views": len(view_bits) + 1, "mean_hamming": round(float(hamming.mean()), 3),
            "mean_hamming_fraction": round(float(hamming.mean() / bits.shape[1]), 4),
            "identical_fraction": round(float((hamming == 0).mean()), 4)}


def _problems(report: dict[str, Any], th: Thresholds) -> list[str]:
    """The reasons, in plain words, why the model separates the tiles poorly (none: well)."""
    bits, problems = report["bits"], []
    dead = report["bit_balance"]["dead_bits"]
    if dead > th.dead_bits_fraction * bits:
        problems.append(f"{dead} of {bits} bits are (almost) the same on every tile")
    corr = report["bit_correlation"]["mean_abs"]
    if corr > th.mean_abs_corr:
        problems.append(f"the bits repeat each other (mean |correlation| {corr:.2f} > "
                        f"{th.mean_abs_corr})")
    codes = report["codes"]
    if codes["largest_tie_fraction"] > th.largest_tie_fraction:
        problems.append(f"{codes['largest_ties'][0]} of {report['n_tiles']} tiles "
                        f"({100 * codes['largest_tie_fraction']:.0f}%) share one code, so a "
                        "search cannot rank them")
    if codes["distinct_fraction"] < th.distinct_fraction:
        problems.append(f"only {codes['distinct']} distinct codes for {report['n_tiles']} tiles")
    clusters = report["clusters"]
    if clusters is not None:
        if clusters["empty"] > th.empty_clusters_fraction * clusters["k"]:
            problems.append(f"{clusters['empty']} of {clusters['k']} pseudo-label clusters are "
                            "empty: the tiles did not form groups")
        if clusters["largest_fraction"] > th.largest_cluster_fraction:
            problems.append(f"one pseudo-label cluster holds "
                            f"{100 * clusters['largest_fraction']:.0f}% of the tiles")
    views = report["view_agreement"]
    if views is not None and views["mean_hamming_fraction"] > th.view_hamming_fraction:
        problems.append(f"a rotated or flipped tile changes {views['mean_hamming']:.1f} of "
                        f"{bits} bits on average")
    return problems


def model_report(codes: np.ndarray, view_codes: np.ndarray | None = None,
                 assignments: np.ndarray | None = None, clusters: int | None = None,
                 thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The report of a model from its training tiles, no labels involved.

    codes: relaxed codes [N, bits] (a bit is code > 0); view_codes: [V - 1, N, bits], the
    codes of each tile's rotated/flipped views (None: not measured); assignments: [N] the
    pseudo-label cluster of each tile, with `clusters` = k.
    """
    th = thresholds or Thresholds()
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be [N, bits] with N >= 1, got shape {codes.shape}")
    bits = codes > 0
    report: dict[str, Any] = {
        "n_tiles": int(len(bits)), "bits": int(bits.shape[1]),
        "bit_balance": _bit_balance(bits, th),
        "bit_correlation": _bit_correlation(bits),
        "codes": _ties(bits),
        "clusters": (None if assignments is None
                     else _clusters(np.asarray(assignments), int(clusters or 0)
                                    or int(np.max(assignments)) + 1)),
        "view_agreement": _view_agreement(bits, None if view_codes is None
                                          else np.asarray(view_codes) > 0),
    }
    problems = _problems(report, th)
    report["verdict"] = (f"{POOR} ({'; '.join(problems)})" if problems else f"{GOOD}.")
    report["ok"] = not problems
    report["problems"] = problems
    report["thresholds"] = asdict(th)
    return report
