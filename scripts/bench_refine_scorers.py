"""Other refine scorers, side by side with the engine's Rocchio, on the 200 EuroSAT-MS dev
images (docs/BENCHMARKS.md, *Refine*): the same simulated analyst as bench_refine.py (marks the
first 3 relevant and 3 irrelevant of the first 20 hits; labels only to mark and to score),
scored in numpy on the tiles' relaxed codes and on richer spaces of the same model (the
pre-tanh logits, the pooled backbone features and their PCA, and the multisource
autoencoder's latent that packages hold from format 2 on). A ceiling row scores with the mean
code of the query's whole class (labels read): the most a mean-of-examples direction such as
Rocchio can reach in the codes.

    .venv/bin/python scripts/bench_refine_scorers.py --dataset ../shared/data/eurosat_ms_dev \\
        --work build/bench/refine_scorers --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "scripts"))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


def spaces(dataset: Path, model_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Unit embeddings of every dev image in each space, and the labels."""
    import torch
    from mrhash.model.datasets import RasterSamples
    from mrhash.model.package import load_model
    from mrhash.raster.sources import SourceSpec
    from mrhash_research.evaluate import scan_dataset

    paths, labels = scan_dataset(dataset)
    model = load_model(model_path)
    specs = [SourceSpec("primary", (p,), model.primary.bands) for p in paths]
    with RasterSamples(specs, patch_size=model.patch_size) as samples:
        arrays, masks = samples.read_batch(range(len(samples)))[0]
    net = model._net
    with torch.no_grad():
        pooled = net.backbone(torch.from_numpy(model.stats.apply(arrays) * masks[:, None]))
        pooled = ((pooled - net.head.mean) / net.head.scale).numpy().astype(np.float64)
    values = model.embed(arrays, masks).astype(np.float64)
    codes = values[:, :model.bits]
    logits = np.arctanh(np.clip(codes, -0.999999, 0.999999))
    centred = pooled - pooled.mean(0)
    pca = centred @ np.linalg.svd(centred, full_matrices=False)[2][:64].T
    found = {"relaxed codes (engine)": unit(codes), "pre-tanh logits": unit(logits),
             "pooled features (1280)": unit(pooled), "pooled PCA 64": unit(pca),
             "codes + PCA 64": unit(np.hstack([unit(codes), unit(pca)]))}
    if model.latent_dim:  # the multisource autoencoder's latent (packages of format 2 on)
        latent = values[:, model.bits:]
        found["autoencoder latent"] = unit(latent)
        found["codes + autoencoder latent"] = unit(np.hstack([unit(codes), unit(latent)]))
    return found, np.array(labels)


def rocchio(e, pos, neg, gamma=0.5):
    return e @ unit(e[pos].mean(0) - (gamma * e[neg].mean(0) if len(neg) else 0))


def expansion(e, pos, neg, marked, m=5, beta=0.5):
    """Rocchio, then the mean of its top m unmarked tiles added to the relevant side."""
    first = rocchio(e, pos, neg)
    first[marked] = -np.inf
    top = np.argsort(-first)[:m]
    return e @ unit(e[pos].mean(0) + beta * e[top].mean(0) - 0.5 * e[neg].mean(0))


def diffusion(e, pos, neg, k=15, alpha=0.7, negative=0.5):
    """Label propagation on the mutual k-NN graph (affinity = cosine^3)."""
    sim = e @ e.T
    n = len(e)
    near = np.argsort(-sim, 1)[:, 1:k + 1]
    graph = np.zeros_like(sim)
    rows = np.repeat(np.arange(n), k)
    graph[rows, near.ravel()] = np.clip(sim[rows, near.ravel()], 0, None) ** 3
    graph = np.minimum(graph, graph.T)
    degree = graph.sum(1).clip(1e-9)
    graph /= np.sqrt(degree[:, None] * degree[None, :])
    y = np.zeros(n)
    y[pos], y[neg] = 1.0, -negative
    f = y.copy()
    for _ in range(20):
        f = alpha * graph @ f + (1 - alpha) * y
    return f


def blend(e, pos, neg):
    z = [(v - v.mean()) / (v.std() + 1e-9) for v in (rocchio(e, pos, neg), diffusion(e, pos, neg))]
    return z[0] + 0.5 * z[1]


def background_logistic(e, pos, neg, n_background=200, weight=0.02, l2=0.1):
    """Logistic regression: the marks, plus random tiles as weak negatives (background)."""
    rng = np.random.default_rng(0)
    background = rng.choice(len(e), min(n_background, len(e)), replace=False)
    x = np.vstack([e[pos], e[neg], e[background]])
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg) + len(background))]
    sample = np.r_[np.ones(len(pos) + len(neg)), weight * np.ones(len(background))]
    penalty = l2 * np.diag(np.r_[np.ones(x.shape[1] - 1), 0.0])
    w = np.zeros(x.shape[1])
    for _ in range(40):
        p = 1 / (1 + np.exp(-x @ w))
        hessian = x.T @ (x * (sample * p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(hessian, x.T @ (sample * (p - y)) + penalty @ w)
    return e @ w[:-1]


def class_mean(labels: np.ndarray):
    """A ceiling, not a scorer: Rocchio as if the analyst had marked every image of the
    query's class (labels read), i.e. the best a mean-of-examples direction can do here."""
    def score(e, pos, neg, marked):
        return e @ unit(e[labels == labels[pos[0]]].mean(0))
    return score


SCORERS = {
    "Rocchio, irrelevant x0.5 (engine)": lambda e, p, n, m: rocchio(e, p, n),
    "Rocchio + expansion (top 5)": lambda e, p, n, m: expansion(e, p, n, m),
    "label propagation (15-NN graph)": lambda e, p, n, m: diffusion(e, p, n),
    "Rocchio + 0.5 propagation": lambda e, p, n, m: blend(e, p, n),
    "logistic, marks + 200 background tiles": lambda e, p, n, m: background_logistic(e, p, n),
}


def run(space: np.ndarray, codes: np.ndarray, labels: np.ndarray, scorers: dict
        ) -> dict[str, float]:
    """Mean P@20 of the unmarked hits per scorer, and the two references."""
    out: dict[str, list[float]] = {"before": [], "before, marked removed": [],
                                    **{name: [] for name in scorers}}
    bits = codes > 0
    for q in range(len(labels)):
        distance = (bits ^ bits[q]).sum(1)
        order = [i for i in np.lexsort((-(codes @ codes[q]), distance)) if i != q]
        relevant = labels == labels[q]
        top = order[:20]
        pos = [q] + [i for i in top if relevant[i]][:3]
        neg = [i for i in top if not relevant[i]][:3]
        marked = pos + neg
        out["before"].append(relevant[top].mean())
        out["before, marked removed"].append(relevant[[i for i in order
                                                       if i not in marked][:20]].mean())
        for name, scorer in scorers.items():
            score = scorer(space, pos, neg, marked).astype(float)
            score[marked] = -np.inf
            out[name].append(relevant[np.argsort(-score, kind="stable")[:20]].mean())
    return {name: float(np.mean(values)) for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=REPO / "build/bench/refine_scorers")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    from bench_refine import train_dev_model

    args.work.mkdir(parents=True, exist_ok=True)
    table: dict[tuple[str, str], list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        model = args.work / f"dev64_seed{seed}.safetensors"
        if not model.exists():
            train_dev_model(args.dataset, seed, model)
        by_space, labels = spaces(args.dataset, model)
        codes = by_space["relaxed codes (engine)"]
        for space_name, space in by_space.items():
            # the other spaces answer one question: is the engine's scorer better there?
            scorers = (SCORERS | {"ceiling: mean code of the whole class (labels)":
                                  class_mean(labels)} if space is codes
                       else SCORERS if "autoencoder" in space_name
                       else dict(list(SCORERS.items())[:1]))
            for name, value in run(space, codes, labels, scorers).items():
                if space is codes or not name.startswith("before"):  # the same in every space
                    table.setdefault((space_name, name), []).append(value)
    print("| space | scorer | P@20 per seed | mean |\n|---|---|---|---|")
    for (space_name, name), values in table.items():
        print(f"| {space_name} | {name} | {' / '.join(f'{v:.3f}' for v in values)} | "
              f"{np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
