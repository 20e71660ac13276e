"""Where query results are kept: one GeoPackage per project, so the hits, the query footprints
and the analyst's marks reload with the project (memory layers would be empty, and QGIS warns
that temporary layers are lost on close); and export of a results layer to a file.

The GeoPackage is, in order: the one the project's results layers already use; beside the
saved project (`<project>_mrhash.gpkg`); for an unsaved project, a new file per session in the
index folder's `results/` (never another session's file, so a saved project's results are
never overwritten), or in the profile's folder when the index folder cannot be written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsFields,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from mrhash_qgis.contract.index_layout import RESULTS_DIR
from mrhash_qgis.core.fields import field
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path

SUFFIX = "_mrhash.gpkg"
EXPORT_FORMATS = {".gpkg": "GPKG", ".csv": "CSV"}


def _writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _new_session_file(folder: Path) -> Path:
    """A file name no session has used in `folder`: two sessions started in the same second
    (or a project cleared and queried again) must never append to each other's results."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"mrhash_{stamp}.gpkg", 1
    while path.exists():
        n += 1
        path = folder / f"mrhash_{stamp}-{n}.gpkg"
    return path


def gpkg_of(layer: QgsVectorLayer) -> Path | None:
    """The GeoPackage a layer reads, or None (memory or other formats)."""
    if layer.providerType() != "ogr":
        return None
    path = layer_path(layer)
    return Path(path) if path.lower().endswith(".gpkg") else None


class ResultsStore:
    """One GeoPackage holding results tables (`hits`, `queries`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_project(cls, index_dir: str, layer_names: tuple[str, ...],
                    project: QgsProject | None = None) -> ResultsStore:
        project = project or QgsProject.instance()
        for name in layer_names:
            for layer in project.mapLayersByName(name):
                if isinstance(layer, QgsVectorLayer) and (path := gpkg_of(layer)):
                    return cls(path)
        if project.fileName():
            return cls(Path(project.absolutePath()) / f"{project.baseName()}{SUFFIX}")
        folder = Path(index_dir) / RESULTS_DIR
        if not index_dir or not _writable_folder(folder):
            folder = Path(QgsApplication.qgisSettingsDirPath()) / "mrhash" / "results"
            folder.mkdir(parents=True, exist_ok=True)
        return cls(_new_session_file(folder))

    def layer(self, table: str, name: str,
              fields: tuple[tuple[str, str], ...]) -> QgsVectorLayer:
        """The table as a layer (EPSG:4326 polygons), created with `fields` when missing."""
        layer = QgsVectorLayer(f"{self.path}|layername={table}", name, "ogr")
        if layer.isValid():
            return layer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        qgs_fields = QgsFields()
        for field_name, kind in fields:
            qgs_fields.append(field(field_name, kind))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = table
        action = QgsVectorFileWriter.ActionOnExistingFile
        options.actionOnExistingFile = (action.CreateOrOverwriteLayer if self.path.exists()
                                        else action.CreateOrOverwriteFile)
        writer = QgsVectorFileWriter.create(
            str(self.path), qgs_fields, QgsWkbTypes.Type.Polygon,
            QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance().transformContext(),
            options)
        problem = writer.errorMessage() if writer.hasError() else ""
        del writer  # closes the file
        layer = QgsVectorLayer(f"{self.path}|layername={table}", name, "ogr")
        if problem or not layer.isValid():
            raise OSError(tr("{path}: cannot write the results ({problem})").format(
                path=self.path, problem=problem or tr("not a writable GeoPackage")))
        return layer


def export_layers(layers: list[tuple[str, QgsVectorLayer]], path: str | Path,
                  marked_only: tuple[str, ...] = ()) -> Path:
    """Write several layers as the tables of one GeoPackage (replaced): each as its filter
    keeps it; those named in `marked_only` only with their features the analyst marked.
    Raises OSError naming the file and the problem."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise OSError(tr("{path}: choose a .gpkg file name").format(path=path))
    action = QgsVectorFileWriter.ActionOnExistingFile
    for number, (table, layer) in enumerate(layers):
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = table
        options.actionOnExistingFile = (action.CreateOrOverwriteFile if number == 0
                                        else action.CreateOrOverwriteLayer)
        if table in marked_only:  # a copy of the marked features alone
            layer = layer.materialize(QgsFeatureRequest().setFilterExpression(
                "\"mark\" IS NOT NULL AND \"mark\" != ''"))
        error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, str(path), QgsProject.instance().transformContext(), options)
        if error != QgsVectorFileWriter.WriterError.NoError:
            raise OSError(tr("{path}: cannot export {table} ({problem})").format(
                path=path, table=table, problem=message))
    return path


def export_layer(layer: QgsVectorLayer, path: str | Path) -> Path:
    """Write `layer` to a GeoPackage or a CSV (geometry as WKT, EPSG:4326); an existing file
    is replaced. Raises OSError naming the file and the problem."""
    path = Path(path)
    driver = EXPORT_FORMATS.get(path.suffix.lower())
    if driver is None:
        raise OSError(tr("{path}: choose a .gpkg or .csv file name").format(path=path))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.layerName = path.stem
    if driver == "CSV":
        options.layerOptions = ["GEOMETRY=AS_WKT"]
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise OSError(tr("{path}: cannot export ({problem})").format(path=path, problem=message))
    return path
