"""Samples with an auxiliary source made of many rasters (a collection), on the real
BigEarthNet Sentinel-1 + Sentinel-2 pairs: every Sentinel-2 patch is paired, by coordinates
only, with the Sentinel-1 (SAR) patch of the same place, and MrHash trains on the pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mrhash.errors import BadInput
from mrhash.model.datasets import RasterSamples, aux_source_specs, specs_from_paths
from mrhash.model.package import load_model
from mrhash.model.train import TrainConfig, train_model
from mrhash.raster.geometry import Footprint
from mrhash.raster.sources import open_source

RGB = ("B04", "B03", "B02")


def _patch_id(path: str) -> str:
    """BigEarthNet's place id: the last two parts of a patch folder name ("..._87_48")."""
    return "_".join(Path(path).parent.name.split("_")[-2:])


def test_sar_collection_pairs_each_patch_with_its_place(bigearthnet_dir: Path) -> None:
    primary = specs_from_paths([bigearthnet_dir / "BigEarthNet-S2-Example"], RGB)
    sar = aux_source_specs("sar", [str(bigearthnet_dir / "BigEarthNet-S1-Example")])
    assert len(primary) == 6 and len(sar) == 6 and {s.name for s in sar} == {"sar"}
    by_place = {_patch_id(s.paths[0]): s for s in sar}
    with RasterSamples(primary, sar, patch_size=120) as samples:
        assert samples.names == ("primary", "sar") and samples.band_counts == (3, 2)
        assert len(samples) == 6 and not samples.skipped
        (rgb, _), (radar, radar_valid) = samples.read_batch(range(6))
    for i, spec in enumerate(primary):
        # what the collection read equals the SAR patch of the same place, read directly
        with open_source(spec) as s2, open_source(by_place[_patch_id(spec.paths[0])]) as s1:
            expected, _ = s1.read(s2.footprint, (120, 120))
        np.testing.assert_allclose(radar[i], expected)
        assert radar_valid[i].all()
    assert rgb.shape == (6, 3, 120, 120) and np.isfinite(radar).all()


def test_a_primary_no_member_covers_is_skipped_and_named(bigearthnet_dir: Path,
                                                         eurosat_dir: Path) -> None:
    primary = specs_from_paths([bigearthnet_dir / "BigEarthNet-S2-Example"], RGB)
    elsewhere = specs_from_paths(sorted((eurosat_dir / "Forest").glob("*.tif"))[:1], (4, 3, 2))
    sar = aux_source_specs("sar", [str(bigearthnet_dir / "BigEarthNet-S1-Example")])
    with RasterSamples(primary + elsewhere, sar, patch_size=120) as samples:
        assert len(samples) == 6
        [skipped] = samples.skipped
    assert skipped["path"] == elsewhere[0].paths[0]
    assert skipped["error"] == f"{skipped['path']}: no raster of auxiliary source 'sar' overlaps it"


def test_mrhash_trains_with_sar_as_auxiliary_source(bigearthnet_dir: Path,
                                                    tmp_path: Path) -> None:
    config = TrainConfig(
        primary=tuple(specs_from_paths([bigearthnet_dir / "BigEarthNet-S2-Example"], RGB)),
        auxiliary=tuple(aux_source_specs("sar", [str(bigearthnet_dir / "BigEarthNet-S1-Example")])),
        output=str(tmp_path / "s2_s1.safetensors"), bits=16, clusters=3, patch_size=40,
        input_size=32, epochs=1, ae_epochs=2, batch_size=16, device="cpu")
    result = train_model(config)
    assert result.n_samples == 6 * 9  # 120 px patches cut into 40 px tiles
    model = load_model(result.model)
    assert [s["name"] for s in model.config["sources"]] == ["primary", "sar"]
    # query time needs the optical patch only
    with open_source(config.primary[0]) as s2:
        minx, miny, _, _ = s2.footprint.bounds
        patch, _ = s2.read(Footprint(s2.crs, (minx, miny, minx + 400, miny + 400)), (40, 40))
    assert model.encode(patch[None]).shape == (1, 2)


def test_an_unreadable_collection_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("a.tif", "b.tif"):
        (tmp_path / name).write_text("not a raster")
    with pytest.raises(BadInput, match="no such file"):
        aux_source_specs("sar", [str(tmp_path / "missing.tif")])
    specs = aux_source_specs("sar", [str(tmp_path)])
    with pytest.raises(BadInput, match="none of its 2 rasters can be read"):
        RasterSamples([], specs)


def test_worker_train_request_with_a_sar_folder(bigearthnet_dir: Path, tmp_path: Path) -> None:
    """The plugin's wizard sends folders; a folder of SAR patches becomes one collection."""
    from mrhash.model.train import train_config
    from mrhash_contract.protocol import TrainRequest

    config = train_config(TrainRequest.from_params({
        "primary": {"folder": str(bigearthnet_dir / "BigEarthNet-S2-Example"), "bands": RGB},
        "auxiliary": [{"folder": str(bigearthnet_dir / "BigEarthNet-S1-Example"), "name": "sar"}],
        "output": str(tmp_path / "m.safetensors")}))
    assert len(config.primary) == 6 and [s.name for s in config.auxiliary] == ["sar"] * 6
    with RasterSamples.from_config(config) as samples:
        assert samples.names == ("primary", "sar") and not samples.skipped
