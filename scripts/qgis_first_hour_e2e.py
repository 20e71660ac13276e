"""The analyst's first hour INSIDE the real QGIS desktop (`qgis --code`, started by
qgis_desktop_driver.py --first-hour): from "Engine ready", with nothing chosen in the dock,
(1) click *Start with my imagery…*, (2) type the folder of real 13-band Sentinel-2 GeoTIFFs,
(3) click *Start*, (4) click the map: the hits and thumbnails. Then the map of every place like
them: hits marked ✓ / ✗ with the buttons, *Map all like these*, the confidence slider moved
with the keyboard, *Check detections* (most doubtful first) and one marked ✗, *Update the
map*, the map exported (GeoPackage and GeoParquet), the project saved and reopened. Every
action is a real click or keystrokes on the real widgets; the actions are counted, the whole
screen is grabbed at each step and the windows QGIS shows besides its main window are listed
(a stray window is a defect). Writes status.json and quits QGIS."""

import os
import sys

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

from mrhash_qgis.contract.protocol import Place

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
    hits = result.hits
    e2e.log_step("first hits", actions=len(actions), what=actions, n=len(hits),
             thumbnails=len(dock.grid.hit_items()), status=dock.status_label.text(),
             windows=other_windows())
    e2e.later(2.0, lambda: (e2e.grab_screen("first_hour_5_first_hits.png"),
                            mark_hits()))


def click_thumbnail(row):
    """A real click on the thumbnail at `row` of the grid (selecting it alone), scrolled to
    as the analyst would."""
    grid = e2e.plugin().dock.grid
    item = grid.hit_items()[row]
    grid.scrollToItem(item)
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, grid.visualItemRect(item).center())


def mark(row, button):
    click_thumbnail(row)
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def mark_hits():
    """The first two hits ✓ and the last ✗, with the buttons, then Map all like these."""
    results = e2e.plugin().dock.results
    for row, button in ((0, results.relevant_button), (1, results.relevant_button),
                        (-1, results.irrelevant_button)):
        mark(row, button)
    panel = e2e.plugin().dock.map_panel
    QTest.mouseClick(panel.map_button, Qt.MouseButton.LeftButton)
    e2e.wait_until(lambda: panel.detections is not None, mapped, 180, "the map")


def mapped():
    dock = e2e.plugin().dock
    panel = dock.map_panel
    e2e.log_step("map", status=dock.status_label.text(), counts=panel.count_label.text(),
                 relevant=dock.search.n_relevant, irrelevant=dock.search.n_irrelevant,
                 all_in_view=iface.mapCanvas().extent().contains(
                     panel.detections.extent()),
                 windows=other_windows())
    panel.slider.setFocus()
    for _ in range(2):  # 0.50 -> 0.70 with the keyboard, as a drag would
        QTest.keyClick(panel.slider, Qt.Key.Key_PageUp)
    e2e.keep["counts"] = panel.count_label.text()
    e2e.later(1.5, check_detections)


def check_detections():
    e2e.grab_screen("map_1_detections.png")
    dock = e2e.plugin().dock
    QTest.mouseClick(dock.map_panel.check_button, Qt.MouseButton.LeftButton)
    e2e.wait_until(lambda: "most doubtful first" in dock.status_label.text(), checked, 60,
                   "the detections to check")


def checked():
    dock = e2e.plugin().dock
    shown = [item.data(Qt.ItemDataRole.UserRole) for item in dock.grid.hit_items()]
    mark(0, dock.results.irrelevant_button)
    e2e.log_step("checked", counts=e2e.keep["counts"], shown=len(shown),
                 irrelevant=dock.search.n_irrelevant,
                 marked=dock.search.mark_of(Place(tile=shown[0].id)),
                 scores=[h.score for h in shown], status=dock.status_label.text(),
                 windows=other_windows())
    e2e.later(1.5, update_map)


def update_map():
    e2e.grab_screen("map_2_checked.png")
    dock = e2e.plugin().dock
    rounds = len(dock.search.maps)
    QTest.mouseClick(dock.map_panel.map_button, Qt.MouseButton.LeftButton)
    e2e.wait_until(lambda: len(dock.search.maps) > rounds, updated, 180, "the updated map")


def updated():
    dock = e2e.plugin().dock
    e2e.log_step("updated", rounds=len(dock.search.maps), counts=dock.map_panel.count_label
                 .text(), status=dock.status_label.text(), windows=other_windows())
    work = e2e.STATUS.parent
    dock.export_map(str(work / "greenhouses.gpkg"))  # the file dialog's answer
    e2e.keep["parquet"] = dock.export_map(str(work / "greenhouses.parquet"))
    e2e.wait_until(lambda: (work / "greenhouses_areas.parquet").exists(), exported, 60,
                   "the GeoParquet export")


def exported():
    e2e.later(1.0, lambda: (e2e.grab_screen("map_3_updated_exported.png"), reopen()))


def reopen():
    from qgis.core import QgsProject

    work = e2e.STATUS.parent
    files = sorted(p.name for p in work.glob("greenhouses*"))
    project = QgsProject.instance()
    project.write(str(work / "mapped.qgz"))
    project.clear()
    project.read(str(work / "mapped.qgz"))
    dock = e2e.plugin().dock
    e2e.log_step("reopened", files=files, has_map=dock.map_panel.detections is not None,
                 counts=dock.map_panel.count_label.text(), windows=other_windows())
    e2e.later(2.0, lambda: (e2e.grab_screen("map_4_reopened.png"), done()))


def done():
    steps = {step["step"]: step for step in e2e.status["steps"]}
    e2e.status["ok"] = (steps["first hits"]["n"] > 0 and steps["first hits"]["windows"] == []
                        and steps["reopened"]["has_map"])
    e2e.finish()


e2e.OUT.mkdir(parents=True, exist_ok=True)
e2e.later(1.0, start)
