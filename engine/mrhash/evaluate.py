"""Retrieval evaluation on a labelled folder (class sub-folders of rasters).

Protocol: every method is trained unsupervised on the whole set (labels are read only by
`scan_dataset` and used only by `score`); each image queries all others (leave-one-out);
Hamming distance ranks binary codes, cosine similarity ranks float features.

Ties: many items share a Hamming distance, and any fixed order inside a tie (e.g. by file
index, which groups classes) would bias the score. Every figure here is the EXACT EXPECTED
value over a uniformly random order inside each tie group (McSherry & Najork, ECIR 2008),
so it is deterministic and neither optimistic nor pessimistic.

Metrics per query, averaged over queries:
* AP over the full ranking;
* AP@R: sum over the top R positions of precision@i at relevant positions, divided by
  min(R, number of relevant items); R defaults to the query's number of relevant items
  (the "MAP@R" of Musgrave et al. 2020); `--R` fixes it instead (hashing papers' mAP@R);
* P@10.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrhash.errors import BadInput

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".img", ".vrt"}
METHODS = ("mrhash", "itq", "lsh", "float")


@dataclass
class QueryScores:
    ap: np.ndarray
    ap_at_r: np.ndarray
    p_at_k: np.ndarray


def _expected_scores(dist: np.ndarray, rel: np.ndarray, cutoff: int, k: int
                     ) -> tuple[float, float, float]:
    """Expected AP, AP@cutoff and P@k of one ranking (lower distance first) over random
    orders within ties."""
    n_rel = int(rel.sum())
    if n_rel == 0:
        return 0.0, 0.0, 0.0
    order = np.argsort(dist, kind="stable")
    d, r = dist[order], rel[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    sizes = np.diff(np.r_[starts, len(d)])
    group = np.repeat(np.arange(len(starts)), sizes)
    rel_in = np.add.reduceat(r, starts)                      # relevant items per tie group
    n_before = np.repeat(starts, sizes).astype(np.float64)
    r_before = np.repeat(np.cumsum(rel_in) - rel_in, sizes)
    j = np.arange(len(d)) - n_before + 1                     # 1-based place inside the group
    size = sizes[group].astype(np.float64)
    rel_g = rel_in[group]
    # chance that position p holds a relevant item, and the expected number of relevant items
    # up to p given that it does (others of the group spread hypergeometrically before it)
    p_rel = rel_g / size
    others = np.where(size > 1, (rel_g - 1) / np.maximum(size - 1, 1), 0.0)
    position = n_before + j
    term = p_rel * (r_before + 1 + (j - 1) * others) / position
    ap = term.sum() / n_rel
    ap_r = term[position <= cutoff].sum() / min(cutoff, n_rel)
    p_k = p_rel[position <= k].sum() / k
    return float(ap), float(ap_r), float(p_k)


def score(distances: np.ndarray, labels: Sequence[str], r: int | None = None, k: int = 10
          ) -> QueryScores:
    """Leave-one-out scores: `distances` [N, N] (lower = closer); the query itself is removed
    from its ranking. `r`: fixed cutoff for AP@R, or None for each query's relevant count."""
    labels = np.asarray(labels)
    n = len(labels)
    out = QueryScores(np.zeros(n), np.zeros(n), np.zeros(n))
    for q in range(n):
        keep = np.arange(n) != q
        rel = labels[keep] == labels[q]
        cutoff = int(rel.sum()) if r is None else r
        out.ap[q], out.ap_at_r[q], out.p_at_k[q] = _expected_scores(
            distances[q, keep], rel, max(cutoff, 1), k)
    return out


def hamming_distances(codes: np.ndarray) -> np.ndarray:
    """bool [N, bits] (or packed uint8 [N, bits/8]) -> integer Hamming distances [N, N]."""
    if codes.dtype == np.uint8:
        codes = np.unpackbits(codes, axis=1)
    s = codes.astype(np.float32) * 2 - 1
    return np.rint((codes.shape[1] - s @ s.T) / 2)


def cosine_distances(features: np.ndarray) -> np.ndarray:
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return 1.0 - f @ f.T


def summarise(method: str, bits: int | None, scores: QueryScores, labels: Sequence[str]
              ) -> dict[str, Any]:
    labels = np.asarray(labels)
    per_class = {str(c): round(float(scores.ap[labels == c].mean()), 4)
                 for c in sorted(set(labels.tolist()))}
    return {"method": method, "bits": bits, "map": round(float(scores.ap.mean()), 4),
            "map_at_r": round(float(scores.ap_at_r.mean()), 4),
            "p_at_10": round(float(scores.p_at_k.mean()), 4), "per_class_ap": per_class}


def scan_dataset(folder: str | Path) -> tuple[list[str], list[str]]:
    """(paths, labels) of a folder of class sub-folders. The ONLY place labels are read;
    the training side receives the path list alone."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInput("dataset folder not found", path=str(root))
    paths, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in RASTER_SUFFIXES:
                paths.append(str(file))
                labels.append(class_dir.name)
    if not paths:
        raise BadInput("no rasters in class sub-folders", path=str(root))
    return paths, labels


def evaluate_dataset(dataset: str | Path, bits: Sequence[int], methods: Sequence[str],
                     train_kwargs: dict[str, Any], primary_bands: Sequence[int | str],
                     aux_bands: Sequence[tuple[str, tuple[int | str, ...]]],
                     r: int | None = None, workdir: str | Path | None = None,
                     job=None) -> dict[str, Any]:
    """Train every method on the whole set without labels, then score leave-one-out retrieval.
    MrHash codes come from the saved package's `encode` of the raw primary patches, i.e. the
    query-time path; baselines use the same backbone's pooled primary features."""
    import contextlib
    import tempfile

    from mrhash.baselines import ITQ, LSH
    from mrhash.datasets import RasterSamples
    from mrhash.device import resolve_device
    from mrhash.package import load_model, save_model
    from mrhash.sources import SourceSpec
    from mrhash.train import Progress, TrainConfig, extract_features, fit, package_config

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise BadInput(f"unknown methods {unknown}: choose among {', '.join(METHODS)}")
    started = time.monotonic()
    paths, labels = scan_dataset(dataset)
    if max(bits) > len(paths) and "itq" in methods:
        raise BadInput(f"ITQ needs at least as many images as bits ({max(bits)}); the "
                       f"dataset has {len(paths)}")
    primary = tuple(SourceSpec("primary", (p,), tuple(primary_bands)) for p in paths)
    results: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, contextlib.ExitStack() as stack:
        base = TrainConfig(primary=primary, output=str(Path(tmp) / "model.safetensors"),
                           aux_bands=tuple(aux_bands), **train_kwargs)
        base.validate()
        device = resolve_device(base.device)
        samples = stack.enter_context(RasterSamples.from_config(base))
        if samples.skipped:
            raise BadInput(f"{len(samples.skipped)} dataset files unreadable, first: "
                           f"{samples.skipped[0]}")
        cache = extract_features(samples, base, device,
                                 Progress(job, len(samples) * len(samples.names)))
        timings["features_s"] = round(cache.seconds, 2)
        feats = cache.pooled.numpy().astype(np.float64)
        if "float" in methods:
            results.append(summarise("float", None, score(cosine_distances(feats), labels, r),
                                     labels))
        for b in bits:
            codes: dict[str, np.ndarray] = {}
            if "lsh" in methods:
                codes["lsh"] = LSH.fit(feats, b, seed=base.seed).encode(feats)
            if "itq" in methods:
                codes["itq"] = ITQ.fit(feats, b, seed=base.seed).encode(feats)
            if "mrhash" in methods:
                t0 = time.monotonic()
                config = TrainConfig(**{**base.__dict__, "bits": b})
                net, history = fit(cache, config, device, Progress(job, None))
                save_model(config.output, net, package_config(config, cache, {}))
                model = load_model(config.output)
                codes["mrhash"] = encode_samples(model, samples)
                timings[f"mrhash_{b}_fit_s"] = round(time.monotonic() - t0, 2)
                timings[f"mrhash_{b}_final_loss"] = round(history[-1]["loss"], 5)
            for method in ("mrhash", "itq", "lsh"):
                if method in codes:
                    result = summarise(method, b, score(hamming_distances(codes[method]),
                                                        labels, r), labels)
                    result["distinct_codes"] = len({c.tobytes() for c in
                                                    np.packbits(_as_bits(codes[method]), axis=1)})
                    results.append(result)
    return {"results": results, "n_images": len(paths), "seconds": round(time.monotonic()
            - started, 2), "timings": timings, "dataset": str(dataset),
            "train": {**base.params(), "aux_bands": [list(a) for a in aux_bands],
                      "primary_bands": list(primary_bands)},
            "ties": "expected value over random order within equal distances",
            "map_at_r": "R = relevant count per query" if r is None else f"R = {r}"}


def encode_samples(model, samples, batch: int = 256) -> np.ndarray:
    """Packed codes of every sample's primary patch, with its valid mask."""
    out = []
    for start in range(0, len(samples), batch):
        arrays, masks = samples.read_batch(range(start, min(start + batch, len(samples))))[0]
        out.append(model.encode(arrays, masks))
    return np.concatenate(out)


def _as_bits(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes, axis=1) if codes.dtype == np.uint8 else codes
