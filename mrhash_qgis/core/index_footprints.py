"""Footprints of the tiles of an index, read from its store (read-only, through the shared
`contract.index_layout.IndexReader`) into a layer saved as a GeoPackage, so the user sees what
was indexed and the project keeps it."""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsFillSymbol,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from mrhash_qgis.contract.index_layout import RESULTS_DIR, IndexReader, IndexUnreadable
from mrhash_qgis.core.fields import field
from mrhash_qgis.core.i18n import tr

MAX_TILES = 200_000  # a layer, not a database browser
FOOTPRINTS_NAME = "footprints"


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


def footprints_file(index_dir: str | Path) -> Path:
    """Where the footprints layer of an index is kept: the index's results folder, or the
    profile's folder when the index folder cannot be written (a shared, read-only index)."""
    folder = Path(index_dir) / RESULTS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        folder = Path(QgsApplication.qgisSettingsDirPath()) / "mrhash" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{Path(index_dir).name}_{FOOTPRINTS_NAME}.gpkg"
    return folder / f"{FOOTPRINTS_NAME}.gpkg"


def saved_footprints_layer(index_dir: str | Path) -> QgsVectorLayer:
    """The index's footprints written to a GeoPackage (`footprints_file`) and read from it:
    a file-backed layer, so the project keeps it and QGIS never warns that a scratch layer
    is lost on close. Raises ValueError as `footprints_layer`, OSError when nothing can be
    written."""
    memory = footprints_layer(index_dir)
    path = footprints_file(index_dir)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = FOOTPRINTS_NAME
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        memory, str(path), QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise OSError(tr("{path}: cannot save the index footprints ({problem})").format(
            path=path, problem=message))
    layer = QgsVectorLayer(f"{path}|layername={FOOTPRINTS_NAME}", memory.name(), "ogr")
    layer.setRenderer(memory.renderer().clone())
    return layer


def add_footprints_layer(index_dir: str | Path) -> QgsVectorLayer:
    """The index's footprints (saved, `saved_footprints_layer`) added to the project
    unchecked: there when the user wants to see what was indexed, never drawn over the
    imagery unasked; an earlier copy of the same layer is replaced. Raises ValueError or
    OSError as `saved_footprints_layer`."""
    layer = saved_footprints_layer(index_dir)
    project = QgsProject.instance()
    for old in project.mapLayersByName(layer.name()):
        project.removeMapLayer(old.id())
    project.addMapLayer(layer)
    project.layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(False)
    return layer
