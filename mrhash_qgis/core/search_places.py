"""Where a search looks, read from the map: the engine's place of a click (the indexed tile
under it, or the patch around it on the raster layer under it), the selected polygons as
footprint places, and the area a search is limited to (the map extent, the selection)."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas

from mrhash_qgis.contract.index_layout import IndexReader
from mrhash_qgis.contract.protocol import Place
from mrhash_qgis.core.band_layout import remembered_bands
from mrhash_qgis.core.crs import crs_text
from mrhash_qgis.map_tool import POLYGON_GEOMETRY, QueryLocation

WGS84 = "EPSG:4326"
WITHIN_ANYWHERE, WITHIN_EXTENT, WITHIN_SELECTION = "anywhere", "extent", "selection"


def place_of_click(index: str, location: QueryLocation, snap: bool
                   ) -> tuple[Place, int | None, QgsRasterLayer | None]:
    """The engine's place of a click: the indexed tile under it (`snap`), else the patch
    around it on the raster layer under it, read with the bands the analyst chose for that
    layer. Also the indexed tile under the click, which is the query itself and never one of
    its hits, and the raster layer read (None: an indexed tile or raster)."""
    tile = (IndexReader(index).tile_at(*location.lonlat)
            if location.lonlat and not location.footprint_wkt else None)
    if snap and tile is not None:
        return Place(tile=tile), None, None
    place = location.place()
    layer = QgsProject.instance().mapLayer(location.layer_id or "")
    if place.raster and isinstance(layer, QgsRasterLayer):
        place.bands = remembered_bands(layer)
        return place, tile, layer
    return place, tile, None


def selected_footprints(layer) -> list[Place]:
    """The selected polygons of `layer` as footprint places (in the layer's CRS)."""
    if not isinstance(layer, QgsVectorLayer) or layer.geometryType() != POLYGON_GEOMETRY:
        return []
    crs = crs_text(layer.crs())
    return [Place(footprint=feature.geometry().asWkt(), footprint_crs=crs)
            for feature in layer.selectedFeatures() if not feature.geometry().isEmpty()]


def selected_area(layer) -> QgsGeometry | None:
    """Union of the selected polygons of `layer`, in EPSG:4326 (None without a selection)."""
    if not isinstance(layer, QgsVectorLayer) or layer.geometryType() != POLYGON_GEOMETRY:
        return None
    geometries = [f.geometry() for f in layer.selectedFeatures() if not f.geometry().isEmpty()]
    if not geometries:
        return None
    area = QgsGeometry.unaryUnion(geometries)
    area.transform(QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem(WGS84),
                                          QgsProject.instance()))
    return area


def search_area(choice: str, canvas: QgsMapCanvas, active_layer) -> str | None:
    """WKT (EPSG:4326) of the area a search is limited to (`choice`: one of WITHIN_*), taken
    now; None for anywhere (or a selection that is empty)."""
    if choice == WITHIN_EXTENT:
        transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(),
                                           QgsCoordinateReferenceSystem(WGS84),
                                           QgsProject.instance())
        return QgsGeometry.fromRect(transform.transformBoundingBox(canvas.extent())).asWkt()
    if choice == WITHIN_SELECTION:
        area = selected_area(active_layer)
        return area.asWkt() if area is not None else None
    return None
