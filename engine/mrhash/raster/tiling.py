"""Tile grid over a primary source: fixed-size square windows every `stride` pixels, kept when
enough of their pixels hold valid data (not nodata in any selected band). Only whole tiles are
made: a remainder narrower than the tile size at the right/bottom edge is not covered."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.warp import transform as transform_points

from mrhash.errors import BadInput
from mrhash.raster.crs import parse_crs, same_crs
from mrhash.raster.geometry import Footprint
from mrhash.raster.sources import Source

# rows of the source grid read at once while computing valid fractions (bounds memory)
_STRIP_ROWS = 2048


@dataclass(frozen=True)
class Tile:
    path: str                          # the primary raster (first path of the primary spec)
    window: tuple[int, int, int, int]  # col_off, row_off, width, height (primary pixels)
    footprint: Footprint               # native CRS of the primary
    valid_fraction: float

    def to_dict(self) -> dict:
        return {"path": self.path, "window": list(self.window),
                "footprint": self.footprint.to_dict(), "valid_fraction": self.valid_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> Tile:
        return cls(d["path"], tuple(d["window"]), Footprint.from_dict(d["footprint"]),
                   float(d["valid_fraction"]))


def window_footprint(source: Source, window: tuple[int, int, int, int]) -> Footprint:
    """Native-CRS box of a (col_off, row_off, width, height) window of the source grid."""
    col, row, width, height = window
    x0, y0 = source.transform @ (col, row)
    x1, y1 = source.transform @ (col + width, row + height)
    return Footprint(source.crs, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))


def point_footprint(source: Source, x: float, y: float, crs: str, size_px: int,
                    snap: bool = True) -> Footprint:
    """Box of size_px x size_px source pixels centred on a map point given in any CRS. With
    `snap` the box sits on the source's pixel grid (its centre moves by at most half a pixel;
    for an odd size the point's pixel is the centre pixel), so the source is read without
    resampling."""
    if not same_crs(str(crs), source.crs):
        (x,), (y,) = transform_points(parse_crs(str(crs)), parse_crs(source.crs), [x], [y])
    if not snap:
        half_x, half_y = size_px * source.res[0] / 2, size_px * source.res[1] / 2
        return Footprint(source.crs, (x - half_x, y - half_y, x + half_x, y + half_y))
    col, row = ~source.transform @ (x, y)
    # floor(v + 0.5): nearest grid line, ties up (round() would round half to even)
    window = (math.floor(col - size_px / 2 + 0.5), math.floor(row - size_px / 2 + 0.5),
              size_px, size_px)
    return window_footprint(source, window)


def tile_grid(source: Source, tile_size: int, stride: int | None = None,
              min_valid: float = 0.5) -> list[Tile]:
    """Tiles of `tile_size` px every `stride` px (default: tile_size) whose valid-data fraction
    is at least `min_valid`. Raises BadInput when the raster is smaller than one tile or holds
    no valid data at all."""
    stride = stride or tile_size
    if tile_size < 1 or stride < 1:
        raise BadInput(f"tile size and stride must be positive, got {tile_size} and {stride}")
    if not 0.0 <= min_valid <= 1.0:
        raise BadInput(f"min_valid must be within [0, 1], got {min_valid}")
    if source.width < tile_size or source.height < tile_size:
        raise BadInput(f"raster ({source.width}x{source.height} px) is smaller than one "
                       f"{tile_size} px tile", path=source.path)
    col_offsets = range(0, source.width - tile_size + 1, stride)
    row_offsets = list(range(0, source.height - tile_size + 1, stride))
    area = float(tile_size * tile_size)
    tiles: list[Tile] = []
    any_valid = False
    # strips of whole tile rows so each tile's pixels are read once per strip
    rows_per_strip = max(1, (_STRIP_ROWS - tile_size) // stride + 1)
    for start in range(0, len(row_offsets), rows_per_strip):
        strip_rows = row_offsets[start:start + rows_per_strip]
        top = strip_rows[0]
        height = strip_rows[-1] + tile_size - top
        valid = source.valid_mask((0, top, source.width, height))
        any_valid |= bool(valid.any())
        # summed-area table: valid count of any window in O(1)
        table = np.zeros((height + 1, source.width + 1), dtype=np.int64)
        table[1:, 1:] = valid.cumsum(0).cumsum(1)
        for row in strip_rows:
            r0, r1 = row - top, row - top + tile_size
            for col in col_offsets:
                count = (table[r1, col + tile_size] - table[r0, col + tile_size]
                         - table[r1, col] + table[r0, col])
                fraction = count / area
                if fraction >= min_valid and count > 0:
                    window = (col, row, tile_size, tile_size)
                    tiles.append(Tile(source.path, window, window_footprint(source, window),
                                      round(float(fraction), 6)))
    if not any_valid:
        if source.beyond_float32():
            raise BadInput("values beyond the float32 range (the engine computes in float32): "
                           "rescale the raster", path=source.path)
        raise BadInput("raster holds no valid data (all pixels are nodata)", path=source.path)
    return tiles
