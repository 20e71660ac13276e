"""Sources on real rasters: band selection, product folders, mixed resolutions, footprints,
and a clear BadInput naming the file for every kind of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from mrhash.errors import BadInput
from mrhash.raster.geometry import Footprint
from mrhash.raster.sources import (
    SourceSpec,
    group_band_files,
    open_source,
    raster_files,
    spec_from_folder,
)
from mrhash_contract.bands import normalize_band_name
from rasterio.transform import from_origin


def write_tif(path, data, crs="EPSG:32618", transform=from_origin(435730, 4179460, 10, 10),
              nodata=None):
    """A small GeoTIFF (edge cases only; real behaviour is tested on real files)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name, "nodata": nodata}
    if crs:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return str(path)


def test_spec_round_trips_through_json():
    spec = SourceSpec("nir", ("a_B08.tif", "a_B8A.tif"), ("B08", 2))
    again = SourceSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert SourceSpec.from_dict({"name": "p", "paths": "x.tif"}).paths == ("x.tif",)
    with pytest.raises(BadInput, match="no paths"):
        SourceSpec.from_dict({"name": "p", "paths": []})


def test_band_names_normalise():
    assert normalize_band_name("B04") == normalize_band_name("b4") == "B4"
    assert normalize_band_name("B8A") == "B8A"
    assert normalize_band_name("VV") == "VV"


def test_sentinel2_product_selects_bands_by_name(sentinel2_dir):
    spec = spec_from_folder(sentinel2_dir, ["B04", "B03", "B02"])  # preview.jp2 is ignored
    assert len(spec.paths) == 13
    with open_source(spec) as source:
        assert source.band_names == ["B04", "B03", "B02"]
        assert source.crs == "EPSG:32618" and source.res == (10.0, 10.0)
        assert (source.width, source.height, source.count) == (1933, 1947, 3)
        data, valid = source.read_window((100, 200, 8, 8))
        assert valid.all()
    with rasterio.open(sentinel2_dir / "s2_B03.jp2") as ds:
        expected = ds.read(1, window=((200, 208), (100, 108)))
    np.testing.assert_array_equal(data[1], expected)


def test_mixed_resolution_source_uses_finest_grid(sentinel2_dir):
    paths = tuple(str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B01", "B05", "B04"))
    with open_source(SourceSpec("mix", paths)) as source:
        assert source.res == (10.0, 10.0) and source.width == 1933
        assert source.band_resolutions == [(60.0, 60.0), (20.0, 20.0), (10.0, 10.0)]
        # a 60 m pixel read on the 10 m grid: the 10 m pixel at its centre gets its value
        with rasterio.open(paths[0]) as ds:
            x, y = ds.xy(100, 100)
            value = ds.read(1, window=((100, 101), (100, 101)))[0, 0]
        box = Footprint("EPSG:32618", (x - 5, y - 5, x + 5, y + 5))
        data, valid = source.read(box, (1, 1))
        assert valid.all() and data[0, 0, 0] == pytest.approx(value)


def test_landsat_band_name_b04_matches_l8_b4(landsat_dir):
    with open_source(spec_from_folder(landsat_dir, ["B04", "B8"])) as source:
        assert source.band_names == ["B4", "B8"]
        assert source.res == (15.0, 15.0)  # the panchromatic band is the finest


def test_eurosat_bands_by_index(eurosat_dir):
    path = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    with open_source(SourceSpec("p", (str(path),), (4, 3, 2))) as source:
        assert source.band_names == ["band4", "band3", "band2"]
        data, valid = source.read_window((0, 0, 64, 64))
        with rasterio.open(path) as ds:
            np.testing.assert_array_equal(data, ds.read([4, 3, 2]).astype(np.float32))
        assert valid.all()


def test_bigearthnet_products_group_by_band(bigearthnet_dir):
    groups = group_band_files(raster_files(bigearthnet_dir))
    sizes = sorted({len(g) for g in groups})
    assert sizes == [2, 12]  # S1: VV + VH; S2: 12 band files
    s1 = next(g for g in groups if len(g) == 2)
    with open_source(SourceSpec("sar", s1, ("VV",))) as source:
        assert source.band_names == ["VV"] and source.dtype == "float32"


def test_footprint_around_point_and_transform():
    box = Footprint.around_point(440000, 4170000, "EPSG:32618", 640)
    assert box.bounds == (439680, 4169680, 440320, 4170320)
    wgs = box.to("EPSG:4326")
    back = wgs.to("EPSG:32618")
    assert back.polygon().contains(box.polygon())  # densified bounds never shrink the box
    lon, lat = wgs.center()
    geo = Footprint.around_point(lon, lat, "EPSG:4326", 640).to("EPSG:32618")
    width = geo.bounds[2] - geo.bounds[0]
    assert width == pytest.approx(640, rel=0.01)
    with pytest.raises(BadInput, match="empty footprint"):
        Footprint("EPSG:4326", (1, 1, 1, 2))


# -- bad input: BadInput naming the file and the problem ------------------------------------

def test_non_raster_file(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    with pytest.raises(BadInput, match=r"notes\.tif: not a readable raster"):
        open_source(SourceSpec("p", (str(path),)))


def test_truncated_file(tmp_path, landsat_dir):
    path = tmp_path / "cut.tif"
    path.write_bytes((landsat_dir / "l8_B4.tif").read_bytes()[:30_000])
    with pytest.raises(BadInput, match=r"cut\.tif: truncated or corrupt"):
        open_source(SourceSpec("p", (str(path),)))


def test_missing_file(tmp_path):
    with pytest.raises(BadInput, match=r"gone\.tif: file not found"):
        open_source(SourceSpec("p", (str(tmp_path / "gone.tif"),)))


def test_raster_without_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.ones((4, 4), np.uint8), crs=None)
    with pytest.raises(BadInput, match=r"nocrs\.tif: raster has no CRS"):
        open_source(SourceSpec("p", (path,)))


def test_raster_without_geotransform(tmp_path):
    path = write_tif(tmp_path / "nogeo.tif", np.ones((4, 4), np.uint8), transform=None)
    with pytest.raises(BadInput, match=r"nogeo\.tif: raster has no geotransform"):
        open_source(SourceSpec("p", (path,)))


def test_band_that_does_not_exist(sentinel2_dir, eurosat_dir):
    with pytest.raises(BadInput, match=r"s2_B01\.jp2: band 'B13' does not exist"):
        open_source(spec_from_folder(sentinel2_dir, ["B04", "B13"]))
    path = str(sorted((eurosat_dir / "Forest").glob("*.tif"))[0])
    with pytest.raises(BadInput, match="band 14 does not exist"):
        open_source(SourceSpec("p", (path,), (14,)))


def test_footprint_outside_the_raster(sentinel2_dir):
    with open_source(SourceSpec("p", (str(sentinel2_dir / "s2_B04.jp2"),))) as source:
        far = Footprint.around_point(300000, 4170000, "EPSG:32618", 640)
        with pytest.raises(BadInput, match=r"s2_B04\.jp2: footprint .* is outside"):
            source.read(far, (8, 8))
        data, valid = source.read(far, (8, 8), allow_outside=True)
        assert not valid.any() and not data.any()


def test_nodata_is_masked(tmp_path, sentinel2_dir):
    with rasterio.open(sentinel2_dir / "s2_B04.jp2") as ds:
        data = ds.read(1, window=((0, 32), (0, 32)))
        transform = ds.window_transform(((0, 32), (0, 32)))
    data[:16] = 0
    path = write_tif(tmp_path / "half.tif", data, transform=transform, nodata=0)
    with open_source(SourceSpec("p", (path,))) as source:
        values, valid = source.read_window((0, 0, 32, 32))
    assert not valid[:16].any() and valid[16:].all()
    np.testing.assert_array_equal(values[0, 16:], data[16:])
    # resampled across CRSs: nodata never leaks into the interpolation (valid values stay
    # within the valid data's range) and the nodata half stays invalid
    with open_source(SourceSpec("p", (path,))) as source:
        box = source.footprint.to("EPSG:4326")
        values, valid = source.read(box, (40, 40))
    assert valid[24:34, 6:34].all() and not valid[:5].any()
    assert data[16:].min() <= values[0][valid].min() and values[0][valid].max() <= data.max()


def test_folder_with_several_products_is_rejected(tmp_path, eurosat_dir):
    for path in sorted((eurosat_dir / "Forest").glob("*.tif"))[:2]:
        shutil.copy(path, tmp_path)
    with pytest.raises(BadInput, match="expected one product"):
        spec_from_folder(tmp_path)


def test_band_selected_by_description(tmp_path, eurosat_dir):
    src = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    with rasterio.open(src) as ds:
        data, transform, crs = ds.read([8, 4]), ds.transform, ds.crs
    path = write_tif(tmp_path / "nir_red.tif", data, crs=crs, transform=transform)
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = ("nir", "B04")
    with open_source(SourceSpec("p", (path,), ("b4", "NIR"))) as source:
        assert source.band_names == ["B04", "nir"]
        values, _ = source.read_window((0, 0, 64, 64))
    np.testing.assert_array_equal(values, data[::-1].astype(np.float32))
