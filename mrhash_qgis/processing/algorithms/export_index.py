"""mrhash:exportindex — every tile of an index (footprint, raster, window, code) to a
GeoPackage or a GeoParquet file, for GIS, GeoPandas or DuckDB."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from mrhash_qgis.contract.protocol import ExportRequest, ExportResult
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm

FORMATS = (("gpkg", "GeoPackage"), ("geoparquet", "GeoParquet"))


class ExportIndexAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "exportindex"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Export index")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Writes every tile of INDEX to OUTPUT: footprint polygon (EPSG:4326), tile "
                  "id, raster path, pixel window, valid fraction and hash code (hex). "
                  "GeoPackage opens in any GIS; GeoParquet (with its 'geo' metadata) in "
                  "GeoPandas, DuckDB or QGIS.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterFile(
            "INDEX", tr("Index"), behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterEnum(
            "FORMAT", tr("Format"), [label for _, label in FORMATS], defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", tr("Output file"), tr("GeoPackage (*.gpkg);;GeoParquet (*.parquet)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        fmt = FORMATS[self.parameterAsEnum(parameters, "FORMAT", context)][0]
        request = ExportRequest(self.parameterAsFile(parameters, "INDEX", context),
                                self.parameterAsFileOutput(parameters, "OUTPUT", context), fmt)
        result = ExportResult.from_result(self.run_engine(request, feedback))
        feedback.pushInfo(tr("{n} tiles written to {output}").format(
            n=result.n_tiles, output=result.output))
        return {"OUTPUT": result.output}
