"""Inside the real QGIS desktop (`qgis --code`, started by bench_desktop_click.py): the mosaic
on the map, the index chosen in the dock (from the profile's settings), then real clicks
through the plugin's map tool; for each, milliseconds from the mouse release to the result in
the dock, to the thumbnails painted (the grid's next paint) and to the hits drawn on the
canvas (its next finished render). The first click after QGIS starts, CLICKS places not seen
before (cold), the same places again (warm). Writes the figures to the config's `out` and
quits QGIS."""

import json
import os
import random
import statistics
import time
import traceback
from pathlib import Path

from qgis.core import QgsPointXY, QgsProject, QgsRasterLayer
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QObject, QPoint, Qt, QTimer
from qgis.utils import iface, plugins

CONFIG = json.loads(Path(os.environ["MRHASH_CLICK_CONFIG"]).read_text())
state = {"clicks": [], "pending": None}
keep = {}


def dock():
    return plugins["mrhash_qgis"].dock


def later(seconds, function):
    def run():
        try:
            function()
        except Exception:  # the figures file says what broke, and QGIS still quits
            finish({"error": traceback.format_exc()})
    QTimer.singleShot(int(seconds * 1000), run)


class PaintWatch(QObject):
    """Notes the time of the grid's first paint after a result arrived."""

    def eventFilter(self, watched, event):  # noqa: N802 (Qt override)
        pending = state["pending"]
        if (event.type() == QEvent.Type.Paint and pending is not None
                and "result" in pending and "painted" not in pending):
            pending["painted"] = time.perf_counter()
        return False


def start():
    window = iface.mainWindow()
    window.resize(1400, 900)
    window.showMaximized()
    wait(lambda: "mrhash_qgis" in plugins and plugins["mrhash_qgis"].client.state
         in ("ready", "failed"), engine_ready)


def wait(predicate, then, timeout=300.0):
    deadline = time.monotonic() + timeout

    def poll():
        if predicate():
            then()
        elif time.monotonic() > deadline:
            raise TimeoutError("timed out")
        else:
            later(0.05, poll)
    later(0.05, poll)


def engine_ready():
    if plugins["mrhash_qgis"].client.state != "ready":
        raise RuntimeError("the engine did not start")
    layer = QgsRasterLayer(CONFIG["raster"], "mosaic")
    QgsProject.instance().addMapLayer(layer)
    keep["layer"] = layer
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    canvas.refresh()
    the_dock = dock()
    the_dock.show()
    if the_dock.index_widget.filePath() != CONFIG["index"]:
        the_dock.index_widget.setFilePath(CONFIG["index"])
    keep["watch"] = PaintWatch()
    the_dock.grid.viewport().installEventFilter(keep["watch"])
    the_dock.queryFinished.connect(got_result)
    canvas.mapCanvasRefreshed.connect(canvas_drawn)
    extent = layer.extent()
    rng = random.Random(0)
    size = extent.width() / 4096 * 64  # a tile, in map units
    places = [QgsPointXY(extent.xMinimum() + (rng.randrange(60) + 1.5) * size,
                         extent.yMinimum() + (rng.randrange(60) + 1.5) * size)
              for _ in range(CONFIG["clicks"] + 1)]
    keep["plan"] = ([("first", places[0])] + [("cold", p) for p in places[1:]]
                    + [("warm", p) for p in places[1:]])
    if not the_dock.query_button.isChecked():
        the_dock.query_button.click()  # the map tool on, as the analyst does
    later(3.0, next_click)  # the canvas drawn once, the dock settled


def click(point):
    canvas = iface.mapCanvas()
    pixel = canvas.getCoordinateTransform().transform(point)
    pos = QPoint(round(pixel.x()), round(pixel.y()))
    tool = canvas.mapTool()
    for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
        event = QgsMapMouseEvent(canvas, kind, pos, Qt.MouseButton.LeftButton,
                                 Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        if kind == QEvent.Type.MouseButtonRelease:
            state["pending"]["released"] = time.perf_counter()
            tool.canvasReleaseEvent(event)
        else:
            tool.canvasPressEvent(event)


def next_click():
    plan = keep["plan"]
    if not plan:
        report()
        return
    kind, point = plan.pop(0)
    pending = state["pending"] = {"kind": kind}
    click(point)
    # a canvas with nothing new to draw never says so: 5 s after the click, go on without
    later(5.0, lambda: pending.setdefault("late", True))
    wait(lambda: {"painted", "drawn"} <= set(pending) or pending.get("late"), clicked, 60)


def got_result(result):
    pending = state["pending"]
    if pending is not None and "result" not in pending:
        pending["result"] = time.perf_counter()
        pending["hits"] = len(result.hits)
        pending["seconds_engine"] = result.seconds


def canvas_drawn():
    pending = state["pending"]
    if pending is not None and "result" in pending and "drawn" not in pending:
        pending["drawn"] = time.perf_counter()


def clicked():
    pending = state["pending"]
    released = pending["released"]
    state["clicks"].append({
        "kind": pending["kind"], "hits": pending.get("hits"),
        "engine_ms": round(1000 * (pending.get("seconds_engine") or 0), 1),
        **{f"{name}_ms": round(1000 * (pending[name] - released), 1)
           for name in ("result", "painted", "drawn") if name in pending}})
    state["pending"] = None
    later(0.5, next_click)  # an analyst's pause between clicks


def report():
    summary = {}
    for kind in ("first", "cold", "warm"):
        clicks = [c for c in state["clicks"] if c["kind"] == kind]
        summary[kind] = {name: {"p50": round(statistics.median(values), 1),
                                "p95": round(sorted(values)[int(0.95 * (len(values) - 1))], 1)}
                         for name in ("result_ms", "painted_ms", "drawn_ms", "engine_ms")
                         if (values := [c[name] for c in clicks if name in c])}
    finish({"summary": summary, "clicks": state["clicks"]})


def finish(figures):
    Path(CONFIG["out"]).write_text(json.dumps(figures, indent=2))
    project = QgsProject.instance()
    project.removeAllMapLayers()
    keep.clear()
    project.setDirty(False)
    QTimer.singleShot(300, iface.actionExit().trigger)


later(1.0, start)
