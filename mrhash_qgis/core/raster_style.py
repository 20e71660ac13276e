"""Rasters drawn like the thumbnails: with the bands a thumbnail shows (red, green, blue of
the model), not QGIS's default bands 1, 2, 3, stretched over the same values."""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
)

# on a raster layer this plugin styled like the thumbnails: "cut" (a cumulative cut, before
# the thumbnails' stretch was known) or "limits" (the thumbnails' own values)
STYLED_PROPERTY = "mrhash/styled"


def show_like_thumbnail(layer: QgsRasterLayer, bands: list[int],
                        limits: list[list[float]] | None = None) -> None:
    """Draw a hit's raster with the bands its thumbnail shows, stretched over the same
    values as the thumbnails (the model's band limits) when known, else a 2-98 % cumulative
    cut."""
    if len(bands) != 3 or max(bands) > layer.bandCount():
        return
    layer.setCustomProperty(STYLED_PROPERTY, "limits" if limits else "cut")
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    layer.setRenderer(renderer)
    if not limits or len(limits) != 3:
        layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum,
                                     QgsRasterMinMaxOrigin.CumulativeCut)
        return
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, (low, high), setter in zip(bands, limits, setters, strict=True):
        stretch = QgsContrastEnhancement(provider.dataType(band))
        stretch.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        stretch.setMinimumValue(float(low))
        stretch.setMaximumValue(float(high))
        setter(stretch)


def restyle_hit_rasters(bands: list[int], limits: list[list[float]]) -> None:
    """Rasters this plugin put on the map before the thumbnails' stretch was known (the
    guided start's) drawn like the thumbnails once a result says how."""
    if not limits:
        return
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsRasterLayer) and layer.customProperty(STYLED_PROPERTY) == "cut":
            show_like_thumbnail(layer, bands, limits)
            layer.triggerRepaint()
