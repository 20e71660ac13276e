"""What every MrHash algorithm shares: running one engine request with Processing feedback
(progress, cancel) and turning engine errors into QgsProcessingException."""

from __future__ import annotations

import os

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
)

from mrhash_qgis.contract.protocol import (
    ExportRequest,
    IndexRequest,
    QueryRequest,
    RefineRequest,
    TrainRequest,
)
from mrhash_qgis.core.engine_client import EngineError, shared_client
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path

EngineRequestType = ExportRequest | IndexRequest | QueryRequest | RefineRequest | TrainRequest


class EngineAlgorithm(QgsProcessingAlgorithm):
    """Subclasses define name/params and call `self.run_engine(request, feedback)` with a
    request of the protocol (mrhash_qgis.contract.protocol)."""

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return ""

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    @staticmethod
    def run_engine(request: EngineRequestType, feedback: QgsProcessingFeedback) -> dict:
        def on_progress(event: dict) -> None:
            if event.get("fraction") is not None:
                feedback.setProgress(100.0 * float(event["fraction"]))
            text = event.get("message") or ""
            if "loss" in event:
                text = tr("{message} epoch {epoch} loss {loss}").format(
                    message=text, epoch=event.get("epoch"), loss=f"{event['loss']:.4f}").strip()
            if text:
                feedback.setProgressText(text)

        try:
            return shared_client().call(request.METHOD, request.to_params(),
                                        on_progress=on_progress,
                                        is_cancelled=feedback.isCanceled)
        except EngineError as error:
            raise QgsProcessingException(tr("MrHash {method}: {error}").format(
                method=request.METHOD, error=error.message)) from error


def source_paths(value, context: QgsProcessingContext) -> list[str]:
    """File paths of a layer-list parameter value: layers, layer ids or paths."""
    items = value if isinstance(value, (list, tuple)) else [value]
    paths = []
    for item in items:
        if item in (None, ""):
            continue
        if isinstance(item, QgsMapLayer):
            paths.append(layer_path(item))
        elif isinstance(item, str) and os.path.exists(item):
            paths.append(item)
        else:
            layer = QgsProcessingUtils.mapLayerFromString(str(item), context)
            if layer is None:
                raise QgsProcessingException(tr("{item}: not a raster layer, file or folder")
                                             .format(item=item))
            paths.append(layer_path(layer))
    return paths
