"""mrhash:refine — relevance feedback: the K places of INDEX most like the relevant examples
and least like the irrelevant ones (tile ids from earlier hits, and/or polygons)."""

from __future__ import annotations

import re

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from mrhash_qgis.contract.protocol import Example, QueryResult, RefineRequest
from mrhash_qgis.core.crs import crs_text
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm
from mrhash_qgis.processing.algorithms.hits_output import hits_parameter, write_hits


def tile_ids(text: str, what: str) -> list[int]:
    """Tile ids from "12, 40 41" (commas or spaces); QgsProcessingException otherwise."""
    words = [w for w in re.split(r"[\s,;]+", text or "") if w]
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise QgsProcessingException(tr("{what}: tile ids are whole numbers separated by "
                                        "commas or spaces, got “{text}”").format(
                                            what=what, text=text)) from None
    if any(i < 1 for i in ids):
        raise QgsProcessingException(tr("{what}: tile ids are positive").format(what=what))
    return ids


class RefineAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "refine"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Refine (search by examples)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Relevance feedback: the K places of INDEX most like the RELEVANT examples "
                  "and least like the NOT RELEVANT ones, the whole index re-ranked. Examples "
                  "are tile ids (the hit_id field of a hits layer) and/or the polygons of "
                  "EXAMPLES (each a relevant place, read from the indexed rasters). The "
                  "examples never come back as hits. OUTPUT: hit footprints (EPSG:4326) with "
                  "rank, Hamming distance to the nearest relevant example and the refine "
                  "score.")

    def add_example_parameters(self) -> None:
        """INDEX and the examples: what refine and map share."""
        self.addParameter(QgsProcessingParameterFile(
            "INDEX", tr("Index"), behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterString(
            "POSITIVE", tr("Relevant tile ids"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            "NEGATIVE", tr("Not relevant tile ids"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "EXAMPLES", tr("Relevant polygons"), [QgsProcessing.SourceType.TypeVectorPolygon],
            optional=True))

    def examples(self, parameters, context) -> list[Example]:
        """The examples given (at least one relevant, else QgsProcessingException)."""
        examples = [Example(tile=i, relevant=True) for i in tile_ids(
            self.parameterAsString(parameters, "POSITIVE", context), tr("Relevant tile ids"))]
        examples += [Example(tile=i, relevant=False) for i in tile_ids(
            self.parameterAsString(parameters, "NEGATIVE", context), tr("Not relevant tile ids"))]
        source = self.parameterAsSource(parameters, "EXAMPLES", context)
        if source is not None:
            crs = crs_text(source.sourceCrs())
            examples += [Example(footprint=f.geometry().asWkt(), footprint_crs=crs)
                         for f in source.getFeatures() if not f.geometry().isEmpty()]
        if not any(e.relevant for e in examples):
            raise QgsProcessingException(tr("Give at least one relevant example: tile ids or "
                                            "polygons"))
        return examples

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_example_parameters()
        self.addParameter(QgsProcessingParameterNumber(
            "K", tr("Number of hits"), QgsProcessingParameterNumber.Type.Integer, 20,
            minValue=1, maxValue=10000))
        self.addParameter(hits_parameter())

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        request = RefineRequest(self.examples(parameters, context),
                                self.parameterAsFile(parameters, "INDEX", context),
                                k=self.parameterAsInt(parameters, "K", context))
        hits = QueryResult.from_result(self.run_engine(request, feedback)).hits
        return write_hits(self, hits, parameters, context, feedback)
