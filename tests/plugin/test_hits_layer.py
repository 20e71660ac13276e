"""The hits layer's style: integer Hamming-distance classes, green = nearest."""

from __future__ import annotations

from mrhash_qgis.contract.protocol import Hit
from mrhash_qgis.core.hits_layer import DISTANCE_COLOURS, distance_classes, hits_layer


def test_distance_classes_are_integer_ranges_covering_every_distance():
    assert distance_classes([0, 1], 5) == [(0, 0), (1, 1)]
    assert distance_classes([3], 5) == [(3, 3)]
    assert distance_classes([0, 4, 7, 8, 8], 5) == [(0, 1), (2, 4), (5, 6), (7, 8)]
    wide = distance_classes(list(range(0, 30, 3)), 5)
    assert len(wide) == 5 and wide[0][0] == 0 and wide[-1][1] == 27
    assert all(b[0] == a[1] + 1 for a, b in zip(wide, wide[1:], strict=False))  # no gap, no overlap


def test_hits_layer_legend_names_distances():
    square = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}
    hits = [Hit(r, r, d, 0.5, f"/data/t{r}.tif", square)
            for r, d in enumerate((0, 2, 2, 5), start=1)]
    layer = hits_layer(hits)
    ranges = layer.renderer().ranges()
    assert [r.label() for r in ranges] == ["distance 0–1", "distance 2–3", "distance 4–5"]
    assert ranges[0].symbol().color().name() == DISTANCE_COLOURS[0]
    features = {f["rank"]: f for f in layer.getFeatures()}
    assert features[4]["distance"] == 5
