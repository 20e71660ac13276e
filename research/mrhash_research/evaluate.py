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
from mrhash.model.datasets import encode_samples

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".img", ".vrt"}
METHODS = ("mrhash", "itq", "lsh", "float", "float224", "float_stats")
FLOAT_SIZE = 224  # backbone input of the float224 / float_stats references


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


def _stats_matrix(cache) -> np.ndarray:
    """Per-band mean/std of every source (the standardised "stats" targets), [N, 2 x bands]."""
    return np.concatenate([t.numpy() for block, t in zip(cache.blocks, cache.targets,
                                                         strict=True)
                           if block.kind == "stats"], axis=1).astype(np.float64)


def float_features_at(samples, cache, config, size: int, device) -> np.ndarray:
    """Pooled Lite0 features of the primary patches at backbone input `size` (the float
    baseline's strongest form on EuroSAT is the ImageNet size, 224)."""
    import torch
    from mrhash.model.backbone import Backbone
    from mrhash.model.train import normalise

    if size == config.input_size:
        return cache.pooled.numpy().astype(np.float64)
    net = Backbone(cache.band_counts[0], config.rgb, size, weights_path=config.backbone_weights,
                   name=config.backbone).to(device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(samples), config.batch_size):
            arrays, masks = samples.read_batch(range(start, min(start + config.batch_size,
                                                                len(samples))))[0]
            x = torch.from_numpy(normalise(arrays, masks, cache.stats[0])).to(device)
            out.append(net(x).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _float_rows(methods, samples, cache, config, labels, r, device) -> list[dict[str, Any]]:
    """The float references (no training, no seed): cosine on the pooled features at the
    training input, at 224 px, and at 224 px with every source's band statistics."""
    from mrhash_research.baselines import float_with_band_stats

    rows = []
    if "float" in methods:
        feats = cache.pooled.numpy().astype(np.float64)
        rows.append(summarise("float", None, score(cosine_distances(feats), labels, r), labels)
                    | {"input_size": config.input_size})
    if "float224" in methods or "float_stats" in methods:
        f224 = float_features_at(samples, cache, config, FLOAT_SIZE, device)
        if "float224" in methods:
            rows.append(summarise("float224", None, score(cosine_distances(f224), labels, r),
                                  labels) | {"input_size": FLOAT_SIZE})
        if "float_stats" in methods:
            both = float_with_band_stats(f224, _stats_matrix(cache))
            rows.append(summarise("float_stats", None, score(cosine_distances(both), labels, r),
                                  labels) | {"input_size": FLOAT_SIZE})
    return rows


def _hash_rows(methods, bits, samples, cache, base, labels, r, device, job, timings
               ) -> list[dict[str, Any]]:
    """One row per hashing method and code length for the seed of `base`."""
    from mrhash.model.train import TrainConfig

    from mrhash_research.baselines import ITQ, LSH

    feats = cache.pooled.numpy().astype(np.float64)
    rows = []
    for b in bits:
        codes: dict[str, np.ndarray] = {}
        if "lsh" in methods:
            codes["lsh"] = LSH.fit(feats, b, seed=base.seed).encode(feats)
        if "itq" in methods:
            codes["itq"] = ITQ.fit(feats, b, seed=base.seed).encode(feats)
        if "mrhash" in methods:
            t0 = time.monotonic()
            model = train_package(cache, TrainConfig(**{**base.__dict__, "bits": b}), device, job)
            codes["mrhash"] = encode_samples(model, samples)
            timings[f"mrhash_{b}_seed{base.seed}_fit_s"] = round(time.monotonic() - t0, 2)
        for method in ("mrhash", "itq", "lsh"):
            if method in codes:
                row = summarise(method, b, score(hamming_distances(codes[method]), labels, r),
                                labels)
                row["distinct_codes"] = len({c.tobytes() for c in
                                             np.packbits(_as_bits(codes[method]), axis=1)})
                rows.append(row | {"seed": base.seed})
    return rows


def train_package(cache, config, device, job=None):
    """Fit on a feature cache, save the package and load it back: codes then come from the
    saved model's `encode`, the query-time path."""
    from mrhash.model.package import load_model, save_model
    from mrhash.model.train import Progress, fit, package_config

    fitted = fit(cache, config, device, Progress(job, None))
    save_model(config.output, fitted.net, package_config(config, cache, {}))
    return load_model(config.output)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same method and bits over several seeds -> one row: means, the SAMPLE
    standard deviation (ddof = 1) of mAP, and every seed's mAP."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["bits"]), []).append(row)
    out = []
    for group in groups.values():
        first = dict(group[0])
        if len(group) > 1:
            for key in ("map", "map_at_r", "p_at_10", "distinct_codes"):
                if key in first:
                    first[key] = round(float(np.mean([g[key] for g in group])), 4)
            first["per_class_ap"] = {c: round(float(np.mean([g["per_class_ap"][c]
                                                             for g in group])), 4)
                                     for c in first["per_class_ap"]}
        maps = [g["map"] for g in group]
        first["map_sd"] = round(float(np.std(maps, ddof=1)), 4) if len(maps) > 1 else None
        if "seed" in first:
            first["seeds"] = [g["seed"] for g in group]
            first["map_per_seed"] = maps
            del first["seed"]
        out.append(first)
    return out


def stratified_halves(labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """Two halves with the same classes in the same proportions: within each class (files in
    sorted order), alternate items go to each half, a class starting in the half that is
    smaller so far (odd-sized classes then even out). Labels serve only this split."""
    halves: tuple[list[int], list[int]] = ([], [])
    place: dict[str, int] = {}  # the half the next item of a class goes to
    for i, label in enumerate(labels):
        if label not in place:
            place[label] = int(len(halves[0]) > len(halves[1]))
        halves[place[label]].append(i)
        place[label] = 1 - place[label]
    return halves


def prepare(config, device, job):
    """Samples (kept open by the caller) and their feature cache; unreadable files are an
    error here (an evaluation set must be complete)."""
    from mrhash.model.datasets import RasterSamples
    from mrhash.model.train import Progress, extract_features

    samples = RasterSamples.from_config(config)
    if samples.skipped:
        samples.close()
        raise BadInput(f"{len(samples.skipped)} dataset files unreadable, first: "
                       f"{samples.skipped[0]}")
    cache = extract_features(samples, config, device, Progress(job, None))
    return samples, cache


def evaluate_inductive(base, paths: Sequence[str], labels: Sequence[str], bits: Sequence[int],
                       seeds: Sequence[int], r: int | None, device, job=None
                       ) -> dict[str, Any]:
    """Generalisation to imagery never seen in training: the set is split in two stratified
    halves; a model trained on one half encodes the other (inductive) and itself
    (transductive), and both are scored on the same half with that half's images only. Both
    folds, every seed; the gap is transductive - inductive mAP."""
    import contextlib

    from mrhash.model.train import TrainConfig

    halves = stratified_halves(labels)
    with contextlib.ExitStack() as stack:
        parts = []
        for h, idx in enumerate(halves):
            config = TrainConfig(**{**base.__dict__, "primary": tuple(base.primary[i]
                                                                      for i in idx),
                                    "output": str(Path(base.output).with_name(f"half{h}.st"))})
            samples, cache = prepare(config, device, job)
            stack.callback(samples.close)
            parts.append((config, samples, cache, [labels[i] for i in idx]))
        rows: dict[int, dict[str, list[float]]] = {b: {"inductive": [], "transductive": []}
                                                   for b in bits}
        for seed, b in ((s, b) for s in seeds for b in bits):
            for h, (config, _, cache, _) in enumerate(parts):
                model = train_package(cache, TrainConfig(**{**config.__dict__, "bits": b,
                                                            "seed": seed}), device, job)
                for other, (_, samples_o, _, labels_o) in enumerate(parts):
                    ap = score(hamming_distances(encode_samples(model, samples_o)),
                               labels_o, r).ap.mean()
                    rows[b]["inductive" if other != h else "transductive"].append(float(ap))
    out = {}
    for b, kinds in rows.items():
        entry = {k: round(float(np.mean(v)), 4) for k, v in kinds.items()}
        entry |= {f"{k}_sd": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None
                  for k, v in kinds.items()}
        entry["gap"] = round(entry["transductive"] - entry["inductive"], 4)
        entry["runs"] = len(kinds["inductive"])
        out[str(b)] = entry
    return {"protocol": "two stratified halves; train on one, score on the other (inductive) "
                        "or on itself (transductive); both folds x seeds",
            "n_images": [len(h) for h in halves], "seeds": list(seeds), "mrhash": out}


def evaluate_dataset(dataset: str | Path, bits: Sequence[int], methods: Sequence[str],
                     train_kwargs: dict[str, Any], primary_bands: Sequence[int | str],
                     aux_bands: Sequence[tuple[str, tuple[int | str, ...]]],
                     r: int | None = None, workdir: str | Path | None = None,
                     job=None, seeds: Sequence[int] | None = None,
                     inductive: bool = False) -> dict[str, Any]:
    """Train every method on the whole set without labels, then score leave-one-out retrieval.
    MrHash codes come from the saved package's `encode` of the raw primary patches, i.e. the
    query-time path; baselines use the same backbone's pooled primary features. `seeds`:
    every seeded method runs once per seed and its row gives the mean and the sample sd;
    `inductive`: also the unseen-half protocol of `evaluate_inductive` (MrHash)."""
    import contextlib
    import tempfile

    from mrhash.device import resolve_device
    from mrhash.model.train import TrainConfig
    from mrhash.raster.sources import SourceSpec

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise BadInput(f"unknown methods {unknown}: choose among {', '.join(METHODS)}")
    seeds = list(seeds) if seeds else [int(train_kwargs.get("seed", 0))]
    started = time.monotonic()
    paths, labels = scan_dataset(dataset)
    if max(bits) > len(paths) and "itq" in methods:
        raise BadInput(f"ITQ needs at least as many images as bits ({max(bits)}); the "
                       f"dataset has {len(paths)}")
    primary = tuple(SourceSpec("primary", (p,), tuple(primary_bands)) for p in paths)
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, contextlib.ExitStack() as stack:
        base = TrainConfig(primary=primary, output=str(Path(tmp) / "model.safetensors"),
                           aux_bands=tuple(aux_bands), **{**train_kwargs, "seed": seeds[0]})
        base.validate()
        device = resolve_device(base.device)
        samples, cache = prepare(base, device, job)
        stack.callback(samples.close)
        timings["features_s"] = round(cache.seconds, 2)
        rows += _float_rows(methods, samples, cache, base, labels, r, device)
        for seed in seeds:
            config = TrainConfig(**{**base.__dict__, "seed": seed})
            rows += _hash_rows(methods, bits, samples, cache, config, labels, r, device, job,
                               timings)
        extra = {}
        if inductive and "mrhash" in methods:
            t0 = time.monotonic()
            extra["inductive"] = evaluate_inductive(base, paths, labels, bits, seeds, r, device,
                                                    job)
            timings["inductive_s"] = round(time.monotonic() - t0, 2)
    return {"results": aggregate(rows), "n_images": len(paths), "seeds": seeds,
            "seconds": round(time.monotonic() - started, 2), "timings": timings,
            "dataset": str(dataset),
            "train": {**base.values(), "aux_bands": [list(a) for a in aux_bands],
                      "primary_bands": list(primary_bands)},
            "ties": "expected value over random order within equal distances",
            "sd": "sample standard deviation (ddof = 1) over seeds",
            "map_at_r": "R = relevant count per query" if r is None else f"R = {r}", **extra}


def _as_bits(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes, axis=1) if codes.dtype == np.uint8 else codes
