"""Thumbnail rendering, windowed reads against the whole-band read they replaced (issue 26),
side by side in one run (docs/BENCHMARKS.md, *Thumbnails: windowed reads*).

A large raster is built from real EuroSAT images: a 4096 x 4096, 13-band uint16 GeoTIFF
(256 px tiles, DEFLATE, band interleaved) of the 64 px images side by side, and a copy with
overviews 2, 4, 8, 16. Per case, the same random tiles are rendered by the baseline (the
implementation before issue 26, reimplemented here: the source opened with the engine's
default in-memory cache, which loads every selected band in full, then the window cut out)
and by `mrhash.thumbnails.render`, alternated within each repeat; the figure is the median
over repeats of the mean milliseconds per thumbnail. Each render opens the raster anew, as
the worker does for every hit; the file sits in the OS page cache after the build, so the
times are decoding and copying, not disk. Every PNG of an exact case is checked to be the
baseline's bytes.

    .venv/bin/python scripts/bench_thumbnails.py [--dataset tests/data/eurosat_ms_mini] \\
        [--tiles 8] [--repeats 5] [--json build/bench/thumbnails.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

import rasterio  # noqa: E402
from mrhash.index.store import TileRecord  # noqa: E402
from mrhash.index.thumbnails import _png, display_bands, render  # noqa: E402
from mrhash.raster.normalize import BandStats  # noqa: E402
from mrhash.raster.sources import SourceSpec, open_source  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rasterio.windows import Window  # noqa: E402

IMAGE_PX = 64  # EuroSAT images
BLOCK_PX = 256


def build_mosaic(dataset: Path, path: Path, side: int, overviews: bool) -> Path:
    """A side x side, 13-band uint16 GeoTIFF of the dataset's real 64 px images in a grid
    (cycled in sorted order, shifted by row so that neighbours differ); kept when present."""
    if path.exists():
        return path
    files = sorted(dataset.glob("*/*.tif"))
    if not files:
        raise SystemExit(f"no EuroSAT images (*/*.tif) under {dataset}")
    images = []
    for file in files:
        with rasterio.open(file) as image:
            images.append(image.read())
    bands, dtype = images[0].shape[0], images[0].dtype
    cells = side // IMAGE_PX
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.tif")
    with rasterio.open(partial, "w", driver="GTiff", width=side, height=side, count=bands,
                       dtype=dtype, crs="EPSG:32632",
                       transform=Affine(10, 0, 500000, 0, -10, 5600000), tiled=True,
                       blockxsize=BLOCK_PX, blockysize=BLOCK_PX, compress="deflate",
                       predictor=2, interleave="band") as out:
        for top in range(0, cells, BLOCK_PX // IMAGE_PX):  # one row of blocks at a time
            rows = range(top, min(top + BLOCK_PX // IMAGE_PX, cells))
            strip = np.concatenate([np.concatenate(
                [images[(r * 7 + c) % len(images)] for c in range(cells)], axis=2)
                for r in rows], axis=1)
            out.write(strip, window=Window(0, top * IMAGE_PX, side, strip.shape[1]))
        if overviews:
            out.build_overviews([2, 4, 8, 16], Resampling.average)
    partial.rename(path)  # a build cut short is not taken for a finished one
    return path


def render_before(record: TileRecord, bands: tuple[int | str, ...] | None,
                  rgb: list[int] | None, size: int, stats: BandStats | None) -> bytes:
    """The baseline: thumbnails.render as it was before issue 26 (default cache: the whole
    selected bands loaded, then the window resampled from them)."""
    with open_source(SourceSpec("primary", record.paths, bands)) as source:
        shown = display_bands(source.count, rgb)
        array, valid = source.read_window(record.window)
    return _png(array, valid, shown, size, stats)


def render_window_all_bands(record: TileRecord, bands: tuple[int | str, ...] | None,
                            rgb: list[int] | None, size: int, stats: BandStats | None) -> bytes:
    """The middle step, for the record: the window alone (no in-memory cache) but every
    selected band read, through Source.read_window, as render does for sources of several
    grids; what reading only the shown bands adds is the rest."""
    with open_source(SourceSpec("primary", record.paths, bands), cache_bytes=0) as source:
        shown = display_bands(source.count, rgb)
        array, valid = source.read_window(record.window)
    return _png(array, valid, shown, size, stats)


@dataclass
class Case:
    """One row of the benchmark: tiles of one size on one raster, one band selection."""

    name: str
    raster: Path
    tile_px: int
    bands: tuple[int, ...] | None
    rgb: list[int]
    exact: bool  # whether the new PNG must be the baseline's bytes (no decimated read)


def records(raster: Path, tile_px: int, side: int, count: int,
            rng: np.random.Generator) -> list[TileRecord]:
    """`count` random tiles on the tile grid of the raster (what an index stores)."""
    cells = side // tile_px
    picks = rng.choice(cells * cells, size=min(count, cells * cells), replace=False)
    return [TileRecord(int(i), str(raster), (str(raster),), "EPSG:32632", int(i),
                       (int(i % cells) * tile_px, int(i // cells) * tile_px, tile_px, tile_px),
                       (0, 0, 0, 0), (0, 0, 0, 0), 1.0, b"") for i in picks]


def time_per_thumbnail(make: Callable[[TileRecord], bytes],
                       tiles: list[TileRecord]) -> tuple[float, list[bytes]]:
    """Mean ms per thumbnail over the tiles, and the PNGs."""
    pictures = []
    start = time.perf_counter()
    for tile in tiles:
        pictures.append(make(tile))
    return (time.perf_counter() - start) * 1000 / len(tiles), pictures


def run_case(case: Case, side: int, tiles: int, repeats: int, size: int,
             stats: BandStats) -> dict:
    """Baseline and new, alternated per repeat on the same tiles (seeded)."""
    chosen = records(case.raster, case.tile_px, side, tiles, np.random.default_rng(0))
    with open_source(SourceSpec("primary", (str(case.raster),), case.bands)) as source:
        shown = display_bands(source.count, case.rgb)
        count = source.count
    case_stats = stats if count == stats.bands else BandStats(
        [stats.low[b - 1] for b in case.bands or ()], [stats.high[b - 1] for b in case.bands or ()])
    before_ms, window_ms, after_ms = [], [], []
    identical = True
    for _ in range(repeats):
        ms, old = time_per_thumbnail(
            lambda t: render_before(t, case.bands, case.rgb, size, case_stats), chosen)
        before_ms.append(ms)
        ms, windowed = time_per_thumbnail(
            lambda t: render_window_all_bands(t, case.bands, case.rgb, size, case_stats),
            chosen)
        window_ms.append(ms)
        ms, new = time_per_thumbnail(
            lambda t: render(t, case.bands, case.rgb, size, case_stats), chosen)
        after_ms.append(ms)
        identical &= old == new
        if windowed != old:
            raise SystemExit(f"{case.name}: Source.read_window's window differs from the baseline")
    if case.exact and not identical:
        raise SystemExit(f"{case.name}: the new PNGs differ from the baseline's")
    before, after = statistics.median(before_ms), statistics.median(after_ms)
    window = statistics.median(window_ms)
    result = {"case": case.name, "tile_px": case.tile_px, "bands_selected": count,
              "bands_shown": len(shown), "thumbnail_px": size, "tiles": len(chosen),
              "repeats": repeats, "before_ms": [round(v, 2) for v in before_ms],
              "window_all_bands_ms": [round(v, 2) for v in window_ms],
              "after_ms": [round(v, 2) for v in after_ms], "before_median_ms": round(before, 2),
              "window_all_bands_median_ms": round(window, 2), "after_median_ms": round(after, 2),
              "speedup": round(before / after, 1),
              "identical_png": identical}
    print(f"{case.name:56s} before {before:8.1f} ms  window, all bands {window:6.2f} ms  "
          f"after {after:6.2f} ms  {before / after:5.1f}x  identical PNG: {identical}",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "tests/data/eurosat_ms_mini",
                        help="folder of EuroSAT-MS images (<class>/<name>.tif)")
    parser.add_argument("--work", type=Path, default=REPO / "build/bench/thumbnails",
                        help="where the mosaics are built (kept for the next run)")
    parser.add_argument("--side", type=int, default=4096, help="mosaic side in pixels")
    parser.add_argument("--tiles", type=int, default=8, help="random tiles per case")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="thumbnail side in pixels")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    plain = build_mosaic(args.dataset, args.work / f"mosaic_{args.side}.tif", args.side, False)
    with_overviews = build_mosaic(args.dataset, args.work / f"mosaic_{args.side}_ovr.tif",
                                  args.side, True)
    print(f"mosaics ready in {time.perf_counter() - started:.0f} s: {plain} "
          f"({plain.stat().st_size / 1e6:.0f} MB), {with_overviews.name} "
          f"({with_overviews.stat().st_size / 1e6:.0f} MB)", flush=True)
    # a model's per-band range over EuroSAT (about its 2-98 %): the thumbnails' colour scale
    stats = BandStats([1100, 800, 600, 400, 500, 600, 700, 600, 200, 5, 300, 200, 700],
                      [1700, 1600, 1600, 1900, 2100, 3000, 3600, 3600, 1200, 30, 3300, 2600,
                       3900])
    cases = [
        Case("64 px tile, 13-band model (RGB shown)", plain, 64, None, [3, 2, 1], True),
        Case("64 px tile, RGB model (bands 4,3,2)", plain, 64, (4, 3, 2), [0, 1, 2], True),
        Case("1024 px tile, 13-band model, no overviews", plain, 1024, None, [3, 2, 1], True),
        Case("1024 px tile, 13-band model, overviews (decimated read)", with_overviews, 1024,
             None, [3, 2, 1], False),
    ]
    results = [run_case(case, args.side, args.tiles, args.repeats, args.size, stats)
               for case in cases]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "raster": {"side": args.side, "bands": 13, "dtype": "uint16",
                       "layout": f"GTiff {BLOCK_PX} px tiles, DEFLATE, band interleaved"},
            "python": platform.python_version(), "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__, "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
