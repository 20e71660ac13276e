"""How a build reads its rasters (index/encode.open_for_build, issue 26): tile by tile from files
tiled in small blocks, whole bands in memory where the files are striped wider than
WINDOWED_BLOCK_PX or can hold invalid pixels; the same patches either way, on real EuroSAT
images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from mrhash.index.encode import WINDOWED_BLOCK_PX, open_for_build, tile_patches
from mrhash.model.package import load_model
from mrhash.raster.sources import SourceSpec, open_source
from mrhash.raster.tiling import tile_grid
from rasterio.transform import Affine

COLUMNS = 17  # 17 images of 64 px side by side: 1088 px, a strip wider than WINDOWED_BLOCK_PX


@pytest.fixture(scope="module")
def images(eurosat_dir) -> np.ndarray:
    """13-band uint16 [13, 128, 1088]: two rows of real EuroSAT images."""
    files = sorted(eurosat_dir.glob("*/*.tif"))
    tiles = [rasterio.open(f).read() for f in files[:2 * COLUMNS]]
    return np.concatenate([np.concatenate(tiles[row * COLUMNS:(row + 1) * COLUMNS], axis=2)
                           for row in range(2)], axis=1)


def _write(path: Path, data: np.ndarray, **layout) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:32632",
                       transform=Affine(10, 0, 500000, 0, -10, 5600000), compress="deflate",
                       **layout) as out:
        out.write(data)
    return path


@pytest.mark.parametrize(("layout", "windowed"), [
    ({"tiled": True, "blockxsize": 256, "blockysize": 256}, True),
    ({"tiled": True, "blockxsize": 256, "blockysize": 256, "nodata": 0}, False),
    ({"tiled": False}, False),  # strips as wide as the file
])
def test_a_build_reads_as_its_files_are_laid_out_and_gets_the_same_patches(
        images, tiny_model, tmp_path, layout, windowed):
    path = _write(tmp_path / "mosaic.tif", images, **layout)
    with rasterio.open(path) as dataset:
        assert (max(dataset.block_shapes[0]) <= WINDOWED_BLOCK_PX) == layout["tiled"]
    spec = SourceSpec("primary", (str(path),), (4, 3, 2))
    model = load_model(tiny_model)
    with open_for_build(spec, model) as source, open_source(spec) as whole:
        tiles = tile_grid(source, 64, 40, 0.5)
        assert len(tiles) == 2 * 26
        # the tiles' own pixels, and resampled to a smaller input
        got = [b for side in (64, 32) for b in tile_patches(source, tiles, side, 16)]
        assert all(band_file.data is None for band_file in source.files) == windowed
        want = [b for side in (64, 32) for b in tile_patches(whole, tiles, side, 16)]
        assert all(band_file.data is not None for band_file in whole.files)
    assert len(got) == len(want) == 8
    for (start, patches, valid), (start_w, patches_w, valid_w) in zip(got, want, strict=True):
        assert start == start_w
        assert np.array_equal(patches, patches_w) and np.array_equal(valid, valid_w)
