"""End to end INSIDE the real QGIS desktop, as a new user meets the plugin: installed from its
zip into a fresh profile, no checkout and no engine anywhere. The dock says the engine is not
set up; the user presses Set up the engine; the private environment is built from the package
index (progress in the dock and in Settings); the dock says "Engine ready · cpu"; a click
query returns hits with thumbnails; Test engine and the diagnostics report work.
Started by `qgis_desktop_driver.py --from-zip`; screenshots of each step go to docs/img."""

import os
import sys

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

sys.path.insert(0, os.environ["MRHASH_E2E_SCRIPTS"])
from qgis_e2e_steps import (  # noqa: E402
    CONFIG,
    OUT,
    click_query,
    finish,
    grab,
    hits_step,
    keep,
    later,
    log_step,
    open_desktop,
    plugin,
    status,
    wait_until,
)


def start():
    open_desktop(lambda: not plugin().dock.setup_button.isHidden(), not_set_up,
                 "the dock to offer the set-up")


def not_set_up():
    dock = plugin().dock
    log_step("before set-up", state=plugin().client.state, fix=plugin().client.fix,
             label=dock.engine_label.text(), button=dock.setup_button.text())
    later(1.0, lambda: (grab(dock, "setup_1_not_set_up.png"), press_set_up()))


def press_set_up():
    plugin().dock.setup_button.click()
    log_step("set-up pressed", running=plugin().setup.running)
    wait_until(lambda: plugin().dock.setup_progress.value() >= 20, during_set_up, 600,
               "the set-up to get going")


def during_set_up():
    grab(plugin().dock, "setup_2_progress_dock.png")
    from mrhash_qgis.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(plugin().client, plugin().setup, iface.mainWindow())
    keep["settings"] = dialog
    dialog.show()
    later(4.0, lambda: (grab(dialog, "setup_3_progress_settings.png"), dialog.close()))
    wait_until(lambda: not plugin().setup.running, after_set_up, 1200, "the set-up")


def after_set_up():
    wait_until(lambda: plugin().dock.engine_label.text().startswith("Engine ready"), ready, 300,
               "the engine in the dock")


def ready():
    dock = plugin().dock
    log_step("engine", state=plugin().client.state, label=dock.engine_label.text(),
             info=plugin().client.info, setup_message=plugin().setup.last_message)
    scene = QgsRasterLayer(CONFIG["scene"], "Sentinel-2 scene (RGB)")
    QgsProject.instance().addMapLayer(scene)
    keep["scene"] = scene
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(scene.crs())
    canvas.setExtent(QgsRectangle(scene.extent()))
    dock.index_widget.setFilePath(CONFIG["index"])
    dock.model_widget.setFilePath(CONFIG["model"])
    dock.k_spin.setValue(8)
    plugin().toggle_query_tool(True)
    x, y = CONFIG["point"]
    later(2.0, lambda: click_query(x, y, scene.crs(), got_hits))


def got_hits(result):
    hits_step(result)
    later(3.0, screenshots)


def screenshots():
    grab(iface.mainWindow(), "setup_4_first_query.png")
    grab(plugin().dock, "setup_5_dock_ready.png")
    from mrhash_qgis.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(plugin().client, plugin().setup, iface.mainWindow())
    keep["settings"] = dialog
    dialog.show()
    dialog.test_button.click()
    wait_until(lambda: dialog.result_label.text().startswith(("OK", "Engine")), tested, 300,
               "Test engine")


def tested():
    dialog = keep["settings"]
    log_step("test engine", result=dialog.result_label.text())
    later(1.0, lambda: (grab(dialog, "setup_6_settings_ready.png"), report()))


def report():
    dialog = keep["settings"]
    dialog.copy_report()
    wait_until(lambda: "copied" in dialog.result_label.text(), reported, 120, "the report")


def reported():
    text = QApplication.clipboard().text()
    log_step("report", text=text)
    keep["settings"].close()
    steps = {step["step"]: step for step in status["steps"]}
    status["ok"] = (bool(status.get("n_hits")) and steps["hits"]["thumbnails"] > 0
                    and steps["test engine"]["result"].startswith("OK"))
    finish()


OUT.mkdir(parents=True, exist_ok=True)
later(1.0, start)
