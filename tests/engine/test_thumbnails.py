"""Thumbnails of real indexed tiles: display bands, percentile stretch, PNG cache."""

from __future__ import annotations

import numpy as np
import pytest
from mrhash.errors import BadInput
from mrhash.indexer import IndexFolder, build_index
from mrhash.package import load_model
from mrhash.sources import SourceSpec, open_source
from mrhash.thumbnails import display_bands, stretch, thumbnail
from PIL import Image
from test_index_support import TILE


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
    from mrhash.search import Searcher
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
