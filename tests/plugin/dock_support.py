"""Driving the dock as a user does: a real canvas in another CRS than the rasters, the real
map tool, clicks turned into mouse events."""

from __future__ import annotations

from conftest import wait_for
from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt


def mouse(canvas, kind, pixel: QPoint) -> QgsMapMouseEvent:
    return QgsMapMouseEvent(canvas, kind, pixel, Qt.MouseButton.LeftButton,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)


def pixel_of(canvas, point_32618: QgsPointXY) -> QPoint:
    to_canvas = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32618"),
                                       canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    pixel = canvas.getCoordinateTransform().transform(to_canvas.transform(point_32618))
    return QPoint(round(pixel.x()), round(pixel.y()))


def dock_on_canvas(qgis_iface, built_index, rgb_layer):
    from mrhash_qgis.core.engine_client import shared_client
    from mrhash_qgis.map_tool import QueryMapTool
    from mrhash_qgis.ui.dock import MrHashDock

    canvas = qgis_iface.mapCanvas()
    window = canvas.window()  # a hidden canvas never gets the resize that sets its output size
    window.resize(600, 600)
    canvas.resize(600, 600)
    window.show()
    wait_for(lambda: canvas.mapSettings().outputSize().width() > 500, 10, "the canvas size")
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))  # not the raster's
    canvas.setLayers([rgb_layer])
    extent = QgsCoordinateTransform(rgb_layer.crs(), canvas.mapSettings().destinationCrs(),
                                    QgsProject.instance()).transformBoundingBox(rgb_layer.extent())
    canvas.setExtent(extent)
    tool = QueryMapTool(canvas)
    dock = MrHashDock(qgis_iface, shared_client(), tool)
    dock.index_widget.setFilePath(built_index.index_widget.filePath())
    dock.k_spin.setValue(5)
    dock.snap_check.setChecked(False)
    tool.queryRequested.connect(dock.run_query)
    return canvas, tool, dock


def click(canvas, tool, point_32618: QgsPointXY) -> None:
    pixel = pixel_of(canvas, point_32618)
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel))
