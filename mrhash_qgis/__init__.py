"""MrHash for QGIS: find similar places in your raster archive (unsupervised deep hashing).

QGIS loads this package and calls `classFactory`; nothing heavy is imported here, and the
plugin never imports the engine (torch, faiss, rasterio): it talks to `mrhash serve`.
"""


def classFactory(iface):  # noqa: N802 (QGIS plugin entry point name)
    from mrhash_qgis.plugin import MrHashPlugin

    return MrHashPlugin(iface)
