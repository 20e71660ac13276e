"""The file behind a layer, decoded by its provider (QgsProviderRegistry.decodeUri) rather than
by cutting its source string: a GeoPackage layer's "|layername=", a GDAL subdataset or a
provider's own URI syntax stay that provider's business."""

from __future__ import annotations

from qgis.core import QgsMapLayer, QgsProviderRegistry


def layer_path(layer: QgsMapLayer) -> str:
    """The file path of `layer` ("" for a layer that is not file-backed)."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    return str(parts.get("path") or "")
