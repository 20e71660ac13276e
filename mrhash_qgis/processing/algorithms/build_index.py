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

from mrhash_qgis.core.bands import parse_bands
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm


class BuildIndexAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "buildindex"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return "Build index"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return ("Tiles every raster of INPUT_FOLDER, encodes the tiles with MODEL and stores "
                "the codes in OUTPUT_INDEX. Incremental: unchanged files are skipped, bad "
                "files are listed and do not stop the build. Tile size 0 = the model's patch "
                "size; stride 0 = tile size.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterFile(
            "INPUT_FOLDER", "Folder of rasters",
            behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model package"))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (pixels, 0 = model patch size)",
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "STRIDE", "Stride (pixels, 0 = tile size)",
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", "Bands of these rasters the model encodes (e.g. 1,2,3; empty = the "
            "model's)", "", optional=True))
        self.addParameter(QgsProcessingParameterBoolean("REBUILD", "Rebuild from scratch", False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_INDEX", "Index"))
        for name in ("N_TILES", "ADDED", "REMOVED", "UNCHANGED", "SKIPPED"):
            self.addOutput(QgsProcessingOutputNumber(name, name.replace("_", " ").lower()))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        params = {
            "folder": self.parameterAsFile(parameters, "INPUT_FOLDER", context),
            "model": self.parameterAsFile(parameters, "MODEL", context),
            "index": self.parameterAsString(parameters, "OUTPUT_INDEX", context),
            "rebuild": self.parameterAsBool(parameters, "REBUILD", context),
        }
        for key in ("tile_size", "stride"):
            value = self.parameterAsInt(parameters, key.upper(), context)
            if value:
                params[key] = value
        bands = parse_bands(self.parameterAsString(parameters, "BANDS", context))
        if bands:
            params["bands"] = bands
        result = self.run_engine("index", params, feedback)
        for skipped in result.get("skipped", []):
            feedback.reportError(f"skipped {skipped.get('path')}: {skipped.get('error')}")
        feedback.pushInfo(f"{result.get('n_tiles')} tiles in {result.get('index')}")
        return {"OUTPUT_INDEX": result.get("index", params["index"]),
                "N_TILES": result.get("n_tiles"), "ADDED": result.get("added"),
                "REMOVED": result.get("removed"), "UNCHANGED": result.get("unchanged"),
                "SKIPPED": len(result.get("skipped", []))}
