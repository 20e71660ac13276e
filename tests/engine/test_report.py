"""The label-free model report: its figures agree with the model's real encoding path, and its
verdict turns poor, with the reason, when the codes are degenerate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mrhash.model.datasets import RasterSamples, specs_from_paths
from mrhash.model.package import load_model
from mrhash.model.report import GOOD, POOR, Thresholds, model_report
from mrhash.model.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def trained(eurosat_dir: Path, tmp_path_factory) -> tuple[dict, object, np.ndarray]:
    """A tiny 4-view model on the 50 real mini EuroSAT images, its report and raw patches."""
    files = sorted(eurosat_dir.glob("*/*.tif"))
    out = tmp_path_factory.mktemp("report") / "m.safetensors"
    config = TrainConfig(primary=tuple(specs_from_paths(files, (4, 3, 2))), output=str(out),
                         aux_bands=(("nir", (8,)),), bits=32, clusters=5, input_size=32,
                         epochs=6, ae_epochs=10, batch_size=16, views=4, device="cpu",
                         latent_dim=64)  # 6 epochs at 32 px: a wide latent settles faster
    result = train_model(config)
    with RasterSamples(config.primary, patch_size=64) as samples:
        patches = samples.read_batch(range(len(samples)))[0][0]
    return result.report, load_model(result.model), patches


def test_report_matches_the_encoding_path(trained) -> None:
    report, model, patches = trained
    bits = np.unpackbits(model.encode(patches), axis=1).astype(bool)
    assert report["n_tiles"] == 50 and report["bits"] == 32
    assert report["codes"]["distinct"] == len({row.tobytes() for row in bits})
    assert report["codes"]["largest_ties"][0] == max(
        sum(np.array_equal(a, b) for b in bits) for a in bits)
    assert np.allclose(report["bit_balance"]["mean_per_bit"], bits.mean(axis=0), atol=0.021)
    # views 1..3 of the report are the 90/180/270 degree rotations of each patch
    rotated = [np.unpackbits(model.encode(np.rot90(patches, k, axes=(2, 3)).copy()),
                             axis=1).astype(bool) for k in (1, 2, 3)]
    hamming = np.mean([(r != bits).sum(axis=1).mean() for r in rotated])
    assert report["view_agreement"]["views"] == 4
    assert report["view_agreement"]["mean_hamming"] == pytest.approx(hamming, abs=0.3)
    clusters = report["clusters"]
    assert clusters["k"] == 5 and sum(clusters["sizes"]) == 50
    assert clusters["empty"] == sum(s == 0 for s in clusters["sizes"])
    assert 0 <= report["bit_correlation"]["mean_abs"] <= report["bit_correlation"]["max_abs"] <= 1
    assert report["thresholds"] == Thresholds().__dict__
    assert report["verdict"].startswith(GOOD if report["ok"] else POOR)


def test_degenerate_codes_are_called_poor_with_the_reason(trained) -> None:
    report, model, patches = trained
    codes = model.encode_float(patches)
    dead = codes.copy()
    dead[:, :16] = 1.0  # half the bits constant: a 16-bit code pretending to be 32
    verdict = model_report(dead)["verdict"]
    assert verdict.startswith(POOR) and "16 of 32 bits" in verdict
    same = np.repeat(codes[:1], len(codes), axis=0)  # every tile one code
    poor = model_report(same, assignments=np.zeros(len(codes), dtype=int), clusters=5)
    assert not poor["ok"] and "50 of 50 tiles (100%) share one code" in poor["verdict"]
    assert "4 of 5 pseudo-label clusters are empty" in poor["verdict"]
    flipped = -codes[None]  # a rotation flips every bit
    assert "changes 32.0 of 32 bits" in model_report(codes, flipped)["verdict"]
    assert model_report(codes)["view_agreement"] is None  # not measured, not judged


def test_real_model_of_distinct_classes_is_called_good(trained) -> None:
    """The report's figures for the real model stay inside the documented thresholds."""
    report, _, _ = trained
    assert report["ok"], report["verdict"]
    assert report["verdict"] == f"{GOOD}." and report["problems"] == []
