"""Memory vector layers built from query results: hit footprints (rank, distance, source),
styled by Hamming distance, and the query footprint."""

from __future__ import annotations

import json

from qgis.core import (
    QgsFeature,
    QgsFillSymbol,
    QgsGeometry,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsPointXY,
    QgsProject,
    QgsRendererRange,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt import sip
from qgis.PyQt.QtGui import QColor

from mrhash_qgis.core.fields import field

HITS_LAYER_NAME = "MrHash hits"
QUERY_LAYER_NAME = "MrHash query"
HIT_FIELDS = (("rank", "int"), ("distance", "double"), ("source", "string"),
              ("hit_id", "string"), ("thumbnail", "string"), ("query", "int"))
# near -> far; a short, colour-blind-safe ramp
DISTANCE_COLOURS = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")


def geometry_from_geojson(geometry: dict | str) -> QgsGeometry:
    """QgsGeometry of a GeoJSON Polygon/MultiPolygon (dict or text) or of a WKT string."""
    if isinstance(geometry, str):
        text = geometry.strip()
        if not text.startswith("{"):
            return QgsGeometry.fromWkt(text)
        geometry = json.loads(text)
    if geometry.get("type") == "Feature":
        geometry = geometry["geometry"]
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y, *_ in ring]
                                          for ring in coords])
    if kind == "MultiPolygon":
        return QgsGeometry.fromMultiPolygonXY([[[QgsPointXY(x, y) for x, y, *_ in ring]
                                                for ring in polygon] for polygon in coords])
    raise ValueError(f"unsupported footprint geometry: {kind!r}")


def _new_layer(name: str, fields: tuple[tuple[str, str], ...]) -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    layer.dataProvider().addAttributes([field(name, kind) for name, kind in fields])
    layer.updateFields()
    return layer


def hit_features(layer: QgsVectorLayer, hits: list[dict], query: int = 1) -> list[QgsFeature]:
    """One feature per hit; `query` numbers the query the hits answer (layers that keep the
    results of several queries)."""
    features = []
    for hit in hits:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry_from_geojson(hit["footprint"]))
        feature.setAttributes([int(hit["rank"]), float(hit["distance"]), str(hit["path"]),
                               str(hit.get("id", "")), str(hit.get("thumbnail") or ""), query])
        features.append(feature)
    return features


def hits_layer(hits: list[dict], layer: QgsVectorLayer | None = None,
               replace: bool = True, name: str = HITS_LAYER_NAME,
               query: int = 1) -> QgsVectorLayer:
    """Fill `layer` (or a new memory layer) with the hits of query number `query`; `replace`
    drops earlier hits, otherwise they are appended. The style is re-graduated over all
    distances."""
    if layer is None or sip.isdeleted(layer) or not layer.isValid():  # e.g. removed by the user
        layer = _new_layer(name, HIT_FIELDS)
    elif replace:
        layer.dataProvider().truncate()
    layer.dataProvider().addFeatures(hit_features(layer, hits, query))
    layer.updateExtents()
    style_hits(layer)
    return layer


def distance_classes(distances: list[float], max_classes: int) -> list[tuple[int, int]]:
    """Up to `max_classes` inclusive integer ranges of Hamming distance covering min..max,
    as equal as integers allow: [(0, 0), (1, 2), (3, 4)]."""
    low, high = int(min(distances)), int(max(distances))
    classes = min(max_classes, len(set(int(d) for d in distances)))
    span = high - low + 1
    edges = [low + int(i * span / classes + 0.5) for i in range(classes + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(classes)]


def style_hits(layer: QgsVectorLayer) -> None:
    """Graduated outline colour by Hamming distance (integer classes), rank as label."""
    distances = [f["distance"] for f in layer.getFeatures()] or [0]
    classes = distance_classes(distances, len(DISTANCE_COLOURS))
    ranges = []
    for i, (lower, upper) in enumerate(classes):
        colour = DISTANCE_COLOURS[round(i * (len(DISTANCE_COLOURS) - 1) / max(len(classes) - 1, 1))]
        rgb = QColor(colour)
        symbol = QgsFillSymbol.createSimple({
            "color": f"{rgb.red()},{rgb.green()},{rgb.blue()},50", "outline_color": colour,
            "outline_width": "0.8", "outline_width_unit": "MM"})
        label = f"distance {lower}" if lower == upper else f"distance {lower}–{upper}"
        ranges.append(QgsRendererRange(lower - 0.5, upper + 0.5, symbol, label))
    layer.setRenderer(QgsGraduatedSymbolRenderer("distance", ranges))
    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    fmt = labels.format()
    fmt.setColor(QColor("white"))
    buffer = fmt.buffer()
    buffer.setEnabled(True)
    buffer.setColor(QColor("black"))
    fmt.setBuffer(buffer)
    labels.setFormat(fmt)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def query_layer(footprint: dict | str, crs: str = "EPSG:4326",
                name: str = QUERY_LAYER_NAME) -> QgsVectorLayer:
    """One-feature layer of the query footprint (dashed cyan outline)."""
    layer = QgsVectorLayer(f"Polygon?crs={crs}", name, "memory")
    feature = QgsFeature()
    feature.setGeometry(geometry_from_geojson(footprint))
    layer.dataProvider().addFeatures([feature])
    layer.updateExtents()
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "#00e5ff",
                                         "outline_width": "1.2", "outline_style": "dash"})
    layer.renderer().setSymbol(symbol)
    return layer


def replace_in_project(layer: QgsVectorLayer, project: QgsProject | None = None) -> None:
    """Put `layer` in the project, removing older layers of the same name (re-query)."""
    project = project or QgsProject.instance()
    for old in project.mapLayersByName(layer.name()):
        if old.id() != layer.id():
            project.removeMapLayer(old.id())
    if project.mapLayer(layer.id()) is None:
        project.addMapLayer(layer)
