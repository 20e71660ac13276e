"""Map tool for queries: a click asks for the places most similar to the patch around the
point, a dragged rectangle for those similar to the rectangle. Works in any canvas CRS: the
point / rectangle is transformed to the CRS of the raster under it, whose patch is the query."""

from __future__ import annotations

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

    A point query reads the patch from the indexed raster containing the point; a rectangle
    (or a point on a raster outside the index, see `around`) reads `raster` itself."""

    point: tuple[float, float]
    crs: str
    raster: str | None = None
    footprint_wkt: str | None = None  # dragged rectangle, in `crs`
    pixel_size: float = 0.0           # of `raster`, in `crs` units
    lonlat: tuple[float, float] | None = None  # the point in EPSG:4326 (to find a tile)

    def params(self) -> dict:
        if self.footprint_wkt and self.raster:
            return {"raster": self.raster, "footprint": self.footprint_wkt,
                    "footprint_crs": self.crs}
        return {"point": list(self.point), "crs": self.crs}

    def around(self, size_px: int) -> QueryLocation | None:
        """The square of `size_px` raster pixels centred on the point, as a rectangle query
        on `raster` (None without a raster)."""
        if not self.raster or self.pixel_size <= 0:
            return None
        half = size_px * self.pixel_size / 2
        x, y = self.point
        box = QgsGeometry.fromRect(QgsRectangle(x - half, y - half, x + half, y + half))
        return QueryLocation(self.point, self.crs, self.raster, box.asWkt(), self.pixel_size,
                             self.lonlat)


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    return crs.authid() or crs.toWkt()


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
    source = layer.source().split("|")[0] if layer else None
    pixel = layer.rasterUnitsPerPixelX() if layer else 0.0
    lonlat = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem("EPSG:4326"),
                                    QgsProject.instance()).transform(point)
    return QueryLocation((p.x(), p.y()), crs_text(target), source, wkt, pixel,
                         (lonlat.x(), lonlat.y()))


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
