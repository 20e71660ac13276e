"""Plugin object QGIS creates: toolbar, menu, dock, map tool and Processing provider.

Everything `initGui` adds, `unload` removes (reload-safe), and the worker is stopped.
Heavy widgets are created on first use. The translation for the user's QGIS locale is
installed before any widget is made, so every `tr()` finds it."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsCoordinateTransform, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon

try:  # Qt6 (QGIS 4) has QAction in QtGui, Qt5 in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from mrhash_qgis.core.engine_client import shared_client, shutdown_shared_client
from mrhash_qgis.core.i18n import install_translator, remove_translator, tr
from mrhash_qgis.map_tool import QueryMapTool

ICONS = Path(__file__).parent / "resources" / "icons"
MENU = "&MrHash"


def icon(name: str) -> QIcon:
    return QIcon(str(ICONS / f"{name}.svg"))


class MrHashPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.client = None
        self.setup = None
        self.dock = None
        self.map_tool = None
        self.provider = None
        self.toolbar = None
        self.actions: list[QAction] = []
        self.dialogs: list = []

    # QGIS hooks
    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        from mrhash_qgis.processing.provider import MrHashProvider

        if self.provider is not None:  # qgis_process calls this, the desktop calls initGui
            return
        self.provider = MrHashProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        install_translator()
        from mrhash_qgis.core.setup_task import EngineSetup
        from mrhash_qgis.ui.dock import MrHashDock

        self.initProcessing()
        self.client = shared_client()
        self.setup = EngineSetup(self.client)
        canvas = self.iface.mapCanvas()
        self.map_tool = QueryMapTool(canvas)
        self.dock = MrHashDock(self.iface, self.client, self.map_tool, self.iface.mainWindow(),
                               setup=self.setup)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.map_tool.queryRequested.connect(self.dock.run_query)
        self.dock.quickStartRequested.connect(self.show_quick_start)
        self.dock.queryToolRequested.connect(self.toggle_query_tool)
        self.dock.indexRequested.connect(self.show_index_dialog)

        self.toolbar = self.iface.addToolBar("MrHash")
        self.toolbar.setObjectName("MrHashToolbar")
        self.dock_action = self._action("mrhash", tr("MrHash panel"),
                                        self.dock.toggleUserVisible, checkable=True)
        self.dock_action.setChecked(True)
        self.dock.visibilityChanged.connect(self.dock_action.setChecked)
        self.query_action = self._action("query", tr("Query similar places on the map"),
                                         self.toggle_query_tool, checkable=True)
        self.map_tool.setAction(self.query_action)
        self.dock.query_button.toggled.connect(self.toggle_query_tool)
        self._action("index", tr("Build index…"), self.show_index_dialog)
        self._action("train", tr("Train model…"), self.show_train_wizard)
        self._action("settings", tr("Settings…"), self.show_settings, toolbar=False)
        self.client.start()

    def _action(self, icon_name: str, text: str, slot, checkable: bool = False,
                toolbar: bool = True) -> QAction:
        action = QAction(icon(icon_name), text, self.iface.mainWindow())
        action.setCheckable(checkable)
        # triggered(bool) passes `checked`: only checkable actions' slots take it
        action.triggered.connect(slot if checkable else lambda _checked=False: slot())
        self.iface.addPluginToMenu(MENU, action)
        if toolbar:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def unload(self) -> None:
        if self.setup is not None:
            self.setup.cancel()  # the task stops pip; the environment stays "incomplete"
            self.setup = None
        for dialog in self.dialogs:
            dialog.shutdown()  # stops a build or training still running in the background
        self.dialogs.clear()
        if self.map_tool is not None:
            if self.iface.mapCanvas().mapTool() is self.map_tool:
                self.iface.mapCanvas().unsetMapTool(self.map_tool)
            self.map_tool.release()
            self.map_tool = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        shutdown_shared_client()
        self.client = None
        remove_translator()

    # actions
    def toggle_query_tool(self, checked: bool) -> None:
        canvas = self.iface.mapCanvas()
        if checked:
            canvas.setMapTool(self.map_tool)
        elif canvas.mapTool() is self.map_tool:
            canvas.unsetMapTool(self.map_tool)
        self.dock.query_button.setChecked(checked)
        self.query_action.setChecked(checked)

    def _show(self, dialog) -> None:
        # a closed dialog whose job runs on in the background is kept: it reports the end
        self.dialogs = [d for d in self.dialogs if d.isVisible() or d.busy] + [dialog]
        dialog.show()
        dialog.raise_()

    def show_quick_start(self) -> None:
        from mrhash_qgis.ui.quick_start_dialog import QuickStartDialog

        dialog = QuickStartDialog(self.iface, self.client, self.iface.mainWindow())
        dialog.ready.connect(lambda model, index: self._quick_start_ready(
            model, index, dialog.chain.plan.primary if dialog.chain.plan else []))
        self._show(dialog)

    def _quick_start_ready(self, model: str, index: str, primary: list[int]) -> None:
        """The guided start's end: the index's tiles outlined on the map and, when no raster
        is on the map yet, one of the indexed rasters in the bands the model looks at, zoomed
        to — imagery to click on; the dock ready to query."""
        from mrhash_qgis.core.index_footprints import add_footprints_layer
        from mrhash_qgis.core.raster_style import show_like_thumbnail

        try:
            footprints = add_footprints_layer(index)
        except (OSError, ValueError):
            footprints = None
        canvas = self.iface.mapCanvas()
        project = QgsProject.instance()
        if footprints is not None:
            project.layerTreeRoot().findLayer(footprints.id()).setItemVisibilityChecked(True)
            first = next(footprints.getFeatures(), None)
            if first is not None and not any(isinstance(layer, QgsRasterLayer)
                                             for layer in canvas.layers()):
                raster = QgsRasterLayer(str(first["source"]), Path(first["source"]).stem)
                if raster.isValid():
                    show_like_thumbnail(raster, primary[:3])
                    project.addMapLayer(raster, False)
                    project.layerTreeRoot().addLayer(raster)  # below the tiles' outlines
                    extent = QgsCoordinateTransform(
                        raster.crs(), canvas.mapSettings().destinationCrs(),
                        project).transformBoundingBox(raster.extent())
                    extent.scale(1.5)
                    # after QGIS's own zoom to the first layers of an empty project
                    QTimer.singleShot(0, lambda: (canvas.setExtent(extent), canvas.refresh()))
        self.dock.use_built(model, index)

    def show_index_dialog(self, model: str = "") -> None:
        from mrhash_qgis.ui.index_dialog import IndexDialog

        dialog = IndexDialog(self.iface, self.client, self.iface.mainWindow())
        if model:  # "Index with this model…" after a training
            dialog.use_model(model)
        dialog.indexBuilt.connect(self.dock.index_widget.setFilePath)
        dialog.indexBuilt.connect(lambda _index: self.dock.index_offer_button.setVisible(False))
        self._show(dialog)

    def show_train_wizard(self) -> None:
        from mrhash_qgis.ui.train_wizard import TrainWizard

        wizard = TrainWizard(self.iface, self.client, self.iface.mainWindow())
        wizard.modelTrained.connect(self.dock.offer_index)
        wizard.indexRequested.connect(self.show_index_dialog)
        self._show(wizard)

    def show_settings(self) -> None:
        from mrhash_qgis.ui.settings_dialog import SettingsDialog

        SettingsDialog(self.client, self.setup, self.iface.mainWindow()).exec()
