"""Helpers for the end-to-end scripts that run INSIDE the real QGIS desktop (`qgis --code`):
the config and status file, steps scheduled on the event loop (never blocking it, as a user
would see them), screenshots, a real click through the plugin's map tool, and quitting QGIS.
The driver (qgis_desktop_driver.py) puts this folder in $MRHASH_E2E_SCRIPTS."""

import json
import os
import traceback
from pathlib import Path

from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsProject
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt, QTimer
from qgis.utils import iface, plugins

CONFIG = json.loads(Path(os.environ["MRHASH_E2E_CONFIG"]).read_text())
OUT = Path(CONFIG["screenshots"])
STATUS = Path(CONFIG["status"])
status = {"ok": False, "steps": [], "screenshots": []}
keep = {}  # widgets and layers kept alive between steps


def plugin():
    return plugins["mrhash_qgis"]


def log_step(name, **info):
    status["steps"].append({"step": name, **info})
    STATUS.write_text(json.dumps(status, indent=2))


def grab(widget, name):
    path = OUT / name
    widget.grab().save(str(path))
    status["screenshots"].append(str(path))


def grab_screen(name):
    """The whole screen, as the user sees it: dialogs, message bars and any stray window."""
    from qgis.PyQt.QtGui import QGuiApplication

    path = OUT / name
    QGuiApplication.primaryScreen().grabWindow(0).save(str(path))
    status["screenshots"].append(str(path))


def later(seconds, function):
    def run():
        try:
            function()
        except Exception:  # the status file says what broke, and QGIS still quits
            status["error"] = traceback.format_exc()
            finish()
    QTimer.singleShot(int(seconds * 1000), run)


def wait_until(predicate, then, timeout=120.0, what=""):
    deadline = [timeout]

    def poll():
        if predicate():
            then()
        elif deadline[0] <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        else:
            deadline[0] -= 0.25
            later(0.25, poll)
    later(0.25, poll)


def open_desktop(until, then, what):
    """QGIS's main window maximised as a user has it, then `then()` once `until()`."""
    window = iface.mainWindow()
    window.resize(1400, 900)
    window.showMaximized()
    log_step("plugin loaded", loaded="mrhash_qgis" in plugins)
    wait_until(until, then, 120, what)


def finish():
    STATUS.write_text(json.dumps(status, indent=2))
    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.setDirty(False)
    QTimer.singleShot(300, iface.actionExit().trigger)


def click_query(x, y, crs, then, timeout=60):
    """Click (x, y) in `crs` with the plugin's map tool, then call `then(result)` once the
    dock has the hits."""
    canvas = iface.mapCanvas()
    to_canvas = QgsCoordinateTransform(crs, canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    pixel = canvas.getCoordinateTransform().transform(to_canvas.transform(QgsPointXY(x, y)))
    pos = QPoint(round(pixel.x()), round(pixel.y()))
    tool = canvas.mapTool()
    results = []
    plugin().dock.queryFinished.connect(results.append)
    for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
        event = QgsMapMouseEvent(canvas, kind, pos, Qt.MouseButton.LeftButton,
                                 Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        (tool.canvasPressEvent if kind == QEvent.Type.MouseButtonPress
         else tool.canvasReleaseEvent)(event)
    log_step("clicked", pixel=[pos.x(), pos.y()], tool=type(tool).__name__)
    wait_until(lambda: results, lambda: then(results[0]), timeout, "the query")


def hits_step(result):
    """Log the hits of a query: count, best hit, layers in the project, thumbnails shown."""
    hits = result.hits
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    log_step("hits", n=len(hits), best_distance=hits[0].distance if hits else None,
             best_path=hits[0].path if hits else None, layers=names,
             thumbnails=len(plugin().dock.grid.hit_items()))
    status["n_hits"] = len(hits)
