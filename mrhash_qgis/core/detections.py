"""The layers of a map of every place like the examples (the engine's `map` GeoPackage: its
`areas` and `tiles` tables), styled, and filtered live by a confidence threshold without
asking the engine again: tiles by their score, areas by their best tile's score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsAggregateCalculator,
    QgsFillSymbol,
    QgsProject,
    QgsVectorLayer,
)

from mrhash_qgis.core.i18n import tr

# layer names are how the dock finds its layers in a project: never translated
AREAS_LAYER_NAME = "MrHash detections"
TILES_LAYER_NAME = "MrHash detected tiles"


@dataclass
class Detections:
    """The two layers of one map and the counts at a threshold."""

    areas: QgsVectorLayer
    tiles: QgsVectorLayer

    @classmethod
    def open(cls, gpkg: str | Path) -> Detections:
        """The map's layers from its GeoPackage; OSError when it cannot be read."""
        areas = QgsVectorLayer(f"{gpkg}|layername=areas", AREAS_LAYER_NAME, "ogr")
        tiles = QgsVectorLayer(f"{gpkg}|layername=tiles", TILES_LAYER_NAME, "ogr")
        if not (areas.isValid() and tiles.isValid()):
            raise OSError(tr("{path}: cannot read the map of detections").format(path=gpkg))
        areas.renderer().setSymbol(QgsFillSymbol.createSimple(
            {"color": "255,127,0,70", "outline_color": "#d94801", "outline_width": "0.6"}))
        tiles.renderer().setSymbol(QgsFillSymbol.createSimple(
            {"style": "no", "outline_color": "#fdae6b", "outline_width": "0.2"}))
        return cls(areas, tiles)

    def filter(self, threshold: float) -> None:
        """Keep what scores at least `threshold` (0..1) on the map, live."""
        value = f"{max(0.0, min(1.0, threshold)):.4f}"
        self.tiles.setSubsetString(f'"score" >= {value}')
        self.areas.setSubsetString(f'"max_score" >= {value}')
        for layer in (self.tiles, self.areas):
            layer.triggerRepaint()

    def counts(self) -> tuple[int, int, float]:
        """(tiles, areas, km²) of what the filter keeps (counted, not the provider's
        featureCount, which a filtered GeoPackage layer leaves unknown)."""
        km2, ok = self.areas.aggregate(QgsAggregateCalculator.Aggregate.Sum, "area_km2")
        return (kept(self.tiles), kept(self.areas), float(km2) if ok and km2 else 0.0)

    def add_to(self, project: QgsProject) -> None:
        """In the project (an earlier map's layers replaced), areas over their tiles."""
        for name in (AREAS_LAYER_NAME, TILES_LAYER_NAME):
            for old in project.mapLayersByName(name):
                project.removeMapLayer(old.id())
        project.addMapLayer(self.tiles)
        project.addMapLayer(self.areas)


def kept(layer: QgsVectorLayer) -> int:
    """The features of `layer` its filter keeps."""
    count, ok = layer.aggregate(QgsAggregateCalculator.Aggregate.Count, "path")
    return int(count) if ok and count else 0


def counts_words(n_tiles: int, n_areas: int, km2: float, threshold: float) -> str:
    """"412 tiles, 38 areas, 26.4 km² at 0.70" ("1 tile, 1 area" for one)."""
    tiles = tr("1 tile") if n_tiles == 1 else tr("{n:,} tiles").format(n=n_tiles)
    areas = tr("1 area") if n_areas == 1 else tr("{n:,} areas").format(n=n_areas)
    return tr("{tiles}, {areas}, {km2} km² at {threshold}").format(
        tiles=tiles, areas=areas, km2=f"{km2:,.1f}", threshold=f"{threshold:.2f}")
