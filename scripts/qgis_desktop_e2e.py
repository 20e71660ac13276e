"""End-to-end check INSIDE the real QGIS desktop (`qgis --code qgis_desktop_e2e.py`, started
by qgis_desktop_driver.py with $MRHASH_E2E_CONFIG naming a JSON config).

With the MrHash plugin enabled in the profile, it loads the imagery, clicks a query through
the plugin's map tool (qgis.utils.iface), waits for the hits, grabs the main window, the dock,
the index dialog and the training wizard pages (training a tiny model for the loss plot) to
PNG, writes status.json and quits QGIS. Steps run from the event loop (QTimer), never
blocking it, as a user would see them."""

import os
import sys

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
from qgis.utils import iface, plugins

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
    plugin,
    status,
    wait_until,
)


def start():
    window = iface.mainWindow()
    window.resize(1400, 900)
    window.showMaximized()
    log_step("plugin loaded", loaded="mrhash_qgis" in plugins)
    wait_until(lambda: plugin().client.state in ("ready", "failed"), engine_ready, 120,
               "the engine")


def engine_ready():
    client = plugin().client
    log_step("engine", state=client.state, info=client.info, error=client.last_error)
    if client.state != "ready":
        raise RuntimeError(f"engine failed: {client.last_error}")
    scene = QgsRasterLayer(CONFIG["scene"], "Sentinel-2 scene (RGB)")
    primary = QgsRasterLayer(CONFIG["primary"], "s2_rgb (primary)")
    QgsProject.instance().addMapLayers([scene, primary])
    keep["scene"], keep["primary"] = scene, primary
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(scene.crs())
    extent = QgsRectangle(scene.extent())
    canvas.setExtent(extent)
    dock = plugin().dock
    dock.index_widget.setFilePath(CONFIG["index"])
    dock.model_widget.setFilePath(CONFIG["model"])
    dock.k_spin.setValue(8)
    dock.show()
    plugin().toggle_query_tool(True)
    later(2.0, click)


def click():
    x, y = CONFIG["point"]
    click_query(x, y, keep["scene"].crs(), got_hits)


def got_hits(result):
    hits_step(result)
    later(3.0, screenshots_main)


def screenshots_main():
    grab(iface.mainWindow(), "qgis_main_window.png")
    grab(plugin().dock, "dock.png")
    plugin().show_index_dialog()
    dialog = plugin().dialogs[-1]
    dialog.folder_widget.setFilePath(CONFIG["archive"])
    dialog.index_widget.setFilePath(CONFIG["index"])
    dialog.model_widget.setFilePath(CONFIG["model"])
    later(1.0, lambda: screenshot_index(dialog))


def screenshot_index(dialog):
    grab(dialog, "index_dialog.png")
    dialog.close()
    plugin().show_train_wizard()
    wizard = plugin().dialogs[-1]
    keep["wizard"] = wizard
    wizard.primary_page.picker.layer_combo.setLayer(keep["primary"])
    later(1.0, wizard_page1)


def wizard_page1():
    wizard = keep["wizard"]
    grab(wizard, "wizard_1_primary.png")
    wizard.next()
    from mrhash_qgis.ui.train_wizard import SourceChoice

    wizard.auxiliary_page.add_source(SourceChoice(CONFIG["aux"]))
    root = QgsProject.instance().layerTreeRoot()
    for name in ("MrHash hits", "MrHash query", "Sentinel-2 scene (RGB)"):
        for layer in QgsProject.instance().mapLayersByName(name):  # show the overlap alone
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
    iface.mapCanvas().setExtent(keep["primary"].extent().buffered(1500))
    wait_until(lambda: "covers" in wizard.auxiliary_page.overlap_label.text(), wizard_page2, 60,
               "the auxiliary overlap")


def wizard_page2():
    wizard = keep["wizard"]
    later(1.5, lambda: (grab(wizard, "wizard_2_auxiliary.png"),
                        grab(iface.mainWindow(), "wizard_overlap_on_canvas.png"),
                        wizard_page3()))


def wizard_page3():
    wizard = keep["wizard"]
    log_step("overlap", text=wizard.auxiliary_page.overlap_label.text())
    wizard.next()
    page = wizard.params_page
    page.bits_combo.setCurrentText("32")
    page.clusters_spin.setValue(8)
    page.epochs_spin.setValue(3)
    page.ae_epochs_spin.setValue(8)
    page.output_widget.setFilePath(CONFIG["wizard_model"])
    grab(wizard, "wizard_3_parameters.png")
    trained = []
    wizard.modelTrained.connect(trained.append)
    wizard.trainingFailed.connect(lambda message: status.setdefault("train_error", message))
    wizard.next()
    wait_until(lambda: trained or "train_error" in status, wizard_page4, 180, "the training")


def wizard_page4():
    wizard = keep["wizard"]
    log_step("trained", model=CONFIG["wizard_model"], error=status.get("train_error"),
             losses=len(wizard.train_page.plot.points))
    later(0.5, lambda: (grab(wizard, "wizard_4_training.png"), done()))


def done():
    keep["wizard"].close()
    from mrhash_qgis.ui.settings_dialog import SettingsDialog

    settings = SettingsDialog(plugin().client, plugin().setup, iface.mainWindow())
    settings.show()
    grab(settings, "settings_dialog.png")
    settings.close()
    status["ok"] = bool(status.get("n_hits")) and "train_error" not in status
    finish()


OUT.mkdir(parents=True, exist_ok=True)
later(1.0, start)
