"""Thumbnails of real indexed tiles: display bands, percentile stretch, PNG cache, and reads
of the tile's window alone (issue 26) that render the PNG a whole-band read renders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from mrhash.errors import BadInput
from mrhash.index.build import build_index
from mrhash.index.encode import tile_patches
from mrhash.index.folder import IndexFolder
from mrhash.index.store import TileRecord
from mrhash.index.thumbnails import (
    PNG_COMPRESS_LEVEL,
    _png,
    batch_pictures,
    display_bands,
    open_for_thumbnails,
    render,
    stretch,
    thumbnail,
    tile_picture,
)
from mrhash.model.package import load_model
from mrhash.raster.normalize import BandStats
from mrhash.raster.sources import SourceSpec, open_source
from mrhash.raster.tiling import tile_grid
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import Affine
from test_index_support import TILE

MOSAIC_PX = 1024  # 16 x 16 real 64 px EuroSAT images: big enough that a whole read shows
BLOCK_PX = 256


def _mosaic(path: Path, eurosat_dir: Path, overviews: bool = False) -> Path:
    """A 1024 x 1024, 13-band uint16 GeoTIFF (256 px tiles, DEFLATE) of real EuroSAT images
    side by side; nodata 0, with one zeroed 100 x 60 px hole so that invalid pixels are
    rendered too; with overviews 2, 4, 8 when asked."""
    images = [rasterio.open(f).read() for f in sorted(eurosat_dir.glob("*/*.tif"))]
    side = MOSAIC_PX // 64
    data = np.concatenate([np.concatenate([images[(r * side + c) % len(images)]
                                           for c in range(side)], axis=2)
                           for r in range(side)], axis=1)
    data[:, 300:360, 420:520] = 0
    with rasterio.open(path, "w", driver="GTiff", width=MOSAIC_PX, height=MOSAIC_PX,
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:32632",
                       transform=Affine(10, 0, 500000, 0, -10, 5600000), nodata=0, tiled=True,
                       blockxsize=BLOCK_PX, blockysize=BLOCK_PX, compress="deflate") as out:
        out.write(data)
        if overviews:
            out.build_overviews([2, 4, 8], Resampling.average)
    return path


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory, eurosat_dir) -> tuple[Path, Path]:
    """The mosaic without overviews, and the same with them."""
    root = tmp_path_factory.mktemp("mosaic")
    return (_mosaic(root / "mosaic.tif", eurosat_dir),
            _mosaic(root / "mosaic_ovr.tif", eurosat_dir, overviews=True))


def _record(paths: tuple[str, ...] | Path, window: tuple[int, int, int, int]) -> TileRecord:
    """A tile record as the index stores it; render() uses only its paths and window."""
    paths = (str(paths),) if isinstance(paths, Path) else paths
    return TileRecord(1, paths[0], paths, "EPSG:32632", 0, window, (0, 0, 0, 0), (0, 0, 0, 0),
                      1.0, b"")


def _encode(image: np.ndarray, size: int) -> bytes:
    """PNG bytes as the thumbnails write them (nearest resize to `size`, their zlib level)."""
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _full_read_png(path: Path, bands: list[int], window: tuple[int, int, int, int],
                   shown: list[int], size: int, stats: BandStats | None) -> bytes:
    """The thumbnail as the whole-band read made it (the implementation before issue 26):
    every selected band read in full, the window cut out (invalid past the raster's edge and
    where any selected band holds nodata), stretched, resized, encoded."""
    with rasterio.open(path) as dataset:
        whole = dataset.read(bands).astype(np.float32)
        nodata = dataset.nodata
    col, row, width, height = window
    patch = np.zeros((len(bands), height, width), np.float32)
    inside = np.zeros((height, width), bool)
    rows = slice(max(row, 0), min(row + height, whole.shape[1]))
    cols = slice(max(col, 0), min(col + width, whole.shape[2]))
    target = (slice(rows.start - row, rows.stop - row), slice(cols.start - col, cols.stop - col))
    patch[(slice(None), *target)] = whole[:, rows, cols]
    inside[target] = True
    valid = inside & (patch != nodata).all(axis=0)
    limits = None if stats is None else ([stats.low[b] for b in shown],
                                         [stats.high[b] for b in shown])
    return _encode(stretch(patch[shown], valid, limits), size)


@pytest.fixture
def reads(monkeypatch) -> list[tuple[object, object]]:
    """(window, out_shape) of every rasterio read made while the test runs."""
    seen: list[tuple[object, object]] = []
    original = rasterio.io.DatasetReader.read

    def spy(self, indexes=None, *args, **kwargs):
        assert not args, "window passed positionally: the spy would miss it"
        seen.append((kwargs.get("window"), kwargs.get("out_shape")))
        return original(self, indexes, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    return seen


def test_display_bands():
    assert display_bands(13, [3, 2, 1]) == [3, 2, 1]
    assert display_bands(3, None) == [0, 1, 2]
    assert display_bands(2, None) == [0]
    assert display_bands(3, [5, 1, 0]) == [0, 1, 2]  # out of range: ignored


def test_stretch_maps_percentiles_and_blanks_invalid_pixels():
    band = np.linspace(0, 1000, 100, dtype=np.float32).reshape(1, 10, 10)
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    out = stretch(band, valid)
    assert out.shape == (10, 10, 1) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and out[0, 1, 0] == 0
    assert 100 < out[5, 5, 0] < 160  # the middle value lands mid-range
    assert not stretch(band, np.zeros((10, 10), bool)).any()


def test_thumbnail_of_an_indexed_tile_is_rendered_once(tiny_model, rasters, tmp_path):
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    folder = IndexFolder(tmp_path / "index")
    try:
        record = folder.store.tiles([2])[2]
    finally:
        folder.close()
    model = load_model(tiny_model)
    path = thumbnail(folder.thumbnail_dir, record, model)
    image = Image.open(path)
    assert image.size == (128, 128) and image.mode == "RGB"
    pixels = np.asarray(image)
    # the tile's red band (EuroSAT band 4), stretched: same ordering of pixels as the raw data
    with open_source(SourceSpec("primary", record.paths, (4,))) as source:
        red, _ = source.read_window(record.window)
    scale = 128 // TILE
    small = pixels[::scale, ::scale, 0].astype(int)
    assert np.corrcoef(small.ravel(), red[0].ravel())[0, 1] > 0.95
    mtime = path.stat().st_mtime_ns
    assert thumbnail(folder.thumbnail_dir, record, model) == path
    assert path.stat().st_mtime_ns == mtime  # served from the cache

    (rasters / record.path.split("/")[-1]).unlink()
    path.unlink()
    with pytest.raises(BadInput, match="gone"):
        thumbnail(folder.thumbnail_dir, record, model)


def test_thumbnails_share_the_models_colour_scale(tiny_model, rasters, tmp_path):
    """A dark tile stays dark beside a bright one: every thumbnail is stretched with the
    model's per-band range, not its own percentiles."""
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    folder = IndexFolder(tmp_path / "index")
    try:
        records = list(folder.store.tiles(range(1, 1 + folder.store.db.execute(
            "SELECT COUNT(*) FROM tiles").fetchone()[0])).values())
    finally:
        folder.close()
    model = load_model(tiny_model)
    shown = list(model.config.get("rgb") or [0, 1, 2])
    lows = np.array([model.stats.low[b] for b in shown])[:, None, None]
    highs = np.array([model.stats.high[b] for b in shown])[:, None, None]
    scale = 128 // TILE
    means = []
    for record in records[:: max(1, len(records) // 6)]:
        with open_source(SourceSpec("primary", record.paths, model.primary.bands)) as source:
            raw, _ = source.read_window(record.window)
        expected = np.clip((raw[shown] - lows) / (highs - lows) * 255 + 0.5, 0, 255)
        pixels = np.asarray(Image.open(thumbnail(folder.thumbnail_dir, record, model)))
        got = pixels[::scale, ::scale].transpose(2, 0, 1).astype(float)
        assert np.abs(got - np.floor(expected)).max() <= 1
        means.append(got.mean())
    assert max(means) - min(means) > 40  # per-tile stretching would level them


def test_the_query_has_its_own_thumbnail(tiny_model, rasters, tmp_path):
    """Beside the hits, the query's picture: a stored tile's own thumbnail, or the footprint
    read from the raster (point queries), on the same colour scale."""
    from mrhash.search.searcher import Searcher
    from mrhash_contract.protocol import QueryRequest

    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    searcher = Searcher(tmp_path / "index")
    try:
        by_tile = searcher.search(QueryRequest(tile=2, k=3, thumbnails=True))
        assert by_tile["query"]["thumbnail"] == str(
            thumbnail(searcher.folder.thumbnail_dir, searcher.folder.store.tiles([2])[2],
                      searcher.model))
        record = searcher.folder.store.tiles([2])[2]
        west, south, east, north = record.bounds
        point = QueryRequest(point=((west + east) / 2, (south + north) / 2), crs=record.crs,
                      raster=record.path, k=3, thumbnails=True)
        picture = searcher.search(point)["query"]["thumbnail"]
        again = searcher.search(point)["query"]["thumbnail"]
        without = searcher.search(QueryRequest(tile=2, k=3))["query"]
    finally:
        searcher.close()
    assert picture == again and "query_" in picture  # cached by raster, place and model
    image = np.asarray(Image.open(picture)).astype(float)
    tile_image = np.asarray(Image.open(by_tile["query"]["thumbnail"])).astype(float)
    assert image.shape == tile_image.shape == (128, 128, 3)
    # the same place, read two ways (window vs footprint resampling): the same picture
    assert np.corrcoef(image.ravel(), tile_image.ravel())[0, 1] > 0.9
    assert "thumbnail" not in without


def _stats_for(bands: list[int]) -> BandStats:
    """A model's per-band range for these EuroSAT bands (1-based): about its 2-98 %."""
    low = {2: 900.0, 3: 700.0, 4: 500.0, 8: 300.0}
    high = {2: 1900.0, 3: 1600.0, 4: 1500.0, 8: 4000.0}
    return BandStats([low[b] for b in bands], [high[b] for b in bands])


@pytest.mark.parametrize("window", [
    (256, 512, 64, 64),      # inside one 256 px block
    (224, 224, 64, 64),      # across four blocks
    (400, 280, 64, 64),      # over the nodata hole: black pixels, percentiles of the rest
    (0, 0, 200, 136),        # not square, bigger than the thumbnail: nearest shrink
    (992, 1000, 64, 64),     # past the raster's corner: the outside is invalid
])
def test_a_tile_reads_its_window_alone_and_renders_the_whole_read_png(mosaics, reads, window):
    """Issue 26: the PNG is byte for byte the one of a whole-band read, and no read covers
    more than one block (the open's truncation check) or the tile's window."""
    mosaic = mosaics[0]
    # (band selection, rgb): a colour view of 4 bands in two orders, one band in grey
    views = [([4, 3, 2, 8], [0, 1, 2]), ([4, 3, 2, 8], [3, 0, 1]), ([8], None)]
    cases = [(bands, rgb, size, stats) for bands, rgb in views for size in (128, 32)
             for stats in (_stats_for(bands), None)]
    expected = [_full_read_png(mosaic, bands, window, display_bands(len(bands), rgb), size,
                               stats) for bands, rgb, size, stats in cases]
    reads.clear()  # the reference's whole reads above are not the thumbnails'
    for (bands, rgb, size, stats), want in zip(cases, expected, strict=True):
        got = render(_record(mosaic, window), tuple(bands), rgb, size, stats)
        assert got == want, (window, bands, rgb, size, stats is None)
    assert reads, "the spy saw no read"
    biggest = max(BLOCK_PX * BLOCK_PX, window[2] * window[3])
    for read_window, _ in reads:
        assert read_window is not None, "a read of the whole raster"
        assert read_window.width * read_window.height <= biggest


def test_the_window_read_renders_what_the_whole_band_read_renders_on_real_sources(
        eurosat_dir, sentinel2_dir):
    """The same bytes as the implementation before issue 26 (the engine's default cache:
    every selected band loaded whole, then the window resampled from it), on real rasters:
    a EuroSAT image (one grid) and a Sentinel-2 source of 10 m and 20 m bands (two grids:
    read through Source.read_window), windows inside and past the edge."""
    eurosat = (str(sorted(eurosat_dir.glob("Forest/*.tif"))[0]),)
    sentinel = tuple(str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B04", "B03", "B02", "B11"))
    cases = [(eurosat, (4, 3, 2), [0, 1, 2], [(0, 0, 32, 32), (16, 24, 40, 40)]),
             (eurosat, None, [3, 2, 1], [(32, 32, 32, 32), (48, 48, 32, 32)]),
             (sentinel, None, [0, 1, 2], [(640, 960, 64, 64), (1900, 1910, 64, 64)]),
             (sentinel, None, [3, 0, 1], [(128, 256, 64, 64)])]
    for paths, bands, rgb, windows in cases:
        spec = SourceSpec("primary", paths, bands)
        with open_source(spec) as source:
            count = source.count
        stats = BandStats(list(np.linspace(100, 900, count)), list(np.linspace(1500, 3500, count)))
        for window in windows:
            for size in (128, 64):
                for band_stats in (stats, None):
                    with open_source(spec) as before:  # default cache: whole bands in memory
                        array, valid = before.read_window(window)
                        shown = display_bands(before.count, rgb)
                    want = _png(array, valid, shown, size, band_stats)
                    got = render(_record(paths, window), bands, rgb, size, band_stats)
                    assert got == want, (paths[0], window, size, band_stats is None)


def test_a_window_much_bigger_than_the_thumbnail_is_read_from_the_overviews(mosaics, reads):
    """A 512 px tile shown at 64 px: decimated by GDAL from the raster's 8x overview (the PNG
    of that overview's window), not read at full resolution; without overviews the full
    resolution window gives the whole-band read's PNG."""
    plain, with_overviews = mosaics
    window, size, shown = (256, 256, 512, 512), 64, [0, 1, 2]
    stats = _stats_for([4, 3, 2])
    with rasterio.open(with_overviews, overview_level=2) as eighth:  # the 8x overview
        assert eighth.width == MOSAIC_PX // 8
        small = eighth.read([4, 3, 2], window=rasterio.windows.Window(32, 32, 64, 64))
    limits = (stats.low, stats.high)
    expected = _encode(stretch(small.astype(np.float32), (small != 0).all(axis=0), limits),
                       size)
    whole = _full_read_png(plain, [4, 3, 2], window, shown, size, stats)
    reads.clear()
    assert render(_record(with_overviews, window), (4, 3, 2), shown, size, stats) == expected
    decimated = [out_shape for _, out_shape in reads if out_shape is not None]
    assert decimated == [(3, size, size)]
    reads.clear()
    assert render(_record(plain, window), (4, 3, 2), shown, size, stats) == whole
    assert all(out_shape is None for _, out_shape in reads)
    # below OVERVIEW_FACTOR (4) times the thumbnail the overviews are left alone
    reads.clear()
    assert render(_record(with_overviews, window), (4, 3, 2), shown, 160, stats) == \
        _full_read_png(plain, [4, 3, 2], window, shown, 160, stats)
    assert all(out_shape is None for _, out_shape in reads)


def test_a_builds_pictures_from_its_encoded_patches_are_those_its_windows_read(mosaics):
    """Issue 26: a local build makes each tile's stored picture from the patch it encoded
    (no second read). On the real 13-band mosaic (nodata hole, tiles across blocks), as the
    build reads them (`tile_patches` on the source opened for the model), the pictures are
    pixel for pixel those of `tile_picture` reading each window, with the model's colour
    scale and with per-tile percentiles, for a colour and a grey view; a tile bigger than
    the model's input (its patch resampled) is left to the window read."""
    mosaic = mosaics[0]
    for bands, rgb in (((4, 3, 2, 8), [3, 0, 1]), ((8,), None)):
        spec = SourceSpec("primary", (str(mosaic),), bands)
        with open_source(spec) as source, open_for_thumbnails(spec.paths, bands) as again:
            tiles = tile_grid(source, 64, 40, 0.0)
            hole = [t for t in tiles if t.valid_fraction < 1]
            assert hole, "no tile over the nodata hole"
            chosen = hole[:8] + tiles[:24:3]
            _, patches, valid = next(tile_patches(source, chosen, 64, len(chosen)))
            windows = [t.window for t in chosen]
            for stats in (_stats_for(list(bands)), None):
                got = batch_pictures(patches, valid, windows, rgb, stats)
                assert got is not None and len(got) == len(chosen)
                for window, picture in zip(windows, got, strict=True):
                    want = tile_picture(again, window, rgb, 128, stats)
                    assert picture.mode == want.mode and picture.size == want.size
                    assert np.array_equal(np.asarray(picture), np.asarray(want)), window
            _, small, small_valid = next(tile_patches(source, chosen, 32, len(chosen)))
            assert batch_pictures(small, small_valid, windows, rgb, None) is None
