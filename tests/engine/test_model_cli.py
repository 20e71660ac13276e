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


class _Reached(Exception):
    """Raised by the stand-in of train.train_request: the request it was called with."""


def _reached(monkeypatch, run) -> object:
    """The TrainRequest `run()` hands to model.train.train_request (which is not run)."""
    from mrhash.model import train

    def stand_in(request, job=None):
        raise _Reached(request)

    monkeypatch.setattr(train, "train_request", stand_in)
    with pytest.raises(_Reached) as reached:
        run()
    return reached.value.args[0]


def test_the_cli_and_the_worker_reach_the_same_training(small_folder: Path, eurosat_dir: Path,
                                                        tmp_path: Path, monkeypatch) -> None:
    """`mrhash train` and the worker's `train` turn equivalent inputs into the same
    TrainRequest for the same engine function; the CLI's `NAME=a.tif,b.tif` is a stacked
    entry: one auxiliary raster of both files' bands."""
    import io

    from mrhash.app.worker import Worker
    from mrhash.jobs import JobControl
    from mrhash.model.train import train_config

    a, b = (str(p) for p in sorted((eurosat_dir / "Forest").glob("*.tif"))[:2])
    sar, output = eurosat_dir / "River", str(tmp_path / "m.safetensors")
    stac, dates = "https://x.org/stac/v1/collections/s2", "2020-04-01/2020-09-30"
    cli = _reached(monkeypatch, lambda: _run([
        "train", "--primary", str(small_folder), "--primary-bands", "4,3,2", "--rgb", "1,2,3",
        "--aux", "nir=8", "--aux-source", f"sar={sar}", "--aux-source", f"swir={a},{b}@11,12",
        "--aux-source", f"s2={stac}@B05,B8A", "--aux-date", dates, "--bits", "32",
        "--clusters", "3", "--epochs", "2", "--lr", "0.01", "--device", "cpu",
        "--output", output]))
    params = {"output": output, "primary": {"folder": str(small_folder), "bands": [4, 3, 2]},
              "aux_bands": [{"name": "nir", "bands": [8]}], "aux_date": dates,
              "auxiliary": [{"name": "sar", "folder": str(sar)},
                            {"name": "swir", "paths": [a, b], "bands": [11, 12],
                             "stacked": True},
                            {"name": "s2", "stac": stac, "assets": ["B05", "B8A"]}],
              "rgb": [0, 1, 2], "bits": 32, "clusters": 3, "epochs": 2, "lr": 0.01,
              "device": "cpu"}
    worker = _reached(monkeypatch, lambda: Worker(io.StringIO(), "cpu")._run_train(
        params, JobControl()))
    assert cli == worker
    config = train_config(cli)
    swir = [spec for spec in config.auxiliary if spec.name == "swir"]
    assert [(s.paths, s.bands) for s in swir] == [((a, b), (11, 12))]
    assert {s.name for s in config.auxiliary} == {"sar", "swir", "s2"}
    assert (config.bits, config.epochs, config.lr, config.rgb) == (32, 2, 0.01, (0, 1, 2))
