"""`mrhash train` and `mrhash encode` on real files."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mrhash.errors import BadInput


def _run(argv: list[str]) -> int:
    from mrhash.app.commands import model

    parser = argparse.ArgumentParser(prog="mrhash")
    model.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def small_folder(eurosat_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    for cls in ("Pasture", "Highway"):
        for f in sorted((eurosat_dir / cls).glob("*.tif"))[:4]:
            shutil.copy(f, root / f"{cls}_{f.name}")
    return root


def test_train_then_encode(small_folder: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.safetensors"
    assert _run(["train", "--primary", str(small_folder), "--primary-bands", "4,3,2",
                 "--aux", "nir=8", "--aux", "rededge_swir=5,6,7,13,11,12", "--bits", "32",
                 "--clusters", "3", "--input-size", "32", "--epochs", "1", "--ae-epochs", "1",
                 "--device", "cpu", "--output", str(model), "--json",
                 str(tmp_path / "train.json")]) == 0
    err = capsys.readouterr().err
    assert "ETA" in err and "loss=" in err and "8 samples" in err
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["history"][-1]["stage"] == "hash"
    assert _run(["encode", "--model", str(model), str(small_folder), "--json",
                 str(tmp_path / "codes.json"), "--npy", str(tmp_path / "codes.npy")]) == 0
    codes = json.loads((tmp_path / "codes.json").read_text())
    packed = np.load(tmp_path / "codes.npy")
    assert packed.shape == (8, 4) and len(codes["codes"]) == 8
    assert codes["codes"][0]["code"] == packed[0].tobytes().hex()
    assert codes["fingerprint"] == result["fingerprint"]


def test_cli_input_errors(small_folder: Path, tmp_path: Path) -> None:
    base = ["train", "--primary", str(small_folder), "--output", str(tmp_path / "m.st")]
    with pytest.raises(BadInput, match="NAME=BANDS"):
        _run([*base, "--aux", "nir"])
    with pytest.raises(BadInput, match="no such file"):
        _run(["train", "--primary", str(tmp_path / "nope"), "--output", "x"])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="no CUDA"):
            _run([*base, "--device", "cuda"])
    assert not (tmp_path / "m.st").exists()
