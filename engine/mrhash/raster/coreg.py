"""Co-registered reads: one footprint, one fixed-shape array per source (primary first).

Every source is sampled onto the same output grid (the footprint split into size_px x size_px
cells), whatever its CRS and resolution, so pixel (r, c) of every array is the same place on
the ground. A footprint that misses the primary is bad input; parts of it that an auxiliary
source does not cover are simply invalid in that source's mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrhash.errors import BadInput
from mrhash.raster.sources import Source
from mrhash.raster.tiling import Tile, point_footprint

Patch = tuple[np.ndarray, np.ndarray]  # (float32 [bands, h, w], bool [h, w] valid mask)


class MultiSourceReader:
    """Primary + auxiliary sources, all opened once by the caller (who closes them)."""

    def __init__(self, primary: Source, auxiliaries: Sequence[Source] = ()):
        self.primary = primary
        self.auxiliaries = list(auxiliaries)
        area = primary.footprint.polygon()
        for aux in self.auxiliaries:
            try:
                overlap = aux.footprint.to(primary.crs).polygon().intersects(area)
            except BadInput:
                overlap = False
            if not overlap:
                raise BadInput(f"source {aux.spec.name!r} does not overlap the primary "
                               f"{primary.path}", path=aux.path)

    @property
    def sources(self) -> list[Source]:
        return [self.primary, *self.auxiliaries]

    def read(self, footprint, size_px: int) -> list[Patch]:
        """(array, mask) per source, primary first; every array is size_px x size_px."""
        shape = (size_px, size_px)
        patches = [self.primary.read(footprint, shape)]
        patches += [aux.read(footprint, shape, allow_outside=True) for aux in self.auxiliaries]
        return patches

    def read_point(self, x: float, y: float, crs: str, size_px: int) -> list[Patch]:
        """Patches of size_px primary pixels centred on a map point in any CRS (snapped to the
        primary grid: the point's pixel is the centre pixel for an odd size)."""
        return self.read(point_footprint(self.primary, x, y, crs, size_px), size_px)

    def read_tile(self, tile: Tile) -> list[Patch]:
        """A tile of the primary (its window, read exactly) and the same place in the others."""
        _, _, width, height = tile.window
        if width != height:
            raise BadInput(f"tiles must be square, got window {tile.window}", path=tile.path)
        return self.read(tile.footprint, width)
