"""The hits OUTPUT of the algorithms that search (query, refine): a feature sink with the hits
layer's fields, styled like the dock's layer when QGIS loads it."""

from __future__ import annotations

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterFeatureSink,
    QgsVectorLayer,
    QgsWkbTypes,
)

from mrhash_qgis.contract.protocol import Hit
from mrhash_qgis.core.hits_layer import HITS_LAYER_NAME, hit_features, hits_layer, style_hits
from mrhash_qgis.core.i18n import tr


class HitsStyler(QgsProcessingLayerPostProcessorInterface):
    """Gives the output layer the dock's style (graduated by distance, rank labels)."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsVectorLayer):
            style_hits(layer)


# QgsProcessingAlgorithm.run() works on a copy of the algorithm that is deleted before the
# layer is loaded, so the post-processor lives here; it holds no state.
HITS_STYLER = HitsStyler()


def hits_parameter(name: str = "OUTPUT") -> QgsProcessingParameterFeatureSink:
    return QgsProcessingParameterFeatureSink(name, HITS_LAYER_NAME,
                                             QgsProcessing.SourceType.TypeVectorPolygon)


def write_hits(algorithm, hits: list[Hit], parameters, context, feedback,
               name: str = "OUTPUT") -> dict:
    """Write `hits` to the sink parameter `name`; -> the algorithm's result dict."""
    template = hits_layer([])
    sink, dest = algorithm.parameterAsSink(parameters, name, context, template.fields(),
                                           QgsWkbTypes.Type.Polygon, template.crs())
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, name))
    sink.addFeatures(hit_features(template, hits), QgsFeatureSink.Flag.FastInsert)
    feedback.pushInfo(tr("{n} hits").format(n=len(hits)))
    if context.willLoadLayerOnCompletion(dest):
        context.layerToLoadOnCompletionDetails(dest).setPostProcessor(HITS_STYLER)
    return {name: dest}
