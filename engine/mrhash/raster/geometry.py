"""Places on the ground: the `Footprint` box in a CRS (reprojected, around a point, as GeoJSON),
points moved between CRSs, distances on the sphere, and WKT read from requests. CRS parsing and
comparison are crs.py's; everything that places a tile or a query goes through here."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio._err import CPLE_BaseError  # GDAL's errors (e.g. a failed reprojection)
from rasterio.errors import RasterioError
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from mrhash.errors import BadInput, MrHashError
from mrhash.raster.crs import parse_crs, same_crs

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Footprint:
    """An axis-aligned box in some CRS."""

    crs: str
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy in `crs`

    def __post_init__(self) -> None:
        minx, miny, maxx, maxy = (float(v) for v in self.bounds)
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise BadInput(f"footprint bounds are not finite: {self.bounds}")
        if maxx <= minx or maxy <= miny:
            raise BadInput(f"empty footprint: {self.bounds}")
        object.__setattr__(self, "bounds", (minx, miny, maxx, maxy))
        object.__setattr__(self, "crs", str(self.crs))

    @classmethod
    def around_point(cls, x: float, y: float, crs: str, size_m: float) -> Footprint:
        """A square of `size_m` metres on the ground centred on (x, y); in a geographic CRS
        the metres are converted to degrees at the point's latitude."""
        parsed = parse_crs(str(crs))
        half = size_m / 2.0
        if parsed.is_geographic:
            dlat = half / 111_320.0
            dlon = half / (111_320.0 * max(math.cos(math.radians(y)), 1e-6))
            return cls(str(crs), (x - dlon, y - dlat, x + dlon, y + dlat))
        _, factor = parsed.linear_units_factor  # metres per CRS unit (feet CRSs exist)
        half /= factor
        return cls(str(crs), (x - half, y - half, x + half, y + half))

    def to(self, crs: str) -> Footprint:
        """Bounds of this box transformed to another CRS (densified edges)."""
        if same_crs(self.crs, str(crs)):
            return Footprint(str(crs), self.bounds)
        try:
            bounds = transform_bounds(parse_crs(self.crs), parse_crs(str(crs)), *self.bounds,
                                      densify_pts=21)
        except (RasterioError, CPLE_BaseError) as error:
            raise _off_domain(self, crs, error) from None
        if not all(math.isfinite(b) for b in bounds):
            raise _off_domain(self, crs, "infinite coordinates")
        return Footprint(str(crs), tuple(bounds))

    def polygon(self) -> shapely.Polygon:
        return shapely.box(*self.bounds)

    def geometry_in(self, crs: str, densify: int = 8) -> shapely.Polygon:
        """The box's outline reprojected to `crs` (edges densified), e.g. for GeoJSON in
        EPSG:4326; unlike `to()`, not widened to an axis-aligned box."""
        return geometries_in([self], crs, densify)[0]

    def center(self) -> tuple[float, float]:
        minx, miny, maxx, maxy = self.bounds
        return (minx + maxx) / 2.0, (miny + maxy) / 2.0

    def to_dict(self) -> dict:
        return {"crs": self.crs, "bounds": list(self.bounds)}

    @classmethod
    def from_dict(cls, d: dict) -> Footprint:
        return cls(d["crs"], tuple(d["bounds"]))


def geometries_in(footprints: Sequence[Footprint], crs: str, densify: int = 8
                  ) -> list[shapely.Polygon]:
    """`Footprint.geometry_in` of many boxes, those of one CRS reprojected in one call (a
    call costs about 1 ms, its points next to nothing: a result's 12 hits at once)."""
    polygons: list[shapely.Polygon | None] = [None] * len(footprints)
    by_crs: dict[str, list[int]] = {}
    for i, footprint in enumerate(footprints):
        if same_crs(footprint.crs, str(crs)):
            polygons[i] = footprint.polygon()
        else:
            by_crs.setdefault(footprint.crs, []).append(i)
    for source_crs, members in by_crs.items():
        rings = []
        for i in members:
            minx, miny, maxx, maxy = footprints[i].bounds
            ring = shapely.segmentize(footprints[i].polygon(),
                                      max(maxx - minx, maxy - miny) / densify)
            rings.append(np.asarray(ring.exterior.coords))
        coords = np.concatenate(rings)
        try:
            tx, ty = transform_points(parse_crs(source_crs), parse_crs(str(crs)),
                                      coords[:, 0].tolist(), coords[:, 1].tolist())
        except (RasterioError, CPLE_BaseError) as error:
            raise _off_domain(footprints[members[0]], crs, error) from None
        points = np.column_stack([tx, ty])
        start = 0
        for i, ring in zip(members, rings, strict=True):
            outline, start = points[start:start + len(ring)], start + len(ring)
            if not np.isfinite(outline).all():
                raise _off_domain(footprints[i], crs, "infinite coordinates")
            # RFC 7946 wants counter-clockwise exterior rings whatever the CRS axes did
            polygons[i] = shapely.orient_polygons(shapely.Polygon(outline))
    return polygons  # type: ignore[return-value]  # every one set above


def _off_domain(footprint: Footprint, crs: str, why: object) -> BadInput:
    return BadInput(f"the box {tuple(round(b, 3) for b in footprint.bounds)} in "
                    f"{footprint.crs} has no position in {crs} (outside the projection's "
                    f"valid area: {why})")


def geojson(footprint: Footprint) -> dict:
    """The footprint's outline in EPSG:4326 as a GeoJSON geometry (RFC 7946)."""
    return geojsons([footprint])[0]


def geojsons(footprints: Sequence[Footprint]) -> list[dict]:
    """`geojson` of many footprints, reprojected together (`geometries_in`)."""
    return [json.loads(json.dumps(shapely.geometry.mapping(polygon)))  # tuples -> lists
            for polygon in geometries_in(footprints, "EPSG:4326", densify=1)]


def parse_wkt(wkt: str, what: str) -> shapely.Geometry:
    try:
        geometry = shapely.from_wkt(wkt)
    except shapely.errors.GEOSException as error:
        raise BadInput(f"{what} is not valid WKT ({error})") from None
    if geometry is None or geometry.is_empty:
        raise BadInput(f"{what} is an empty geometry")
    return geometry


def transform_point(x: float, y: float, src: str, dst: str) -> tuple[float, float]:
    """A point of CRS `src` in CRS `dst`; BadInput when it has no position there."""
    # GDAL (rasterio) only where a raster is opened: the CLI starts without it
    from rasterio.warp import transform

    try:
        xs, ys = transform(parse_crs(src), parse_crs(dst), [x], [y])
    except MrHashError:
        raise
    except Exception as error:  # PROJ errors for points outside a CRS's domain
        raise BadInput(f"cannot place point ({x}, {y}) of {src} in {dst}: {error}") from None
    if not (np.isfinite(xs[0]) and np.isfinite(ys[0])):
        raise BadInput(f"point ({x}, {y}) of {src} has no position in {dst}")
    return float(xs[0]), float(ys[0])


def haversine_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distances in metres between lon/lat points (arrays broadcast)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float))
                              for v in (lon1, lat1, lon2, lat2))
    a = (np.sin((lat2 - lat1) / 2) ** 2
         + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
