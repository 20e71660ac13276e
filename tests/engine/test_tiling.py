"""Tile grid over real rasters, valid-fraction filtering, and `mrhash tiles` GeoJSON output."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import rasterio
from mrhash.app.commands import raster as raster_commands
from mrhash.errors import BadInput
from mrhash.raster.sources import SourceSpec, open_source
from mrhash.raster.tiling import Tile, tile_grid


def run_cli(*argv: str) -> int:
    """Run a raster sub-command through its real argparse registration."""
    parser = argparse.ArgumentParser()
    raster_commands.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _with_nodata(src, dst, rows: slice, nodata=0) -> str:
    """Copy of a real raster with `rows` set to nodata."""
    with rasterio.open(src) as ds:
        data = ds.read()
        profile = ds.profile | {"driver": "GTiff", "nodata": nodata}
    data[:, rows] = nodata
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return str(dst)


def test_grid_windows_and_footprints(landsat_dir):
    with open_source(SourceSpec("p", (str(landsat_dir / "l8_B4.tif"),))) as source:
        tiles = tile_grid(source, 64)
        assert len(tiles) == (627 // 64) * (603 // 64)
        assert all(t.valid_fraction == 1.0 for t in tiles)
        tile = tiles[10]
        col, row, w, h = tile.window
        assert (col, row, w, h) == (64, 64, 64, 64)
        x0, y1 = source.transform @ (col, row)
        assert tile.footprint.bounds == (x0, y1 - 64 * 30, x0 + 64 * 30, y1)
        assert tile.footprint.crs == "EPSG:32616" and tile.path.endswith("l8_B4.tif")
        overlapping = tile_grid(source, 64, stride=32)
        assert len(overlapping) == ((627 - 64) // 32 + 1) * ((603 - 64) // 32 + 1)
    assert Tile.from_dict(json.loads(json.dumps(tile.to_dict()))) == tile


def test_min_valid_skips_nodata_tiles(landsat_dir, tmp_path):
    # rows 0..95 nodata: the first tile row is empty, the second is half valid
    path = _with_nodata(landsat_dir / "l8_B4.tif", tmp_path / "holes.tif", slice(0, 96))
    with open_source(SourceSpec("p", (path,))) as source:
        strict = tile_grid(source, 64, min_valid=0.75)
        loose = tile_grid(source, 64, min_valid=0.5)
    assert min(t.window[1] for t in strict) == 128
    half = [t for t in loose if t.window[1] == 64]
    assert len(half) == 9 and all(t.valid_fraction == 0.5 for t in half)
    assert not any(t.window[1] == 0 for t in loose)


def test_all_nodata_and_too_small(landsat_dir, tmp_path):
    path = _with_nodata(landsat_dir / "l8_B4.tif", tmp_path / "empty.tif", slice(None))
    with open_source(SourceSpec("p", (path,))) as source:
        with pytest.raises(BadInput, match=r"empty\.tif: raster holds no valid data"):
            tile_grid(source, 64)
        with pytest.raises(BadInput, match="smaller than one 1000 px tile"):
            tile_grid(source, 1000)


def test_tiles_command_writes_geojson(sentinel2_dir, tmp_path):
    out = tmp_path / "tiles.geojson"
    assert run_cli("tiles", str(sentinel2_dir), "--bands", "B04,B03,B02", "--size", "256",
                   "--min-valid", "0.5", "--geojson", str(out)) == 0
    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == (1933 // 256) * (1947 // 256)
    first = features[0]
    ring = np.array(first["geometry"]["coordinates"][0])
    # the crop lies near 75.6 W, 37.7 N; RFC 7946 rings are lon/lat, closed, counter-clockwise
    assert np.all((-76 < ring[:, 0]) & (ring[:, 0] < -75.4))
    assert np.all((37.5 < ring[:, 1]) & (ring[:, 1] < 37.8))
    assert (ring[0] == ring[-1]).all()
    x, y = ring[:-1, 0], ring[:-1, 1]
    assert (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() > 0
    props = first["properties"]
    assert props["crs"] == "EPSG:32618" and props["window"] == [0, 0, 256, 256]
    assert props["bounds"] == [435730.0, 4179460.0 - 2560, 435730.0 + 2560, 4179460.0]
    assert [p.name for p in tmp_path.iterdir()] == ["tiles.geojson"]  # no temp leftovers


def test_tiles_command_bad_raster(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_text("nope")
    with pytest.raises(BadInput, match=r"bad\.tif: not a readable raster"):
        run_cli("tiles", str(bad), "--geojson", str(tmp_path / "t.geojson"))
    assert not (tmp_path / "t.geojson").exists()


def test_valid_mask_matches_the_read_mask_across_resolutions(sentinel2_dir, tmp_path):
    # a 10 m band with a 20 m band of the same product whose top rows are nodata: the grid's
    # mask-only pass must agree with the mask of a full co-registered read
    b05 = _with_nodata(sentinel2_dir / "s2_B05.jp2", tmp_path / "s2_B05.tif", slice(0, 101))
    spec = SourceSpec("p", (str(sentinel2_dir / "s2_B04.jp2"), b05))
    with open_source(spec) as source:
        for window in ((0, 150, 700, 120), (37, 190, 300, 40), (1800, 1850, 133, 97)):
            expected = source.read_window(window)[1]
            assert np.array_equal(source.valid_mask(window), expected), window
        assert not source.valid_mask((0, 0, 64, 64)).any()  # under the 20 m hole
        fractions = {t.window[1]: t.valid_fraction for t in tile_grid(source, 64, min_valid=0.1)}
    # the hole is 202 rows at 10 m: rows 192..201 of the first kept tile row are nodata
    assert min(fractions) == 192 and fractions[192] == pytest.approx(54 / 64)
