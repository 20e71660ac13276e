"""PNG thumbnails of indexed tiles, cached in the index folder (`thumbnails/<id>_<px>.png`; ids
are never reused, so a cached file never goes stale).

Display bands: the model's RGB bands when its config names them (`rgb`, 0-based among the
primary bands), else its first three bands, else its first band in grey. Each band is
stretched with the model's normalisation range (its robust per-band percentiles over the
training data), so every thumbnail of a result grid shares one colour scale, as the map does;
without usable model statistics, a 2-98 percentile stretch over the tile's valid pixels.
Invalid pixels are black.

Reads (issue 26): a thumbnail reads only its tile's window, never whole bands. The source is
opened without the engine's in-memory band cache (`cache_bytes=0`); where its files share one
grid, the window of the shown bands is read straight from them (plus the bands that decide
which pixels are valid), else `Source.read_window` reads the window of every selected band.
Either way the values are those of a whole-band read, hence the same PNG. A window many times
the thumbnail's side, on a raster with overviews, is read decimated (GDAL serves it from the
overviews) instead of in full resolution: the one case whose picture differs from a full read.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mrhash.errors import BadInput
from mrhash.fileio import atomic_write_bytes
from mrhash.index.store import TileRecord
from mrhash.raster.geometry import Footprint
from mrhash.raster.normalize import BandStats
from mrhash.raster.sources import Source, SourceSpec, open_source

THUMBNAIL_PX = 128
# zlib's fastest level: a 128 px thumbnail in 0.4 ms instead of 1.7 ms (the default, 6), for
# files 20 % bigger; they are made at every first look at a place, and read from disk once
PNG_COMPRESS_LEVEL = 1

# Thumbnails read only the pixels they show. Not the engine's default in-memory cache, which
# loads every selected band of the raster in full on the first read (up to 1 GiB) to serve a
# single 64 px window; GDAL's own block cache then holds only the window's blocks, and only
# until render() closes the raster. (GDAL_CACHEMAX is not set here: rasterio.Env applies it
# process-wide, under the worker's index and train threads too.)
READ_CACHE_BYTES = 0

# A window at least this many times the thumbnail's side is read decimated when its raster
# has overviews: the full-resolution window would be read only to be thrown away by the
# resize, while an overview holds a picture of about the thumbnail's size. Below it, the
# window is small and read exactly as before.
OVERVIEW_FACTOR = 4


def display_bands(n_bands: int, rgb: list[int] | tuple[int, ...] | None) -> list[int]:
    """0-based band positions to show: RGB, the first three, or one grey band."""
    if rgb and len(rgb) == 3 and all(0 <= b < n_bands for b in rgb):
        return [int(b) for b in rgb]
    return [0, 1, 2] if n_bands >= 3 else [0]


def stretch(array: np.ndarray, valid: np.ndarray,
            limits: tuple[list[float], list[float]] | None = None,
            low: float = 2, high: float = 98) -> np.ndarray:
    """float [bands, h, w] -> uint8 [h, w, bands]: each band scaled from limits (per-band lows,
    highs) to 0-255, or from its own low/high percentiles when no limits are given."""
    if limits is None:
        if not valid.any():
            return np.zeros(array.shape[1:] + (array.shape[0],), dtype=np.uint8)
        bounds = [np.percentile(band[valid], [low, high]) for band in array]
        limits = ([float(lo) for lo, _ in bounds], [float(hi) for _, hi in bounds])
    return stretch_batch(array[None], valid[None], limits)[0]


def stretch_batch(array: np.ndarray, valid: np.ndarray,
                  limits: tuple[list[float], list[float]]) -> np.ndarray:
    """float [n, bands, h, w] -> uint8 [n, h, w, bands]: each band scaled from limits to
    0-255, invalid pixels black; a batch's pictures in a few array operations (a build makes
    them for every batch it encodes)."""
    low = np.asarray(limits[0], dtype=np.float64)
    span = np.asarray(limits[1], dtype=np.float64) - low
    shape = (1, len(low), 1, 1)
    # in the array's precision, the span taken in float64 first: the bytes of the per-band
    # arithmetic with Python floats this replaced
    scaled = ((array - low.astype(array.dtype).reshape(shape))
              / np.where(span > 0, span, 1.0).astype(array.dtype).reshape(shape))
    scaled[:, span <= 0] = 0.0
    out = np.where(valid[:, None], np.clip(scaled * 255 + 0.5, 0, 255), 0).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def _picture(array: np.ndarray, valid: np.ndarray, shown: list[int],
             stats: BandStats | None) -> Image.Image:
    """The `shown` bands of a read patch as an image of its own size, stretched with `stats`
    (the model's, one range per selected band) when they fit."""
    limits = None
    if stats is not None and stats.bands == array.shape[0]:
        limits = ([stats.low[b] for b in shown], [stats.high[b] for b in shown])
    image = stretch(array[shown], valid, limits)
    return Image.fromarray(image[..., 0] if len(shown) == 1 else image)


def batch_pictures(patches: np.ndarray, valid: np.ndarray,
                   windows: list[tuple[int, int, int, int]], rgb: list[int] | None,
                   stats: BandStats | None) -> list[Image.Image] | None:
    """The pictures of a batch of tiles from the raw patches they were encoded from (float32
    [n, C, h, w], bool [n, h, w]): the pictures `tile_picture` reads for their windows, when
    the patches hold the windows' own pixels (the model's input size is the tile's); None
    when they do not (a tile resampled to the model's input: read its window)."""
    if any((height, width) != patches.shape[2:] for _, _, width, height in windows):
        return None
    shown = display_bands(patches.shape[1], rgb)
    if stats is None or stats.bands != patches.shape[1]:  # per-tile percentiles
        return [_picture(patch, mask, shown, stats) for patch, mask in zip(patches, valid,
                                                                           strict=True)]
    images = stretch_batch(patches[:, shown], valid,
                           ([stats.low[b] for b in shown], [stats.high[b] for b in shown]))
    return [Image.fromarray(image[..., 0] if len(shown) == 1 else image) for image in images]


def png_bytes(picture: Image.Image, size: int) -> bytes:
    """PNG bytes of a picture at `size` x `size`."""
    if picture.size != (size, size):
        # nearest keeps pixels crisp when enlarging a small tile
        picture = picture.resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _png(array: np.ndarray, valid: np.ndarray, shown: list[int], size: int,
         stats: BandStats | None) -> bytes:
    """PNG bytes of the `shown` bands of a read patch (`_picture`) at `size`."""
    return png_bytes(_picture(array, valid, shown, stats), size)


def _window_read(source: Source, window: tuple[int, int, int, int], size: int,
                 shown: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(float32 [bands, h, w], bool [h, w] valid) of a window of a source whose files all
    lie on its grid, read straight from the files: only the `shown` bands (the other rows
    stay zero) and, in files that can mark pixels invalid, their other selected bands, since
    a pixel invalid in any selected band is invalid (the rule of `Source.read_window`, whose
    values and mask these are, invalid pixels zeroed). Decimated to [size, size] from the
    overviews when the window is OVERVIEW_FACTOR times the thumbnail and every file read has
    overviews (without them GDAL would decimate the full-resolution window: the same I/O and
    another picture). None where `Source.read_window` must do it: a file on another grid
    (several resolutions are resampled there) or a window reaching past the raster's edge
    (that part is invalid there)."""
    col, row, width, height = window
    for band_file in source.files:
        ds = band_file.dataset
        if (band_file.crs != source.crs or band_file.transform != source.transform
                or col < 0 or row < 0 or col + width > ds.width or row + height > ds.height):
            return None
    wanted = set(shown)
    plan = []  # (file, its 1-based band indexes to read, their positions among the bands)
    for band_file in source.files:
        pairs = [(index, position) for index, position
                 in zip(band_file.indexes, band_file.positions, strict=True)
                 if band_file.checks_values or position in wanted]
        if pairs:
            plan.append((band_file, [i for i, _ in pairs], [p for _, p in pairs]))
    decimate = min(width, height) >= OVERVIEW_FACTOR * size and all(
        band_file.dataset.overviews(index) for band_file, indexes, _ in plan for index in indexes)
    shape = (size, size) if decimate else (height, width)
    out = np.zeros((source.count, *shape), dtype=np.float32)
    valid = np.ones(shape, dtype=bool)
    for band_file, indexes, positions in plan:
        try:
            values = band_file.dataset.read(
                indexes, window=Window(col, row, width, height),
                out_shape=(len(indexes), *shape) if decimate else None,
                resampling=Resampling.nearest).astype(np.float32)
        except RasterioError as error:
            raise BadInput(f"cannot read raster data ({error})", path=band_file.path) from None
        if band_file.checks_values:  # all of the file's selected bands were read
            valid &= Source._valid_values(band_file, values)
        out[positions] = values
    out[:, ~valid] = 0.0
    return out, valid


def open_for_thumbnails(paths: tuple[str, ...], bands: tuple[int | str, ...] | None) -> Source:
    """A raster opened to read tile windows for thumbnails (no in-memory band cache)."""
    return open_source(SourceSpec("primary", paths, bands), cache_bytes=READ_CACHE_BYTES)


def tile_picture(source: Source, window: tuple[int, int, int, int], rgb: list[int] | None,
                 size: int, stats: BandStats | None) -> Image.Image:
    """The picture of one tile window of an open source, at its own size (or `size` when
    read decimated): its window alone, the shown bands alone where the files allow it."""
    shown = display_bands(source.count, rgb)
    read = _window_read(source, window, size, shown)
    array, valid = read if read is not None else source.read_window(window)
    return _picture(array, valid, shown, stats)


def render(record: TileRecord, bands: tuple[int | str, ...] | None,
           rgb: list[int] | None, size: int = THUMBNAIL_PX,
           stats: BandStats | None = None) -> bytes:
    """PNG bytes of one tile, read from its raster with the model's band selection
    (`tile_picture`; decimated from the overviews for a window much bigger than `size`)."""
    with open_for_thumbnails(record.paths, bands) as source:
        picture = tile_picture(source, record.window, rgb, size, stats)
    return png_bytes(picture, size)


def render_footprint(paths: tuple[str, ...], footprint: Footprint,
                     bands: tuple[int | str, ...] | None, rgb: list[int] | None,
                     size: int = THUMBNAIL_PX, stats: BandStats | None = None) -> bytes:
    """PNG bytes of any footprint (any CRS) of a raster: the query's own picture (only the
    pixels under the footprint are read)."""
    with open_source(SourceSpec("primary", paths, bands),
                     cache_bytes=READ_CACHE_BYTES) as source:
        shown = display_bands(source.count, rgb)
        array, valid = source.read(footprint, (size, size))
    return _png(array, valid, shown, size, stats)


def _cached(cache_dir: str | Path, name: str, make: Callable[[], bytes]) -> Path:
    """Path of a cached PNG, made by `make()` first when missing (in the index folder, else
    in the user's temp folder for an index that cannot be written)."""
    places = [Path(cache_dir) / name, _fallback_dir(cache_dir) / name]
    for path in places:
        if path.is_file() and path.stat().st_size:  # (empty: a power cut, made again)
            return path
    picture = make()
    try:  # a cache: not synced to disk (on every click, 1 ms a thumbnail)
        atomic_write_bytes(places[0], picture, durable=False)
        return places[0]
    except OSError:  # a read-only index (a DVD, a read-only share): the user's temp folder
        atomic_write_bytes(places[1], picture, durable=False)
        return places[1]


def query_thumbnail(cache_dir: str | Path, paths: tuple[str, ...], footprint: Footprint,
                    model, bands: tuple[int | str, ...] | None = None,
                    size: int = THUMBNAIL_PX) -> Path:
    """Path of the PNG of a query footprint, cached by raster (path, size, mtime), place and
    model, on the model's colour scale like the hits' thumbnails."""
    stamps = [(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in paths]
    key = hashlib.sha1(json.dumps([stamps, footprint.crs, list(footprint.bounds), size,
                                   model.fingerprint, list(bands or ())]).encode()).hexdigest()
    return _cached(cache_dir, f"query_{key[:20]}_{size}.png", lambda: render_footprint(
        paths, footprint, bands or model.primary.bands, model.config.get("rgb"), size,
        model.stats))


def thumbnail(cache_dir: str | Path, record: TileRecord, model,
              bands: tuple[int | str, ...] | None = None, size: int = THUMBNAIL_PX,
              stored: Callable[[int, int], bytes | None] | None = None) -> Path:
    """Path of the tile's cached PNG, made first when missing: from the picture stored at
    index time (`stored(id, size)`, thumbnail_store.py), else rendered from the raster with
    the model's colours (None: its file is missing); `bands`: the index's band selection
    (default: the model's primary bands)."""
    def make() -> bytes:
        picture = stored(record.id, size) if stored is not None else None
        if picture is not None:
            return picture
        if not Path(record.path).exists():
            raise BadInput("raster of this tile is gone (moved or deleted)", path=record.path)
        if model is None:
            raise BadInput("no thumbnail stored for this tile, and the index's model (its "
                           "colours) is missing", path=record.path)
        return render(record, bands or model.primary.bands, model.config.get("rgb"), size,
                      model.stats)

    return _cached(cache_dir, f"{record.id}_{size}.png", make)


def _fallback_dir(cache_dir: str | Path) -> Path:
    """Thumbnails of an index whose folder cannot be written, one folder per index (its path
    and its database file: a rebuilt index restarts its tile ids)."""
    database = Path(cache_dir).parent / "index.sqlite"
    identity = f"{Path(cache_dir).absolute()}:{database.stat().st_ino if database.exists() else 0}"
    key = hashlib.sha1(identity.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mrhash-thumbnails" / key
