"""mrhash:mapsimilar — every place of INDEX like the relevant examples (and unlike the others):
each tile scored, the likely ones merged into areas, written to a GeoPackage (`areas`,
`tiles`) — the dock's *Map all like these*, for the modeller, batches and `qgis_process`."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from mrhash_qgis.contract.protocol import MAP_THRESHOLD, MapRequest, MapResult
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.processing.algorithms.refine import RefineAlgorithm


class MapSimilarAlgorithm(RefineAlgorithm):
    def name(self) -> str:
        return "mapsimilar"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Map all places like these")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Every tile of INDEX scored for the RELEVANT examples and against the NOT "
                  "RELEVANT ones (tile ids and/or polygons, as in Refine): a calibrated score "
                  "from 0 to 1. OUTPUT: a GeoPackage with the tiles scoring at least 0.1 "
                  "(score, id, path, window) and the areas of adjacent tiles at or above "
                  "THRESHOLD (n_tiles, area_km2, max_score, mean_score).")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_example_parameters()
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", tr("Confidence threshold"), QgsProcessingParameterNumber.Type.Double,
            MAP_THRESHOLD, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", tr("Map (GeoPackage)"), tr("GeoPackage (*.gpkg)")))
        self.addOutput(QgsProcessingOutputVectorLayer("AREAS", tr("Detected areas")))
        self.addOutput(QgsProcessingOutputVectorLayer("TILES", tr("Scored tiles")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        request = MapRequest(self.examples(parameters, context),
                             index=self.parameterAsFile(parameters, "INDEX", context),
                             output=output,
                             threshold=self.parameterAsDouble(parameters, "THRESHOLD", context))
        result = MapResult.from_result(self.run_engine(request, feedback))
        feedback.pushInfo(tr("{n} of {scored} tiles detected in {areas} areas").format(
            n=result.n_detected, scored=result.n_scored, areas=result.n_areas))
        written = result.output
        return {"OUTPUT": written, "AREAS": f"{written}|layername=areas",
                "TILES": f"{written}|layername=tiles"}
