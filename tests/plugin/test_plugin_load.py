"""The plugin loads into QGIS, registers everything, and unloads without leftovers."""

from __future__ import annotations

import sys

from qgis.core import QgsApplication

import mrhash_qgis
from mrhash_qgis.core import engine_client

HEAVY = ("torch", "faiss", "rasterio", "mrhash")


def test_load_and_unload_twice(qgis_iface):
    for _ in range(2):  # reload-safe: a second load after unload works the same
        plugin = mrhash_qgis.classFactory(qgis_iface)
        plugin.initGui()
        registry = QgsApplication.processingRegistry()
        assert registry.providerById("mrhash") is not None
        assert {a.id() for a in registry.providerById("mrhash").algorithms()} == {
            "mrhash:trainmodel", "mrhash:buildindex", "mrhash:queryatpoint", "mrhash:refine",
            "mrhash:mapsimilar", "mrhash:exportindex"}
        assert plugin.dock is not None and plugin.dock.objectName() == "MrHashDock"
        assert len(plugin.actions) == 5
        plugin.toggle_query_tool(True)
        assert qgis_iface.mapCanvas().mapTool() is plugin.map_tool
        by_text = {action.text(): action for action in plugin.actions}
        by_text["Build index…"].trigger()
        by_text["Train model…"].trigger()
        assert [type(d).__name__ for d in plugin.dialogs] == ["IndexDialog", "TrainWizard"]
        assert all(d.isVisible() for d in plugin.dialogs)
        dialogs = list(plugin.dialogs)
        plugin.unload()
        assert not any(d.isVisible() for d in dialogs)
        assert registry.providerById("mrhash") is None
        assert qgis_iface.mapCanvas().mapTool() is None
        assert plugin.actions == [] and plugin.dock is None
        assert engine_client._shared is None  # worker stopped with the plugin


def test_plugin_never_imports_the_engine_stack():
    leaked = [name for name in HEAVY if name in sys.modules]
    assert leaked == [], f"imported in the QGIS process: {leaked}"
