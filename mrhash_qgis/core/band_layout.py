"""What a raster layer's bands are, read through PyQGIS (band descriptions, colour
interpretations, data type) into the contract's `band_profiles`, and the band choices the
analyst makes for a layer (remembered on the layer, so the dock asks once)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsRasterLayer

from mrhash_qgis.contract.band_profiles import BandFacts, BandLayout, identify
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.layer_uri import layer_path

# a layer's bands to read as the model's (e.g. "1,1,1"), kept in the project with the layer
QUERY_BANDS_PROPERTY = "mrhash/query_bands"
_BYTE = (Qgis.DataType.Byte,)
_FLOAT = (Qgis.DataType.Float32, Qgis.DataType.Float64)


def band_description(layer: QgsRasterLayer, band: int) -> str:
    """The file's description of `band` ("" when it has none): QGIS 3.22 shows it only in
    the display name, "Band 04: B04"."""
    name = layer.dataProvider().displayBandName(band)
    return name.split(": ", 1)[1].strip() if ": " in name else ""


def layer_facts(layer: QgsRasterLayer) -> BandFacts:
    provider = layer.dataProvider()
    count = layer.bandCount()
    data_type = provider.dataType(1) if count else Qgis.DataType.UnknownDataType
    return BandFacts(count, tuple(band_description(layer, b) for b in range(1, count + 1)),
                     tuple(provider.colorInterpretationName(b) for b in range(1, count + 1)),
                     integer=data_type not in _FLOAT, byte=data_type in _BYTE,
                     file_name=Path(layer_path(layer)).name)


def layer_layout(layer: QgsRasterLayer) -> BandLayout:
    return identify(layer_facts(layer))


def band_label(layout: BandLayout, band: int, description: str = "") -> str:
    """"Band 4 · red (B04)" for lists and messages."""
    role = layout.roles[band - 1] if band <= layout.count else None
    text = tr("Band {n}").format(n=band)
    if role:
        text += f" · {role}"
    if description and description != role:
        text += f" ({description})"
    return text


def remembered_bands(layer: QgsRasterLayer) -> list[int] | None:
    text = str(layer.customProperty(QUERY_BANDS_PROPERTY, "") or "")
    try:
        bands = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
    return bands if bands and all(1 <= b <= layer.bandCount() for b in bands) else None


def remember_bands(layer: QgsRasterLayer, bands: list[int]) -> None:
    layer.setCustomProperty(QUERY_BANDS_PROPERTY, ",".join(map(str, bands)))
