"""How the plugin names a CRS to the engine: its authority id ("EPSG:32618"), else its WKT
(the engine reads both with rasterio's CRS.from_user_input)."""

from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    return crs.authid() or crs.toWkt()
