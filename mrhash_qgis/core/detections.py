"""The layers of a map of every place like the examples (the engine's `map` GeoPackage: its
`areas` and `tiles` tables), styled (a marked tile outlined in its mark's colour), and
filtered live by a confidence threshold without asking the engine again: tiles by their
score, areas by their best tile's score. Which detections to show the analyst for checking
(the likeliest, or the most doubtful: nearest the threshold), and their marks, written into
the tiles layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsAggregateCalculator,
    QgsCentroidFillSymbolLayer,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsMarkerSymbol,
    QgsProject,
    QgsRectangle,
    QgsRuleBasedRenderer,
    QgsVectorLayer,
    QgsVectorSimplifyMethod,
)

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT
from mrhash_qgis.core.i18n import tr

# layer names are how the dock finds its layers in a project: never translated
AREAS_LAYER_NAME = "MrHash detections"
TILES_LAYER_NAME = "MrHash detected tiles"
LIKELIEST, DOUBTFUL = "likeliest", "doubtful"  # the orders detections are checked in
TILE_STYLES = (  # (filter, fill and outline) of the tiles layer's rules
    (f"\"mark\" = '{RELEVANT}'", {"color": "26,152,80,60", "outline_color": "#1a9850",
                                   "outline_width": "0.8"}),
    (f"\"mark\" = '{IRRELEVANT}'", {"color": "215,48,39,60", "outline_color": "#d73027",
                                     "outline_width": "0.8"}),
    ("ELSE", {"style": "no", "outline_color": "#fdae6b", "outline_width": "0.2"}),
)


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
        areas.renderer().setSymbol(area_symbol())
        keep_small = QgsVectorSimplifyMethod()  # an area below a pixel still gets its dot
        keep_small.setSimplifyHints(QgsVectorSimplifyMethod.SimplifyHint.NoSimplification)
        areas.setSimplifyMethod(keep_small)
        tiles.setRenderer(tile_renderer())
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

    def extent(self) -> QgsRectangle:
        """The extent of the areas the filter keeps (EPSG:4326), from their geometries: QGIS
        3.22 reports an empty extent for a filtered layer whose GeoPackage holds two
        layers open at once."""
        extent = QgsRectangle()
        extent.setMinimal()
        request = QgsFeatureRequest().setNoAttributes()
        for feature in self.areas.getFeatures(request):
            extent.combineExtentWith(feature.geometry().boundingBox())
        return extent

    def every_tile(self) -> QgsVectorLayer:
        """The tiles layer without the confidence filter (every tile the map holds: those
        above its floor and every marked one)."""
        every = QgsVectorLayer(self.tiles.source(), TILES_LAYER_NAME, self.tiles.providerType())
        every.setSubsetString("")  # the source carries the filter
        return every

    def to_check(self, threshold: float, order: str, limit: int,
                 skip: set[int]) -> list[tuple[int, float]]:
        """Up to `limit` (tile id, score) for the analyst to check, none of `skip` (marked
        already): LIKELIEST, the detections at `threshold` best first; DOUBTFUL, the tiles
        whose score is nearest `threshold` on either side (a wrong detection or a miss is
        likeliest there). Read without the layer's filter: a doubtful tile may be below it."""
        every = self.every_tile()
        request = QgsFeatureRequest().setSubsetOfAttributes(["id", "score"], every.fields())
        request.setFlags(QgsFeatureRequest.Flag.NoGeometry)
        if order == LIKELIEST:
            request.setFilterExpression(f'"score" >= {threshold:.4f}')
        scored = [(int(f["id"]), float(f["score"])) for f in every.getFeatures(request)
                  if int(f["id"]) not in skip]
        key = (lambda t: (-t[1], t[0])) if order == LIKELIEST else (
            lambda t: (abs(t[1] - threshold), t[0]))
        return sorted(scored, key=key)[:limit]

    def set_mark(self, tile_id: int, mark: str) -> bool:
        """`mark` (relevant, irrelevant or "" to clear) on tile `tile_id` of the tiles layer,
        in its GeoPackage (the engine writes each tile with its id as fid); False when the map
        does not hold that tile."""
        field = self.tiles.fields().indexOf("mark")
        every = self.every_tile()
        if field < 0 or not every.getFeature(int(tile_id)).isValid():
            return False
        self.tiles.dataProvider().changeAttributeValues({int(tile_id): {field: mark or None}})
        self.tiles.triggerRepaint()
        return True

    def add_to(self, project: QgsProject) -> None:
        """In the project (an earlier map's layers replaced), areas over their tiles."""
        for name in (AREAS_LAYER_NAME, TILES_LAYER_NAME):
            for old in project.mapLayersByName(name):
                project.removeMapLayer(old.id())
        project.addMapLayer(self.tiles)
        project.addMapLayer(self.areas)


def area_symbol() -> QgsFillSymbol:
    """An area filled orange, with a dot at its centre that stays visible when the map is
    zoomed out to an archive where each area is smaller than a pixel."""
    symbol = QgsFillSymbol.createSimple(
        {"color": "255,127,0,70", "outline_color": "#d94801", "outline_width": "0.6"})
    dot = QgsCentroidFillSymbolLayer()
    dot.setSubSymbol(QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "#d94801", "outline_color": "white", "size": "2.2"}))
    symbol.appendSymbolLayer(dot)
    return symbol


def tile_renderer() -> QgsRuleBasedRenderer:
    """Tiles outlined faintly, a tile marked relevant in green and one marked not in red."""
    root = QgsRuleBasedRenderer.Rule(None)
    for expression, style in TILE_STYLES:
        rule = QgsRuleBasedRenderer.Rule(QgsFillSymbol.createSimple(style))
        if expression == "ELSE":
            rule.setIsElse(True)
        else:
            rule.setFilterExpression(expression)
        root.appendChild(rule)
    return QgsRuleBasedRenderer(root)


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
