"""mrhash:queryatpoint — the k indexed places most similar to the patch at a point."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterLayer,
)

from mrhash_qgis.contract.protocol import QueryRequest, QueryResult
from mrhash_qgis.core.crs import crs_text
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm
from mrhash_qgis.processing.algorithms.hits_output import hits_parameter, write_hits


class QueryAtPointAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "queryatpoint"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Query at point")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Finds the K places of INDEX most similar to the patch centred on POINT. The "
                  "patch is read from RASTER when given (any raster covering the point), "
                  "otherwise from the indexed rasters. OUTPUT: hit footprints (EPSG:4326) with "
                  "rank, Hamming distance and source raster.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterFile(
            "INDEX", tr("Index"), behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterPoint("POINT", tr("Query point")))
        self.addParameter(QgsProcessingParameterNumber(
            "K", tr("Number of hits"), QgsProcessingParameterNumber.Type.Integer, 10, minValue=1,
            maxValue=10000))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER", tr("Raster to read the query patch from"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EXCLUDE_RADIUS", tr("Exclude hits within (metres of the point)"),
            QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0))
        self.addParameter(hits_parameter())

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        point = self.parameterAsPoint(parameters, "POINT", context)
        crs = self.parameterAsPointCrs(parameters, "POINT", context)
        if not crs.isValid():
            crs = context.project().crs() if context.project() else crs
        if not crs.isValid():
            raise QgsProcessingException(tr("POINT: give the point's CRS, e.g. "
                                            "'500000,4170000 [EPSG:32618]'"))
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        request = QueryRequest(
            point=(point.x(), point.y()), crs=crs_text(crs),
            raster=layer_path(raster) if raster is not None else None,
            index=self.parameterAsFile(parameters, "INDEX", context),
            k=self.parameterAsInt(parameters, "K", context),
            exclude_radius=self.parameterAsDouble(parameters, "EXCLUDE_RADIUS", context))
        hits = QueryResult.from_result(self.run_engine(request, feedback)).hits
        return write_hits(self, hits, parameters, context, feedback)
