"""Footprints of the tiles of an index, read from its SQLite store (read-only) into a memory
layer, so the user sees what was indexed. The store's `tiles` table keeps each tile's box in
EPSG:4326 (west, south, east, north); see engine/mrhash/metadata.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFillSymbol,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from mrhash_qgis.core.fields import field
from mrhash_qgis.core.i18n import tr

DB_FILE = "index.sqlite"
MAX_TILES = 200_000  # a layer, not a database browser


def tile_size_px(index_dir: str | Path) -> int | None:
    """Width in pixels of the index's tiles (None when unknown)."""
    try:
        with sqlite3.connect(f"file:{Path(index_dir) / DB_FILE}?mode=ro", uri=True) as db:
            row = db.execute("SELECT width FROM tiles LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def tile_at(index_dir: str | Path, lon: float, lat: float) -> int | None:
    """Id of the indexed tile containing (lon, lat) whose centre is nearest (None if none)."""
    try:
        with sqlite3.connect(f"file:{Path(index_dir) / DB_FILE}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT id FROM tiles_rtree WHERE west <= ?1 AND east >= ?1 AND south <= ?2 "
                "AND north >= ?2 ORDER BY ((west + east) / 2 - ?1) * ((west + east) / 2 - ?1) "
                "+ ((south + north) / 2 - ?2) * ((south + north) / 2 - ?2) LIMIT 1",
                (lon, lat)).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def footprints_layer(index_dir: str | Path, name: str | None = None) -> QgsVectorLayer:
    """Memory layer of the index's tiles (tile_id, source); raises ValueError if the folder
    holds no readable index."""
    db = Path(index_dir) / DB_FILE
    if not db.is_file():
        raise ValueError(tr("{folder}: no {file}, not a MrHash index").format(
            folder=index_dir, file=DB_FILE))
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT t.id, f.path, t.west, t.south, t.east, t.north FROM tiles t "
                "JOIN files f ON f.id = t.file_id ORDER BY t.id LIMIT ?", (MAX_TILES,)).fetchall()
    except sqlite3.Error as error:
        raise ValueError(tr("{db}: cannot read the index store ({error})").format(
            db=db, error=error)) from error
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
