"""Vector layers built from query results: hit footprints (rank, distance, score, source, the
analyst's mark), styled by Hamming distance, and the query footprints. In a `ResultsStore`
(a GeoPackage, core/results.py) for the dock, so results reload with the project; in memory
for templates and Processing sinks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

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

from mrhash_qgis.contract.protocol import Hit, QueryPlace
from mrhash_qgis.core.fields import field
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path

# layer names are how the dock finds its layers in a project: never translated
HITS_LAYER_NAME = "MrHash hits"
QUERY_LAYER_NAME = "MrHash query"
HIT_FIELDS = (("rank", "int"), ("distance", "double"), ("source", "string"),
              ("hit_id", "string"), ("thumbnail", "string"), ("query", "int"),
              ("score", "double"), ("mark", "string"))
QUERY_FIELDS = (("query", "int"), ("kind", "string"), ("params", "string"))
# near -> far; a short, colour-blind-safe ramp
DISTANCE_COLOURS = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")


@dataclass
class ShownHit(Hit):
    """A hit as the dock shows it: with the analyst's mark (relevant, irrelevant or ""), or
    (`is_query`) the place queried itself, shown first with its footprint and picture."""

    mark: str = ""
    is_query: bool = False

    @classmethod
    def of(cls, hit: Hit, **changes) -> ShownHit:
        """`hit` (a Hit of a result, or a ShownHit) with `changes` (rank, score, mark)."""
        return cls(**{**vars(hit), **changes})

    @classmethod
    def query(cls, place: QueryPlace) -> ShownHit:
        return cls(0, place.tile or 0, 0, 0.0, place.path or "", place.footprint or {},
                   thumbnail=place.thumbnail, is_query=True)


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


def clear(layer: QgsVectorLayer) -> None:
    """Drop every feature (a new query replaces the results); OSError when the file refuses,
    rather than new hits silently appended to the old ones."""
    if not layer.dataProvider().truncate():
        raise OSError(tr("{source}: cannot replace the earlier results").format(
            source=layer_path(layer)))


def set_attributes(feature: QgsFeature, values: dict) -> None:
    """Set attributes by name: a GeoPackage layer has its `fid` before the fields."""
    for name, value in values.items():
        feature.setAttribute(name, value)


def hit_features(layer: QgsVectorLayer, hits: Sequence[Hit], query: int = 1
                 ) -> list[QgsFeature]:
    """One feature per hit (with its mark when shown); `query` numbers the query the hits
    answer (layers that keep the results of several queries)."""
    features = []
    for hit in hits:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry_from_geojson(hit.footprint))
        set_attributes(feature, {
            "rank": hit.rank, "distance": float(hit.distance), "source": hit.path,
            "hit_id": str(hit.id), "thumbnail": hit.thumbnail or "", "query": query,
            "score": hit.score, "mark": hit.mark if isinstance(hit, ShownHit) else ""})
        features.append(feature)
    return features


def usable(layer: QgsVectorLayer | None) -> bool:
    """False for a layer that is gone (removed by the user, its file deleted)."""
    return layer is not None and not sip.isdeleted(layer) and layer.isValid()


def hits_layer(hits: Sequence[Hit], layer: QgsVectorLayer | None = None,
               replace: bool = True, name: str = HITS_LAYER_NAME,
               query: int = 1, store=None) -> QgsVectorLayer:
    """Fill `layer` (else the hits layer of `store`, a ResultsStore, else a new memory layer)
    with the hits of query number `query`; `replace` drops earlier hits, otherwise they are
    appended. The style is re-graduated over all distances."""
    if not usable(layer):
        layer = (store.layer("hits", name, HIT_FIELDS) if store is not None
                 else _new_layer(name, HIT_FIELDS))
        if replace:
            clear(layer)
    elif replace:
        clear(layer)
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
        label = (tr("distance {d}").format(d=lower) if lower == upper
                 else tr("distance {low}–{high}").format(low=lower, high=upper))
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


def query_layer(footprints: list[dict | str], store=None, replace: bool = True,
                query: int = 1, kind: str = "query", params: dict | None = None,
                name: str = QUERY_LAYER_NAME, layer: QgsVectorLayer | None = None
                ) -> QgsVectorLayer:
    """Layer of the query footprints (EPSG:4326, dashed cyan outline): `layer` updated in
    place (the next query of a search: no layer recreated, nothing swapped in the project),
    else the `queries` table of `store`, else a memory layer; replaced, or appended to."""
    if usable(layer):
        if replace:
            clear(layer)
    elif store is not None:
        layer = store.layer("queries", name, QUERY_FIELDS)
        if replace:
            clear(layer)
    else:
        layer = _new_layer(name, QUERY_FIELDS)
    features = []
    for footprint in footprints:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry_from_geojson(footprint))
        set_attributes(feature, {"query": query, "kind": kind,
                                 "params": json.dumps(params or {})})
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "#00e5ff",
                                         "outline_width": "1.2", "outline_style": "dash"})
    layer.renderer().setSymbol(symbol)
    layer.triggerRepaint()
    return layer


def replace_in_project(layer: QgsVectorLayer, project: QgsProject | None = None) -> None:
    """Put `layer` in the project, removing older layers of the same name (re-query)."""
    project = project or QgsProject.instance()
    for old in project.mapLayersByName(layer.name()):
        if old.id() != layer.id():
            project.removeMapLayer(old.id())
    if project.mapLayer(layer.id()) is None:
        project.addMapLayer(layer)


def hits_from_layer(layer: QgsVectorLayer, query: int | None = None) -> list[ShownHit]:
    """The hits of a results layer (of query number `query`, default the latest) with their
    marks, ranked: what the dock shows again when a project is reopened."""
    features = list(layer.getFeatures())
    if not features:
        return []
    if query is None:
        query = max(int(f["query"] or 0) for f in features)
    hits = []
    for feature in features:
        if int(feature["query"] or 0) != query:
            continue
        score, thumbnail, mark = feature["score"], feature["thumbnail"], feature["mark"]
        hits.append(ShownHit(
            int(feature["rank"]), int(feature["hit_id"]), int(feature["distance"]),
            # NULL attributes read as QVariant objects: keep only real values
            float(score) if isinstance(score, (int, float)) else 0.0, str(feature["source"]),
            json.loads(feature.geometry().asJson()),
            thumbnail=thumbnail if isinstance(thumbnail, str) and thumbnail else None,
            mark=mark if isinstance(mark, str) else ""))
    return sorted(hits, key=lambda hit: hit.rank)


def set_hit_mark(layer: QgsVectorLayer, hit_id, mark: str) -> None:
    """Record the analyst's mark on every feature of hit `hit_id` (saved with the layer)."""
    column = layer.fields().indexOf("mark")
    if column < 0:
        return
    changes = {f.id(): {column: mark} for f in layer.getFeatures()
               if str(f["hit_id"]) == str(hit_id)}
    if changes:
        layer.dataProvider().changeAttributeValues(changes)
        layer.triggerRepaint()
