"""Model package: one safetensors file, never unpickled, clear errors for bad files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from mrhash.errors import BadInput, ModelFormatError
from mrhash.model.backbone import Backbone
from mrhash.model.networks import HashNet
from mrhash.model.package import FORMAT_VERSION, load_model, save_model
from mrhash.raster.normalize import BandStats
from mrhash.raster.sources import SourceSpec


def _config(path: str) -> dict:
    return {"primary": SourceSpec("primary", (path,), (4, 3, 2)).to_dict(), "bands": 3,
            "rgb": None, "patch_size": 64, "input_size": 32, "bits": 32,
            "stats": BandStats([500, 400, 300], [2500, 2000, 1800]).to_dict(),
            "backbone": "efficientnet-lite0"}


@pytest.fixture(scope="module")
def eurosat_patches(eurosat_dir: Path) -> tuple[str, np.ndarray]:
    files = sorted((eurosat_dir / "Residential").glob("*.tif"))[:4]
    arrays = []
    for f in files:
        with rasterio.open(f) as ds:
            arrays.append(ds.read([4, 3, 2]).astype(np.float32))
    return str(files[0]), np.stack(arrays)


@pytest.fixture(scope="module")
def package(tmp_path_factory, eurosat_patches) -> tuple[Path, HashNet, str]:
    torch.manual_seed(0)
    net = HashNet(Backbone(3, input_size=32), 32).eval()
    path = tmp_path_factory.mktemp("pkg") / "model.safetensors"
    fingerprint = save_model(path, net, _config(eurosat_patches[0]))
    return path, net, fingerprint


def test_round_trip_encodes_like_the_saved_network(package, eurosat_patches) -> None:
    path, net, fingerprint = package
    model = load_model(path)
    assert model.fingerprint == fingerprint and len(fingerprint) == 64
    assert model.bits == 32 and model.patch_size == 64
    assert model.primary.bands == (4, 3, 2)
    assert model.config["format_version"] == FORMAT_VERSION
    raw = eurosat_patches[1]
    codes = model.encode(raw)
    assert codes.shape == (4, 4) and codes.dtype == np.uint8
    with torch.no_grad():
        expected = net(torch.from_numpy(model.stats.apply(raw))).numpy()
    assert np.allclose(model.encode_float(raw), expected, atol=1e-5)
    assert np.array_equal(codes, np.packbits(expected > 0, axis=1))
    assert np.array_equal(model.encode(raw[:1]), codes[:1])  # batching changes nothing
    with pytest.raises(BadInput, match=r"\[N, 3, H, W\]"):
        model.encode(raw[:, :2])


def test_the_file_holds_no_pickle(package) -> None:
    path = package[0]
    data = path.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert json.loads(header["__metadata__"]["mrhash"])["bits"] == 32
    assert b"\x80\x04\x95" not in data[:64]  # not a pickle protocol-4 stream


def _save_with(tmp_path: Path, package, **changes) -> Path:
    net = package[1]
    config = {**_config("x.tif"), **changes}
    out = tmp_path / "changed.safetensors"
    save_model(out, net, config)
    return out


def test_bad_packages_raise_model_format_error(package, tmp_path: Path) -> None:
    path = package[0]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    pickled = tmp_path / "pickled.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    cases = {truncated: "not a readable", pickled: "not a readable",
             tmp_path / "missing.safetensors": "cannot read", tmp_path: "not a folder"}
    for bad, message in cases.items():
        with pytest.raises(ModelFormatError, match=message) as info:
            load_model(bad)
        assert str(bad) in str(info.value)


def test_newer_format_and_mismatched_weights_are_refused(package, tmp_path: Path) -> None:
    import safetensors.torch

    data = package[0].read_bytes()
    tensors = safetensors.torch.load(data)
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    config = json.loads(header["__metadata__"]["mrhash"])
    newer = tmp_path / "newer.safetensors"
    safetensors.torch.save_file(tensors, newer, metadata={
        "mrhash": json.dumps({**config, "format_version": FORMAT_VERSION + 1})})
    with pytest.raises(ModelFormatError, match="format version"):
        load_model(newer)
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(tensors, plain)
    with pytest.raises(ModelFormatError, match="metadata"):
        load_model(plain)
    with pytest.raises(ModelFormatError, match="do not match"):
        load_model(_save_with(tmp_path, package, bits=64))


def test_the_autoencoder_encoder_travels_with_the_package(eurosat_patches, tmp_path) -> None:
    """Format 2: the latent's encoder is saved and loaded with the hash network; `embed` gives
    the relaxed code then the latent, as the network does. A stale "latent" in a config never
    outlives the weights, and a format-1 config cannot claim one."""
    import safetensors.torch
    from mrhash.model.networks import mlp

    torch.manual_seed(1)
    backbone = Backbone(3, input_size=32)
    net = HashNet(backbone, 32, mlp([backbone.feature_dim, 24, 5])).eval()
    path = tmp_path / "latent.safetensors"
    save_model(path, net, _config(eurosat_patches[0]))
    model = load_model(path)
    assert model.latent_dim == 5 and model.config["latent"] == {"dim": 5, "hidden": 24}
    patches = eurosat_patches[1]
    values = model.embed(patches)
    with torch.no_grad():
        expected = net.embed(torch.from_numpy(model.stats.apply(patches))).numpy()
    assert values.shape == (4, 37) and np.allclose(values, expected, atol=1e-5)
    assert np.array_equal(model.encode_float(patches), values[:, :32])
    plain = tmp_path / "plain.safetensors"
    save_model(plain, HashNet(backbone, 32).eval(), {**_config(eurosat_patches[0]),
                                                     "latent": {"dim": 5, "hidden": 24}})
    assert load_model(plain).latent_dim == 0
    data = path.read_bytes()
    config = json.loads(json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
                        ["__metadata__"]["mrhash"])
    tensors = safetensors.torch.load(data)
    for bad, why in (({**config, "format_version": 1}, "format 1 with a latent"),
                     ({**config, "latent": {"dim": 5}}, "is not")):
        bad_path = tmp_path / "bad.safetensors"
        safetensors.torch.save_file(tensors, bad_path, metadata={"mrhash": json.dumps(bad)})
        with pytest.raises(ModelFormatError, match=why):
            load_model(bad_path)
