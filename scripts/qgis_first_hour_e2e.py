"""The analyst's first hour INSIDE the real QGIS desktop (`qgis --code`, started by
qgis_desktop_driver.py --first-hour): from "Engine ready", with nothing chosen in the dock,
(1) click *Start with my imagery…*, (2) type the folder of real 13-band Sentinel-2 GeoTIFFs,
(3) click *Start*, (4) click the map: the hits and thumbnails. Every action is a real click or
keystrokes on the real widgets; the actions are counted, the whole screen is grabbed at each
step and the windows QGIS shows besides its main window are listed (a stray window is a
defect). Writes status.json and quits QGIS."""

import os
import sys

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

sys.path.insert(0, os.environ["MRHASH_E2E_SCRIPTS"])
import qgis_e2e_steps as e2e  # noqa: E402

actions = []  # what the analyst did, in order


def act(what):
    actions.append(what)


def other_windows():
    """Visible top-level windows besides QGIS's main window and the plugin's own dialog."""
    shown = [w for w in QApplication.topLevelWidgets() if w.isVisible()
             and w is not iface.mainWindow() and w is not e2e.keep.get("dialog")
             and w.windowType() not in (Qt.WindowType.ToolTip, Qt.WindowType.Popup)]
    return [f"{type(w).__name__} {w.width()}x{w.height()} at {w.x()},{w.y()}" for w in shown]


def start():
    e2e.open_desktop(lambda: e2e.plugin().client.state in ("ready", "failed"), engine_ready,
                     "the engine")


def engine_ready():
    client = e2e.plugin().client
    dock = e2e.plugin().dock
    e2e.log_step("engine", state=client.state, error=client.last_error,
             start_visible=dock.start_button.isVisible(),
             start_bold=dock.start_button.font().bold())
    if client.state != "ready":
        raise RuntimeError(f"engine failed: {client.last_error}")
    dock.show()
    e2e.later(1.0, click_start_button)


def click_start_button():
    e2e.grab_screen("first_hour_1_engine_ready.png")
    QTest.mouseClick(e2e.plugin().dock.start_button, Qt.MouseButton.LeftButton)
    act("Start with my imagery…")
    e2e.later(1.0, type_folder)


def type_folder():
    dialog = e2e.plugin().dialogs[-1]
    e2e.keep["dialog"] = dialog
    line = dialog.folder_widget.lineEdit()
    line.setFocus()
    line.selectAll()
    QTest.keyClicks(line, e2e.CONFIG["archive13"])  # keystroke by keystroke
    act("type the folder")
    e2e.wait_until(lambda: dialog.start_button.isEnabled(), proposal_shown, 60, "the proposal")


def proposal_shown():
    dialog = e2e.keep["dialog"]
    e2e.log_step("proposal", text=dialog.plan_label.text(), windows=other_windows())
    e2e.later(0.5, lambda: (e2e.grab_screen("first_hour_2_proposal.png"),
                            press_start()))


def press_start():
    dialog = e2e.keep["dialog"]
    dialog.minutes_spin.setValue(1)  # a short learning for the check (the default is 5 min)
    QTest.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    act("Start")
    seen = []
    dialog.chain.stepped.connect(lambda fraction, text: seen.append((fraction, text)))
    e2e.keep["steps"] = seen
    e2e.wait_until(lambda: any("left" in text for _, text in seen), progress_shown, 120,
               "a remaining time")


def progress_shown():
    e2e.grab_screen("first_hour_3_learning.png")
    dock = e2e.plugin().dock
    e2e.wait_until(lambda: "click the map" in dock.status_label.text(), ready_to_click, 600,
               "the guided start")


def ready_to_click():
    dock = e2e.plugin().dock
    e2e.log_step("built", model=dock.model_widget.filePath(),
                 index=dock.index_widget.filePath(), index_label=dock.index_label.text(),
                 status=dock.status_label.text(),
                 tool=type(iface.mapCanvas().mapTool()).__name__, windows=other_windows(),
                 messages=[text for _, text in e2e.keep["steps"]][-3:])
    e2e.later(1.5, click_map)


def click_map():
    e2e.grab_screen("first_hour_4_ready_to_click.png")
    from qgis.core import QgsProject, QgsRasterLayer

    # the imagery the guided start put on the map, zoomed to: click its middle
    [raster] = [layer for layer in QgsProject.instance().mapLayers().values()
                if isinstance(layer, QgsRasterLayer)]
    centre = raster.extent().center()
    act("click the map")
    e2e.click_query(centre.x(), centre.y(), raster.crs(), got_hits)


def got_hits(result):
    dock = e2e.plugin().dock
    hits = result["hits"]
    e2e.log_step("first hits", actions=len(actions), what=actions, n=len(hits),
             thumbnails=len(dock.grid.hit_items()), status=dock.status_label.text(),
             windows=other_windows())
    e2e.later(2.0, lambda: (e2e.grab_screen("first_hour_5_first_hits.png"),
                            done()))


def done():
    steps = {step["step"]: step for step in e2e.status["steps"]}
    e2e.status["ok"] = steps["first hits"]["n"] > 0 and steps["first hits"]["windows"] == []
    e2e.finish()


e2e.OUT.mkdir(parents=True, exist_ok=True)
e2e.later(1.0, start)
