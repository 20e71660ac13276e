"""Retrieval metrics (exact expectations over ties), the eval command, and the guard that
training never sees labels."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from mrhash_research.evaluate import _expected_scores, hamming_distances, scan_dataset, score


def _plain_scores(rel_in_order: list[int], cutoff: int, k: int) -> tuple[float, float, float]:
    rel = np.asarray(rel_in_order, dtype=float)
    hits = np.cumsum(rel)
    prec = hits / np.arange(1, len(rel) + 1)
    ap = float((prec * rel).sum() / rel.sum())
    ap_r = float((prec * rel)[:cutoff].sum() / min(cutoff, rel.sum()))
    return ap, ap_r, float(rel[:k].sum() / k)


def test_tie_scores_are_the_average_over_every_tie_order() -> None:
    dist = np.array([1, 1, 1, 2, 2, 3, 3, 3], dtype=float)
    rel = np.array([1, 0, 1, 0, 1, 0, 0, 1], dtype=bool)
    groups = [np.flatnonzero(dist == d) for d in np.unique(dist)]
    orders = [np.concatenate(p) for p in itertools.product(
        *[list(itertools.permutations(g)) for g in groups])]
    for cutoff, k in ((4, 2), (2, 5), (8, 3)):
        brute = np.mean([_plain_scores(rel[o].tolist(), cutoff, k) for o in orders], axis=0)
        assert np.allclose(_expected_scores(dist, rel, cutoff, k), brute, atol=1e-12)


def test_score_is_leave_one_out_and_perfect_for_perfect_codes() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    codes = np.array([[0, 0], [0, 0], [0, 0], [1, 1], [1, 1], [0, 1]], dtype=bool)
    s = score(hamming_distances(codes), labels, k=2)
    assert np.allclose(s.ap[:5], 1.0) and s.ap[5] == 0.0  # 'c' has no other member
    assert np.allclose(s.ap_at_r[:5], 1.0)
    assert np.allclose(s.p_at_k[:3], 1.0) and np.allclose(s.p_at_k[3:5], 0.5)
    # one code for everything: every method is a coin flip -> expected AP = class share
    flat = score(hamming_distances(np.zeros((6, 8), dtype=bool)), labels)
    assert np.isclose(flat.p_at_k[0], 2 / 5 * 5 / 10)  # 2 of 5 others, 10 slots, 5 filled
    assert flat.ap[0] > 0 and np.isclose(flat.ap[0], flat.ap[1])


def test_hamming_distances_packed_and_bool_agree() -> None:
    rng = np.random.default_rng(0)
    bits = rng.random((5, 32)) > 0.5
    d = hamming_distances(bits)
    assert np.array_equal(d, hamming_distances(np.packbits(bits, axis=1)))
    assert d[0, 1] == np.count_nonzero(bits[0] != bits[1]) and np.all(np.diag(d) == 0)


CLASSES = ("Forest", "Industrial", "Pasture", "SeaLake")


@pytest.fixture(scope="module")
def tiny_dataset(eurosat_dir: Path, tmp_path_factory) -> Path:
    """4 real EuroSAT classes x 5 images in class folders (20: ITQ-16 needs >= 16 images)."""
    root = tmp_path_factory.mktemp("tiny_eurosat")
    for cls in CLASSES:
        (root / cls).mkdir()
        for f in sorted((eurosat_dir / cls).glob("*.tif"))[:5]:
            shutil.copy(f, root / cls / f.name)
    return root


TINY = ["--input-size", "32", "--epochs", "2", "--ae-epochs", "2", "--clusters", "3",
        "--batch-size", "8", "--device", "cpu"]


def _run(argv: list[str]) -> int:
    from mrhash_research import commands

    parser = argparse.ArgumentParser(prog="mrhash")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_command_writes_all_methods(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert _run(["eval", "--dataset", str(tiny_dataset), "--bits", "16", "--json", str(out),
                 *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 20 and result["seconds"] > 0
    rows = {(r["method"], r["bits"]): r for r in result["results"]}
    assert set(rows) == {("float", None), ("float224", None), ("float_stats", None),
                         ("mrhash", 16), ("itq", 16), ("lsh", 16)}
    for row in rows.values():
        assert 0 < row["map"] <= 1 and 0 <= row["p_at_10"] <= 1
        assert set(row["per_class_ap"]) == set(CLASSES)
        assert row["map_sd"] is None  # one seed: no spread to report
    assert rows[("float", None)]["input_size"] == 32
    assert rows[("float224", None)]["input_size"] == 224
    # four visually distinct classes: real features beat chance clearly (a random ranking
    # scores mAP 0.32 on 4 x 5 images; float features measured 0.66)
    assert rows[("float", None)]["map"] > 0.5
    # the 224 px features differ from the 32 px ones, and the band statistics change them again
    assert len({rows[(m, None)]["map"] for m in ("float", "float224", "float_stats")}) == 3


def test_eval_over_seeds_reports_sample_sd_and_the_unseen_half(tiny_dataset: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert _run(["eval", "--dataset", str(tiny_dataset), "--bits", "16", "--methods",
                 "mrhash,lsh", "--seeds", "0-2", "--inductive", "--json", str(out), *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 1, 2]
    for row in result["results"]:
        assert row["seeds"] == [0, 1, 2] and len(row["map_per_seed"]) == 3
        assert row["map"] == pytest.approx(np.mean(row["map_per_seed"]), abs=1e-4)
        assert row["map_sd"] == pytest.approx(np.std(row["map_per_seed"], ddof=1), abs=1e-4)
        assert row["map_sd"] > 0  # LSH and MrHash really change with the seed
    inductive = result["inductive"]
    assert inductive["n_images"] == [10, 10] and inductive["seeds"] == [0, 1, 2]
    entry = inductive["mrhash"]["16"]
    assert entry["runs"] == 6  # 2 folds x 3 seeds
    assert 0 < entry["inductive"] <= 1 and 0 < entry["transductive"] <= 1
    assert entry["gap"] == pytest.approx(entry["transductive"] - entry["inductive"], abs=1e-4)


def test_stratified_halves_and_seed_lists() -> None:
    from mrhash.errors import BadInput
    from mrhash_research.commands import parse_seeds
    from mrhash_research.evaluate import stratified_halves

    labels = ["a"] * 5 + ["b"] * 4 + ["c"]
    first, second = stratified_halves(labels)
    assert first == [0, 2, 4, 6, 8] and second == [1, 3, 5, 7, 9]
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7] and parse_seeds("5") == [5]
    for bad in ("x", "3-1", "1,1", ""):
        with pytest.raises(BadInput, match="--seeds"):
            parse_seeds(bad)


def test_training_sees_only_pixels_not_class_folders(tiny_dataset: Path, tmp_path: Path
                                                      ) -> None:
    """The same images without any class folder (flat, renamed, same order) give the very
    same codes: nothing about labels reaches training."""
    from mrhash.model.datasets import specs_from_paths
    from mrhash.model.package import load_model
    from mrhash.model.train import TrainConfig, train_model

    paths, labels = scan_dataset(tiny_dataset)
    flat = tmp_path / "flat"
    flat.mkdir()
    flat_paths = []
    for i, p in enumerate(paths):
        flat_paths.append(str(flat / f"img{i:03d}.tif"))
        shutil.copy(p, flat_paths[-1])
    codes = []
    for i, files in enumerate((paths, flat_paths)):
        config = TrainConfig(primary=tuple(specs_from_paths(files, (4, 3, 2))),
                             output=str(tmp_path / f"m{i}.safetensors"), aux_bands=(("nir", (8,)),),
                             bits=16, clusters=3, input_size=32, epochs=1, ae_epochs=1,
                             batch_size=8, device="cpu")
        train_model(config)
        model = load_model(config.output)
        with rasterio.open(paths[0]) as ds:
            patch = ds.read([4, 3, 2]).astype(np.float32)[None]
        codes.append(model.encode(np.concatenate([patch, patch[:, :, ::-1]])))
    assert np.array_equal(codes[0], codes[1])
    assert len(set(labels)) == len(CLASSES)  # the labelled view really had classes
