"""Resampling a raster onto an output grid: where each output pixel centre falls in a file's
pixel grid, and the pixel values around it.

`pixel_coords` maps output pixel centres to fractional source pixel coordinates: exactly (an
affine map) when the footprint is in the file's CRS, otherwise by exactly transforming a coarse
lattice of points (one every `LATTICE_STEP` output pixels) and interpolating bilinearly
between them, which is accurate to far below a pixel. `take` and `neighbours` gather the
values at integer pixels (slices when the coordinates allow, one flat gather otherwise), with
the mask of those inside the array. The weighting and the nodata rules are the source's
(sources.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.warp import transform as transform_points

from mrhash.errors import BadInput
from mrhash.raster.crs import parse_crs, same_crs

if TYPE_CHECKING:
    from mrhash.raster.geometry import Footprint

# Exactly transformed points every this many output pixels for reads across CRSs.
LATTICE_STEP = 32


def mask_and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """AND of two optional masks (None = all True)."""
    if a is None:
        return b
    return a if b is None else a & b


def separable_inside(data: np.ndarray, r0: np.ndarray, c0: np.ndarray) -> bool:
    """Whether coords are separable ([h, 1] rows, [1, w] cols) with every bilinear
    neighbour (r0|r0+1, c0|c0+1) inside `data`."""
    return (r0.shape[1] == 1 and c0.shape[0] == 1 and r0.min() >= 0 and c0.min() >= 0
            and r0.max() + 1 < data.shape[1] and c0.max() + 1 < data.shape[2])


def neighbours(data: np.ndarray, r0: np.ndarray, c0: np.ndarray,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Values at the four bilinear neighbours (r0|r0+1, c0|c0+1) as float32
    [bands, 4, h, w] and their inside-`data` mask [4, h, w] (None when all are inside). When the
    whole neighbourhood of a non-separable grid is inside, one flat-index gather does it."""
    height, width = data.shape[1], data.shape[2]
    if (r0.shape == shape and c0.shape == shape and r0.min() >= 0 and c0.min() >= 0
            and r0.max() + 1 < height and c0.max() + 1 < width):
        flat = (r0 * width + c0)[None] + np.array([0, 1, width, width + 1])[:, None, None]
        base = data.reshape(data.shape[0], -1)
        return np.take(base, flat, axis=1).astype(np.float32), None
    taken = [take(data, r0 + dr, c0 + dc, shape) for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1))]
    values = np.stack([v for v, _ in taken], axis=1)
    if all(inside is None for _, inside in taken):
        return values, None
    return values, np.stack([np.ones(shape, bool) if inside is None else inside
                             for _, inside in taken])


def take(data: np.ndarray, rows: np.ndarray, cols: np.ndarray,
          shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 [bands, h, w] values at integer pixel rows/cols (broadcasting to `shape`) and
    the mask of those inside `data` (None when all are). Separable coords ([h, 1] rows, [1, w]
    cols) become a slice when they are consecutive, else an outer-product gather."""
    height, width = data.shape[1], data.shape[2]
    in_r = (rows >= 0) & (rows < height)
    in_c = (cols >= 0) & (cols < width)
    all_inside = bool(in_r.all() and in_c.all())
    if rows.shape[1] == 1 and cols.shape[0] == 1:
        r, c = rows[:, 0], cols[0]
        r0, c0 = int(r[0]), int(c[0])
        if (all_inside and np.array_equal(r, np.arange(r0, r0 + len(r)))
                and np.array_equal(c, np.arange(c0, c0 + len(c)))):
            values = data[:, r0:r0 + len(r), c0:c0 + len(c)]
        else:
            values = data[:, np.clip(r, 0, height - 1)[:, None], np.clip(c, 0, width - 1)]
    else:
        flat = (np.clip(rows, 0, height - 1) * width + np.clip(cols, 0, width - 1))
        values = np.take(data.reshape(data.shape[0], -1), np.broadcast_to(flat, shape), axis=1)
    inside = None if all_inside else np.broadcast_to(in_r & in_c, shape)
    return values.astype(np.float32), inside


def pixel_coords(footprint: Footprint, shape: tuple[int, int], crs: str,
                 transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (cols, rows) in a file's pixel grid of every output pixel centre, as arrays
    broadcasting to `shape` ([1, w] and [h, 1] when the mapping is separable)."""
    height, width = shape
    minx, miny, maxx, maxy = footprint.bounds
    dx, dy = (maxx - minx) / width, (maxy - miny) / height
    inverse = ~transform
    if same_crs(footprint.crs, crs):
        # output pixel (r, c) centre -> world -> source pixel: one affine map
        m = inverse @ Affine(dx, 0, minx + dx / 2, 0, -dy, maxy - dy / 2)
        cc = np.arange(width, dtype=np.float64)[None, :]
        rr = np.arange(height, dtype=np.float64)[:, None]
        if m.b == 0 and m.d == 0:
            return m.a * cc + m.c, m.e * rr + m.f
        return m.a * cc + m.b * rr + m.c, m.d * cc + m.e * rr + m.f
    # exact transform on a coarse lattice of output pixel centres, bilinear in between
    lattice_r, weights_r = lattice_weights(height)
    lattice_c, weights_c = lattice_weights(width)
    gx = np.broadcast_to(minx + (lattice_c[None, :] + 0.5) * dx, (len(lattice_r), len(lattice_c)))
    gy = np.broadcast_to(maxy - (lattice_r[:, None] + 0.5) * dy, gx.shape)
    try:
        xs, ys = transform_points(parse_crs(footprint.crs), parse_crs(crs),
                                  gx.ravel().tolist(), gy.ravel().tolist())
    except Exception as error:  # PROJ failures (points outside a projection's domain)
        raise BadInput(f"cannot transform footprint from {footprint.crs} to {crs}: "
                       f"{error}") from None
    xs = np.asarray(xs).reshape(gx.shape)
    ys = np.asarray(ys).reshape(gx.shape)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise BadInput(f"footprint {footprint.bounds} ({footprint.crs}) has no valid "
                       f"position in {crs}")
    lattice_cols = inverse.a * xs + inverse.b * ys + inverse.c
    lattice_rows = inverse.d * xs + inverse.e * ys + inverse.f
    return (weights_r @ lattice_cols @ weights_c.T, weights_r @ lattice_rows @ weights_c.T)


@lru_cache(maxsize=32)
def lattice_weights(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice node positions (every LATTICE_STEP px, first and last pixel included) and the
    [size, nodes] linear-interpolation weights from them to every pixel (read-only arrays);
    bilinear interpolation of node values = W_r @ values @ W_c.T."""
    nodes = max(2, math.ceil((size - 1) / LATTICE_STEP) + 1)
    positions = np.linspace(0, size - 1, nodes)
    pixels = np.arange(size)
    left = np.clip(np.searchsorted(positions, pixels, side="right") - 1, 0, nodes - 2)
    t = (pixels - positions[left]) / (positions[left + 1] - positions[left])
    weights = np.zeros((size, nodes))
    weights[pixels, left] = 1 - t
    weights[pixels, left + 1] += t
    weights.flags.writeable = False
    positions.flags.writeable = False
    return positions, weights
