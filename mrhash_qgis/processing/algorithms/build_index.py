"""mrhash:buildindex — encode every tile of a folder of rasters into a searchable index."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from mrhash_qgis.contract.bands import parse_bands
from mrhash_qgis.contract.protocol import IndexRequest, IndexResult
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm


class BuildIndexAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "buildindex"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Build index")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Tiles every raster of INPUT_FOLDER, encodes the tiles with MODEL and stores "
                  "the codes in OUTPUT_INDEX. Incremental: unchanged files are skipped, bad "
                  "files are listed and do not stop the build. Tile size 0 = the model's patch "
                  "size; stride 0 = tile size. DASK (optional): encode on a Dask cluster, a "
                  "scheduler's address (tcp://host:8786) or local:N for N worker processes "
                  "on this machine; its workers must reach the rasters at the same paths.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterFile(
            "INPUT_FOLDER", tr("Folder of rasters"),
            behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("Model package")))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", tr("Tile size (pixels, 0 = model patch size)"),
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "STRIDE", tr("Stride (pixels, 0 = tile size)"),
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", tr("Bands of these rasters the model encodes (e.g. 1,2,3; empty = the "
                        "model's)"), "", optional=True))
        self.addParameter(QgsProcessingParameterBoolean("REBUILD", tr("Rebuild from scratch"),
                                                    False))
        self.addParameter(QgsProcessingParameterString(
            "DASK", tr("Run on a Dask cluster at (tcp://host:8786 or local:N; empty = here)"),
            "", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_INDEX", tr("Index")))
        for name, description in (("N_TILES", tr("Tiles in the index")),
                                  ("ADDED", tr("Tiles added")), ("REMOVED", tr("Tiles removed")),
                                  ("UNCHANGED", tr("Rasters unchanged")),
                                  ("SKIPPED", tr("Rasters skipped"))):
            self.addOutput(QgsProcessingOutputNumber(name, description))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        bands = parse_bands(self.parameterAsString(parameters, "BANDS", context))
        request = IndexRequest(
            self.parameterAsFile(parameters, "INPUT_FOLDER", context),
            self.parameterAsFile(parameters, "MODEL", context),
            self.parameterAsString(parameters, "OUTPUT_INDEX", context),
            self.parameterAsInt(parameters, "TILE_SIZE", context) or None,
            self.parameterAsInt(parameters, "STRIDE", context) or None,
            rebuild=self.parameterAsBool(parameters, "REBUILD", context),
            bands=list(bands) if bands else None,
            dask=self.parameterAsString(parameters, "DASK", context).strip() or None)
        result = IndexResult.from_result(self.run_engine(request, feedback))
        for skipped in result.skipped:
            feedback.reportError(tr("skipped {path}: {error}").format(
                path=skipped.path, error=skipped.error))
        feedback.pushInfo(tr("{n} tiles in {index}").format(n=result.n_tiles,
                                                            index=result.index))
        return {"OUTPUT_INDEX": result.index, "N_TILES": result.n_tiles,
                "ADDED": result.added, "REMOVED": result.removed,
                "UNCHANGED": result.unchanged, "SKIPPED": len(result.skipped)}
