"""QGIS web raster layers as the engine's remote source descriptions: what GDAL opens for
the same service. An XYZ layer becomes a GDAL WMS driver XML with a TMS service, a WMS layer
a WMS driver XML over the layer's extent, a WMTS layer a `WMTS:` connection string and a WCS
layer a `WCS:` one. The engine pulls them over each primary footprint (its remote.py).

Pure functions of the provider's decoded URI (QgsProviderRegistry.decodeUri), so they are
tested without a network; `layer_source` reads it from a layer."""

from __future__ import annotations

import re
from urllib.parse import urlencode
from xml.sax.saxutils import escape

WEB_PROVIDERS = ("wms", "wcs")  # QGIS's providers of XYZ, WMS, WMTS (wms) and WCS layers
WORLD = 20037508.342789244     # EPSG:3857 half extent: the XYZ tile matrix
DEFAULT_ZOOM = 18
MAX_ZOOM = 22
WMS_PIXELS = 1 << 20           # WMS has no native grid: a virtual raster this wide


def xyz_xml(url: str, zoom: int, bands: int = 3) -> str:
    """The WMS driver's TMS description of an XYZ URL ({x}, {y} or {-y}, {z})."""
    flipped = "{-y}" in url
    template = re.sub(r"\{(-?)([xyz])\}", lambda m: "${" + m.group(2) + "}", url)
    return (
        "<GDAL_WMS>\n"
        f'  <Service name="TMS"><ServerUrl>{escape(template)}</ServerUrl></Service>\n'
        "  <DataWindow>\n"
        f"    <UpperLeftX>-{WORLD}</UpperLeftX><UpperLeftY>{WORLD}</UpperLeftY>\n"
        f"    <LowerRightX>{WORLD}</LowerRightX><LowerRightY>-{WORLD}</LowerRightY>\n"
        f"    <TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>\n"
        f"    <YOrigin>{'bottom' if flipped else 'top'}</YOrigin>\n"
        "  </DataWindow>\n"
        "  <Projection>EPSG:3857</Projection>\n"
        "  <BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>\n"
        f"  <BandsCount>{bands}</BandsCount>\n"
        "</GDAL_WMS>")


def wms_xml(url: str, layers: str, crs: str, image_format: str,
            extent: tuple[float, float, float, float], styles: str = "") -> str:
    """The WMS driver's description of a WMS layer over `extent` (in `crs`)."""
    minx, miny, maxx, maxy = extent
    aspect = (maxy - miny) / max(maxx - minx, 1e-12)
    width = WMS_PIXELS
    height = max(1, round(WMS_PIXELS * aspect))
    return (
        "<GDAL_WMS>\n"
        '  <Service name="WMS">\n'
        "    <Version>1.3.0</Version>\n"
        f"    <ServerUrl>{escape(url)}</ServerUrl>\n"
        f"    <CRS>{escape(crs)}</CRS>\n"
        f"    <ImageFormat>{escape(image_format or 'image/png')}</ImageFormat>\n"
        f"    <Layers>{escape(layers)}</Layers>\n"
        f"    <Styles>{escape(styles)}</Styles>\n"
        "  </Service>\n"
        "  <DataWindow>\n"
        f"    <UpperLeftX>{minx}</UpperLeftX><UpperLeftY>{maxy}</UpperLeftY>\n"
        f"    <LowerRightX>{maxx}</LowerRightX><LowerRightY>{miny}</LowerRightY>\n"
        f"    <SizeX>{width}</SizeX><SizeY>{height}</SizeY>\n"
        "  </DataWindow>\n"
        f"  <Projection>{escape(crs)}</Projection>\n"
        "  <BandsCount>3</BandsCount>\n"
        "</GDAL_WMS>")


def _first(value) -> str:
    """A decoded URI value: QGIS gives lists for repeated keys (layers, styles)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def source_description(provider: str, parts: dict,
                       extent: tuple[float, float, float, float] | None = None,
                       crs: str = "") -> str | None:
    """The engine's description of a web layer from its decoded URI; None when it is not one
    the engine can read (a vector tile layer, an unknown service)."""
    url = _first(parts.get("url"))
    if not url:
        return None
    if provider == "wcs":
        identifier = _first(parts.get("identifier"))
        return f"WCS:{url}{'&' if '?' in url else '?'}{urlencode({'coverage': identifier})}"
    if provider != "wms":
        return None
    if _first(parts.get("type")) == "xyz":
        try:
            zoom = int(_first(parts.get("zmax")) or DEFAULT_ZOOM)
        except ValueError:
            zoom = DEFAULT_ZOOM
        return xyz_xml(url, min(zoom, MAX_ZOOM))
    if parts.get("tileMatrixSet"):
        options = [f"layer={_first(parts.get('layers'))}",
                   f"tilematrixset={_first(parts.get('tileMatrixSet'))}"]
        if _first(parts.get("styles")):
            options.append(f"style={_first(parts.get('styles'))}")
        return "WMTS:" + ",".join([url, *options])
    if extent is None:
        return None
    return wms_xml(url, _first(parts.get("layers")), _first(parts.get("crs")) or crs,
                   _first(parts.get("format")), extent, _first(parts.get("styles")))


def layer_source(layer) -> str | None:
    """The engine's description of a QGIS web raster layer (None for a local one)."""
    from qgis.core import QgsProviderRegistry

    provider = layer.providerType()
    if provider not in WEB_PROVIDERS:
        return None
    parts = QgsProviderRegistry.instance().decodeUri(provider, layer.source())
    box = layer.extent()
    return source_description(provider, parts, (box.xMinimum(), box.yMinimum(),
                                                box.xMaximum(), box.yMaximum()),
                              layer.crs().authid())
