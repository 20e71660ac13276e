"""`mrhash scan` on real folders: products grouped, every field filled, bad files listed with
the reason while the rest is catalogued."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import shapely
from mrhash.app.commands import raster as raster_commands
from mrhash.errors import BadInput
from mrhash.raster.catalog import scan


@pytest.fixture()
def mixed_folder(tmp_path, sentinel2_dir, landsat_dir):
    """Real S2 and Landsat products (linked), plus a text file, a truncated GeoTIFF and a
    labels JSON that is not a raster at all (ignored)."""
    for name, source in (("s2", sentinel2_dir), ("l8", landsat_dir)):
        (tmp_path / name).mkdir()
        for path in source.iterdir():
            if path.name.startswith(("s2_", "l8_")):
                os.symlink(path, tmp_path / name / path.name)
    (tmp_path / "notes.tif").write_text("not a raster")
    (tmp_path / "cut.tif").write_bytes((landsat_dir / "l8_B2.tif").read_bytes()[:20_000])
    (tmp_path / "labels.json").write_text("{}")
    return tmp_path


def test_scan_groups_products_and_lists_bad_files(mixed_folder):
    catalogue = scan(mixed_folder)
    errors = {os.path.basename(e["path"]): e["error"] for e in catalogue["errors"]}
    assert set(errors) == {"notes.tif", "cut.tif"}
    assert "not a readable raster" in errors["notes.tif"]
    assert "truncated or corrupt" in errors["cut.tif"]
    by_name = {s["name"]: s for s in catalogue["sources"]}
    assert set(by_name) == {"s2", "l8"}
    s2 = by_name["s2"]
    assert s2["crs"] == "EPSG:32618" and s2["res"] == [10.0, 10.0]
    assert (s2["width"], s2["height"], s2["count"]) == (1933, 1947, 13)
    assert s2["bands"][:4] == ["B01", "B02", "B03", "B04"] and s2["dtype"] == "uint16"
    assert sorted({r[0] for r in s2["band_res"]}) == [10.0, 20.0, 60.0]
    assert s2["nodata"] is None
    assert s2["footprint"]["bounds"] == [435730.0, 4159990.0, 455060.0, 4179460.0]
    outline = shapely.geometry.shape(s2["footprint_wgs84"]["geojson"])
    assert outline.contains(shapely.Point(-75.62, 37.67))  # the crop's place
    assert shapely.from_wkt(s2["footprint_wgs84"]["wkt"]).equals(outline)
    l8 = by_name["l8"]
    assert l8["crs"] == "EPSG:32616" and l8["count"] == 12 and l8["res"] == [15.0, 15.0]


def test_scan_eurosat_folder(eurosat_dir):
    catalogue = scan(eurosat_dir / "River")
    assert catalogue["errors"] == [] and len(catalogue["sources"]) == catalogue["n_files"] == 5
    entry = catalogue["sources"][0]
    assert entry["count"] == 13 and entry["width"] == entry["height"] == 64


def test_scan_bigearthnet_pairs(bigearthnet_dir):
    catalogue = scan(bigearthnet_dir)
    assert catalogue["errors"] == []
    s1 = [s for s in catalogue["sources"] if s["bands"] == ["VH", "VV"]]
    s2 = [s for s in catalogue["sources"] if s["count"] == 12]
    assert len(s1) == len(s2) == 6
    assert s1[0]["dtype"] == "float32"


def test_scan_command_writes_json(mixed_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "catalogue.json"
    parser = argparse.ArgumentParser()
    raster_commands.register(parser.add_subparsers(required=True))
    args = parser.parse_args(["scan", str(mixed_folder), "--json", str(out)])
    assert args.func(args) == 0
    catalogue = json.loads(out.read_text())
    assert len(catalogue["sources"]) == 2 and len(catalogue["errors"]) == 2
    assert os.listdir(out.parent) == ["catalogue.json"]


def test_scan_missing_folder(tmp_path):
    with pytest.raises(BadInput, match="nowhere: does not exist"):
        scan(tmp_path / "nowhere")
