"""The `mrhash` Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parents[1] / "resources" / "icons" / "mrhash.svg"


class MrHashProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "mrhash"

    def name(self) -> str:
        return "MrHash"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "MrHash similar-place search"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        from mrhash_qgis.processing.algorithms.build_index import BuildIndexAlgorithm
        from mrhash_qgis.processing.algorithms.export_index import ExportIndexAlgorithm
        from mrhash_qgis.processing.algorithms.map_similar import MapSimilarAlgorithm
        from mrhash_qgis.processing.algorithms.query_at_point import QueryAtPointAlgorithm
        from mrhash_qgis.processing.algorithms.refine import RefineAlgorithm
        from mrhash_qgis.processing.algorithms.train_model import TrainModelAlgorithm

        for algorithm in (TrainModelAlgorithm(), BuildIndexAlgorithm(), QueryAtPointAlgorithm(),
                          RefineAlgorithm(), MapSimilarAlgorithm(), ExportIndexAlgorithm()):
            self.addAlgorithm(algorithm)
