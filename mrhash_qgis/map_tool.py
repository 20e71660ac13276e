"""Map tool for queries: a click asks for the places most similar to the patch around the
point, a dragged rectangle for those similar to the rectangle. Works in any canvas CRS: the
point / rectangle is transformed to the CRS of the raster under it, whose patch is the query."""

from __future__ import annotations

import os
from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

from mrhash_qgis.contract.protocol import Place
from mrhash_qgis.core.crs import crs_text
from mrhash_qgis.core.layer_uri import layer_path

DRAG_THRESHOLD_PX = 6
# Qgis.GeometryType from QGIS 3.30 (and QGIS 4); QgsWkbTypes.GeometryType before.
POLYGON_GEOMETRY = (Qgis.GeometryType.Polygon if hasattr(Qgis, "GeometryType")
                    else QgsWkbTypes.GeometryType.PolygonGeometry)


def polygon_band(canvas: QgsMapCanvas, colour: QColor, fill_alpha: int) -> QgsRubberBand:
    band = QgsRubberBand(canvas, POLYGON_GEOMETRY)
    fill = QColor(colour)
    fill.setAlpha(fill_alpha)
    band.setFillColor(fill)
    band.setStrokeColor(colour)
    band.setWidth(2)
    return band


@dataclass(frozen=True)
class QueryLocation:
    """Where to query, in the CRS of the raster under it (of the canvas when there is none).

    A point or a rectangle reads its patch from `raster`, the raster layer under it; a point
    on no raster layer from the indexed raster containing it."""

    point: tuple[float, float]
    crs: str
    raster: str | None = None
    footprint_wkt: str | None = None  # dragged rectangle, in `crs`
    lonlat: tuple[float, float] | None = None  # the point in EPSG:4326 (to find a tile)
    layer_id: str | None = None  # the raster layer under the click (its band choices)

    def place(self) -> Place:
        """The engine's place: the rectangle on its raster, or the point (+ the raster under
        it, indexed or not, which the patch around the point is read from)."""
        if self.footprint_wkt and self.raster:
            return Place(raster=self.raster, footprint=self.footprint_wkt,
                         footprint_crs=self.crs)
        return Place(point=self.point, crs=self.crs,
                     raster=self.raster if self.raster and os.path.isfile(self.raster)
                     else None)


def raster_under(point: QgsPointXY, crs: QgsCoordinateReferenceSystem,
                 canvas: QgsMapCanvas | None = None) -> QgsRasterLayer | None:
    """The topmost visible file-backed raster layer containing `point` (canvas order)."""
    project = QgsProject.instance()
    layers = canvas.layers() if canvas is not None else list(project.mapLayers().values())
    for layer in layers:
        if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
            continue
        to_layer = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
        if layer.extent().contains(to_layer.transform(point)):
            return layer
    return None


def locate(point: QgsPointXY, crs: QgsCoordinateReferenceSystem,
           rectangle: QgsRectangle | None = None,
           canvas: QgsMapCanvas | None = None) -> QueryLocation:
    """Build the query location for a canvas point (and rectangle) given in `crs`."""
    layer = raster_under(point, crs, canvas)
    target = layer.crs() if layer else crs
    transform = QgsCoordinateTransform(crs, target, QgsProject.instance())
    p = transform.transform(point)
    wkt = None
    if rectangle is not None:
        geometry = QgsGeometry.fromRect(rectangle)
        geometry.transform(transform)
        wkt = geometry.asWkt()
    source = layer_path(layer) if layer else None
    lonlat = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem("EPSG:4326"),
                                    QgsProject.instance()).transform(point)
    return QueryLocation((p.x(), p.y()), crs_text(target), source, wkt, (lonlat.x(), lonlat.y()),
                         layer.id() if layer else None)


class QueryMapTool(QgsMapTool):
    """Click or drag on the canvas; emits `queryRequested(QueryLocation)`."""

    queryRequested = pyqtSignal(object)  # noqa: N815 (Qt signal naming)

    def __init__(self, canvas: QgsMapCanvas):
        super().__init__(canvas)
        self._press = None
        self._band = polygon_band(canvas, QColor("#00e5ff"), 60)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.pos()

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        if self._press is not None and self._dragged(event):
            self.highlight(QgsGeometry.fromRect(self._rectangle(event)),
                           self.canvas().mapSettings().destinationCrs())

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        if self._press is None or event.button() != Qt.MouseButton.LeftButton:
            return
        crs = self.canvas().mapSettings().destinationCrs()
        rectangle = self._rectangle(event) if self._dragged(event) else None
        point = rectangle.center() if rectangle else self.toMapCoordinates(event.pos())
        self._press = None
        self.queryRequested.emit(locate(point, crs, rectangle, self.canvas()))

    def _dragged(self, event: QgsMapMouseEvent) -> bool:
        delta = event.pos() - self._press
        return max(abs(delta.x()), abs(delta.y())) >= DRAG_THRESHOLD_PX

    def _rectangle(self, event: QgsMapMouseEvent) -> QgsRectangle:
        return QgsRectangle(self.toMapCoordinates(self._press), self.toMapCoordinates(event.pos()))

    def highlight(self, geometry: QgsGeometry, crs: QgsCoordinateReferenceSystem) -> None:
        """Show the query footprint (geometry in `crs`) on the canvas."""
        self._band.setToGeometry(geometry, crs)
        self._band.show()

    def clear(self) -> None:
        self._band.reset(POLYGON_GEOMETRY)

    def deactivate(self) -> None:
        self._press = None
        super().deactivate()

    def release(self) -> None:
        """Remove the rubber band from the canvas (plugin unload)."""
        self.clear()
        self.canvas().scene().removeItem(self._band)
