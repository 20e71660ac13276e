"""QgsField construction for QGIS 3.22 (QVariant types) and QGIS >= 3.38 / 4 (QMetaType)."""

from __future__ import annotations

from qgis.core import Qgis, QgsField
from qgis.PyQt.QtCore import QMetaType, QVariant

_NEW_API = Qgis.QGIS_VERSION_INT >= 33800


def field(name: str, kind: str) -> QgsField:
    """`kind`: "int", "int64", "double" or "string"."""
    if _NEW_API:
        types = {"int": QMetaType.Type.Int, "int64": QMetaType.Type.LongLong,
                 "double": QMetaType.Type.Double, "string": QMetaType.Type.QString}
    else:
        types = {"int": QVariant.Int, "int64": QVariant.LongLong, "double": QVariant.Double,
                 "string": QVariant.String}
    return QgsField(name, types[kind])
