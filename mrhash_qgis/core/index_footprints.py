"""Footprints of the tiles of an index, read from its store (read-only, through the shared
`contract.index_layout.IndexReader`) into a memory layer, so the user sees what was indexed."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFillSymbol,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from mrhash_qgis.contract.index_layout import IndexReader, IndexUnreadable
from mrhash_qgis.core.fields import field
from mrhash_qgis.core.i18n import tr

MAX_TILES = 200_000  # a layer, not a database browser


def footprints_layer(index_dir: str | Path, name: str | None = None) -> QgsVectorLayer:
    """Memory layer of the index's tiles (tile_id, source); raises ValueError if the folder
    holds no readable index."""
    try:
        rows = IndexReader(index_dir).footprints(MAX_TILES)
    except IndexUnreadable as error:
        raise ValueError(str(error)) from error
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name or tr("MrHash index {name}").format(
        name=Path(index_dir).name), "memory")
    layer.dataProvider().addAttributes([field("tile_id", "int64"), field("source", "string")])
    layer.updateFields()
    features = []
    for tile_id, path, west, south, east, north in rows:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(west, south, east, north)))
        feature.setAttributes([tile_id, path])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    # outlines only: the tiles lie on the imagery they were cut from, which must stay visible
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": "#ffd166", "outline_width": "0.3"}))
    return layer


def add_footprints_layer(index_dir: str | Path) -> QgsVectorLayer:
    """The index's footprints added to the project unchecked: there when the user wants to
    see what was indexed, never drawn over the imagery unasked. Raises ValueError as
    `footprints_layer`."""
    layer = footprints_layer(index_dir)
    project = QgsProject.instance()
    project.addMapLayer(layer)
    project.layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(False)
    return layer
