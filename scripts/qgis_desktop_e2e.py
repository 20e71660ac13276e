"""End-to-end check INSIDE the real QGIS desktop (`qgis --code qgis_desktop_e2e.py`, started
by qgis_desktop_driver.py with $MRHASH_E2E_CONFIG naming a JSON config).

With the MrHash plugin enabled in the profile, it loads the imagery, clicks a query through
the plugin's map tool (qgis.utils.iface), waits for the hits, grabs the main window, the dock,
the index dialog and the training wizard pages (training a tiny model for the loss plot) to
PNG, writes status.json and quits QGIS. Steps run from the event loop (QTimer), never
blocking it, as a user would see them."""

import os
import sys

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer
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
    open_desktop(lambda: plugin().client.state in ("ready", "failed"), engine_ready,
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
    mark_and_refine()


def mark_and_refine():
    """The analyst's loop: mark two hits relevant and one not, Refine."""
    from mrhash_qgis.ui.thumbnails import HIT_ROLE

    dock = plugin().dock
    hits = [item.data(HIT_ROLE) for item in dock.grid.hit_items()]
    dock.grid.item(2).setSelected(True)
    dock.grid.item(3).setSelected(True)
    dock.results.relevant_button.click()
    dock.grid.clearSelection()
    dock.mark_hits([hits[-1]], "irrelevant")
    log_step("marked", relevant=dock.search.n_relevant, irrelevant=dock.search.n_irrelevant,
             refine_label=dock.results.refine_button.text())
    grab(dock, "dock_marked.png")
    refined = []
    dock.queryFinished.connect(refined.append)
    dock.results.refine_button.click()
    wait_until(lambda: refined, lambda: after_refine(refined[0], hits), 60, "the refine")


def after_refine(result, first_hits):
    marked = {first_hits[1].id, first_hits[2].id, first_hits[-1].id}
    log_step("refined", n=len(result.hits),
             marked_returned=len(marked & {h.id for h in result.hits}),
             status=plugin().dock.status_label.text())
    later(2.0, save_and_reopen)


def save_and_reopen():
    grab(iface.mainWindow(), "qgis_refined.png")
    grab(plugin().dock, "dock_refined.png")
    project = QgsProject.instance()
    project.write(CONFIG["project"])
    n_hits = project.mapLayersByName("MrHash hits")[0].featureCount()
    project.clear()
    keep.pop("scene"), keep.pop("primary")
    iface.addProject(CONFIG["project"])  # as File › Open Project does
    reopened = project.mapLayersByName("MrHash hits")
    dock = plugin().dock
    log_step("reopened", saved_hits=n_hits,
             hits=reopened[0].featureCount() if reopened else None,
             thumbnails=len(dock.grid.hit_items()),
             marks=dock.search.n_relevant + dock.search.n_irrelevant if dock.search else 0)
    exported = dock.export_hits(CONFIG["export"])
    layer = QgsVectorLayer(f"{exported}|layername=exported_hits", "exported hits", "ogr")
    log_step("exported", path=str(exported), valid=layer.isValid(),
             features=layer.featureCount())
    scene = project.mapLayersByName("Sentinel-2 scene (RGB)")
    keep["scene"] = scene[0] if scene else None
    keep["primary"] = (project.mapLayersByName("s2_rgb (primary)") or [None])[0]
    later(2.0, open_index_dialog)


def open_index_dialog():
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
    steps = {step["step"]: step for step in status["steps"]}
    status["ok"] = (bool(status.get("n_hits")) and "train_error" not in status
                    and steps["reopened"]["hits"] == steps["reopened"]["saved_hits"])
    finish()


OUT.mkdir(parents=True, exist_ok=True)
later(1.0, start)
