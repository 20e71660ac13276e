"""CRS parsing and comparison, cached: every module that names a CRS goes through here."""

from __future__ import annotations

from functools import lru_cache

from rasterio.crs import CRS

from mrhash.errors import BadInput


@lru_cache(maxsize=64)
def parse_crs(crs: str) -> CRS:
    """CRS from anything `CRS.from_user_input` takes; cached because reads compare CRSs often."""
    try:
        return CRS.from_user_input(crs)
    except Exception as error:  # rasterio raises CRSError; anything else is equally bad input
        raise BadInput(f"invalid CRS {crs!r}: {error}") from None


@lru_cache(maxsize=256)
def same_crs(a: str, b: str) -> bool:
    """Whether two CRS strings (EPSG code, WKT, ...) name the same CRS (cached)."""
    return a == b or parse_crs(a) == parse_crs(b)


def crs_string(crs: CRS) -> str:
    """Compact, round-trippable text for a CRS ("EPSG:32618" when it has a code, else WKT)."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()
