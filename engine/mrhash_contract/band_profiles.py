"""What a raster's bands are, from what its file says: band descriptions (``B04``, ``Red``,
``SR_B5``), GDAL colour interpretations, wavelengths, and — where a file says nothing — the
band layouts of common products by band count and data type (a 13-band ``uint16`` file is a
Sentinel-2 L1C stack in the EuroSAT order, a 3-band ``Byte`` file an RGB orthophoto, ...).

Both sides read bands this way: the plugin proposes the sources of a training (primary = RGB,
auxiliary = the other bands of the same files, grouped) and the engine maps a query raster
laid out differently from the model's primary (an RGB composite, a reordered VRT) onto the
model's bands. Standard library only (the plugin imports it inside QGIS)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# -- roles: what a band measures, in the analyst's words -----------------------------------
COASTAL, BLUE, GREEN, RED, YELLOW = "coastal", "blue", "green", "red", "yellow"
REDEDGE1, REDEDGE2, REDEDGE3 = "red-edge 1", "red-edge 2", "red-edge 3"
NIR, NIR_NARROW, WATER_VAPOUR, CIRRUS = "near infrared", "narrow NIR", "water vapour", "cirrus"
SWIR1, SWIR2, PAN, THERMAL1, THERMAL2 = "SWIR 1", "SWIR 2", "panchromatic", "thermal 1", \
    "thermal 2"
GREEN_I, ALPHA = "green I", "alpha"
RGB = (RED, GREEN, BLUE)

# auxiliary groups of the bands left when the primary is RGB (the README's --aux groups):
# name -> roles, in the order the engine reads them
AUX_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nir", (NIR,)),
    ("rededge_swir", (REDEDGE1, REDEDGE2, REDEDGE3, NIR_NARROW, SWIR1, SWIR2)),
    ("atmosphere", (COASTAL, WATER_VAPOUR, CIRRUS)),
    ("other", (YELLOW, GREEN_I, PAN, THERMAL1, THERMAL2)),
)

# band names of products (upper case, without separators): role per name
_SENTINEL2 = {"B01": COASTAL, "B02": BLUE, "B03": GREEN, "B04": RED, "B05": REDEDGE1,
              "B06": REDEDGE2, "B07": REDEDGE3, "B08": NIR, "B8A": NIR_NARROW,
              "B09": WATER_VAPOUR, "B10": CIRRUS, "B11": SWIR1, "B12": SWIR2}
_LANDSAT89 = {"B1": COASTAL, "B2": BLUE, "B3": GREEN, "B4": RED, "B5": NIR, "B6": SWIR1,
              "B7": SWIR2, "B8": PAN, "B9": CIRRUS, "B10": THERMAL1, "B11": THERMAL2}
_WORDS = {"RED": RED, "R": RED, "GREEN": GREEN, "G": GREEN, "BLUE": BLUE, "B": BLUE,
          "NIR": NIR, "NEARINFRARED": NIR, "INFRARED": NIR, "N": NIR, "COASTAL": COASTAL,
          "COASTALAEROSOL": COASTAL, "YELLOW": YELLOW, "REDEDGE": REDEDGE1, "GREENI": GREEN_I,
          "PAN": PAN, "PANCHROMATIC": PAN, "SWIR1": SWIR1, "SWIR2": SWIR2, "SWIR": SWIR1,
          "CIRRUS": CIRRUS, "WATERVAPOUR": WATER_VAPOUR, "WATERVAPOR": WATER_VAPOUR,
          "ALPHA": ALPHA}
# GDAL colour interpretations (their names as GDAL and QGIS print them)
_COLOURS = {"RED": RED, "GREEN": GREEN, "BLUE": BLUE, "ALPHA": ALPHA, "REDBAND": RED,
            "GREENBAND": GREEN, "BLUEBAND": BLUE, "ALPHABAND": ALPHA}
# centre wavelengths (nm) -> role, for files that give them (ENVI, GDAL's IMAGERY domain)
_WAVELENGTHS = ((400, 455, COASTAL), (455, 515, BLUE), (515, 580, GREEN), (580, 620, YELLOW),
                (620, 690, RED), (690, 715, REDEDGE1), (715, 760, REDEDGE2),
                (760, 800, REDEDGE3), (800, 850, NIR), (850, 890, NIR_NARROW),
                (890, 1000, WATER_VAPOUR), (1300, 1450, CIRRUS), (1500, 1750, SWIR1),
                (2000, 2400, SWIR2))

# layouts of files that name no band, by (band count, integer data?) -> (product, roles)
_BY_COUNT: dict[tuple[int, bool], tuple[str, tuple[str | None, ...]]] = {
    (13, True): ("Sentinel-2 L1C, 13 bands (EuroSAT order)",
                 (COASTAL, BLUE, GREEN, RED, REDEDGE1, REDEDGE2, REDEDGE3, NIR, WATER_VAPOUR,
                  CIRRUS, SWIR1, SWIR2, NIR_NARROW)),
    (12, True): ("Sentinel-2 L2A, 12 bands",
                 (COASTAL, BLUE, GREEN, RED, REDEDGE1, REDEDGE2, REDEDGE3, NIR, NIR_NARROW,
                  WATER_VAPOUR, SWIR1, SWIR2)),
    (7, True): ("Landsat 8/9 surface reflectance, 7 bands",
                (COASTAL, BLUE, GREEN, RED, NIR, SWIR1, SWIR2)),
    # three bands that name none are a true-colour composite far more often than not
    (3, True): ("RGB", (RED, GREEN, BLUE)),
    (3, False): ("RGB", (RED, GREEN, BLUE)),
    (8, True): ("PlanetScope SuperDove, 8 bands",
                (COASTAL, BLUE, GREEN_I, GREEN, YELLOW, RED, REDEDGE1, NIR)),
}


@dataclass(frozen=True)
class BandFacts:
    """What a raster file says about its bands (one entry per band, 1-based order)."""

    count: int
    descriptions: Sequence[str] = ()    # "" where a band has none
    colours: Sequence[str] = ()         # GDAL colour interpretation names ("Red", "Gray", ...)
    wavelengths_nm: Sequence[float | None] = ()
    integer: bool = True                # integer data (uint8/uint16/...): reflectance counts
    byte: bool = False                  # 8-bit data: a picture, not a sensor's counts
    file_name: str = ""


@dataclass(frozen=True)
class BandLayout:
    """The role of each band (None: unknown), the product it looks like and how that was
    known (`assumed`: from the band count alone, which the user should check)."""

    roles: tuple[str | None, ...]
    product: str = ""
    assumed: bool = False

    @property
    def count(self) -> int:
        return len(self.roles)

    def band_of(self, role: str) -> int | None:
        """The 1-based band holding `role`, or None."""
        return self.roles.index(role) + 1 if role in self.roles else None

    def describe(self, bands: Sequence[int]) -> str:
        """"4 (red), 3 (green), 2 (blue)": bands with their roles, for messages."""
        return ", ".join(f"{b} ({self.roles[b - 1]})" if 0 < b <= self.count
                         and self.roles[b - 1] else str(b) for b in bands)


@dataclass(frozen=True)
class SourceProposal:
    """A training's sources made of one file layout: the primary's bands (RGB where the
    file has it) and auxiliary groups of the other bands of the same files."""

    primary: tuple[int, ...]
    auxiliary: tuple[tuple[str, tuple[int, ...]], ...] = field(default_factory=tuple)
    layout: BandLayout | None = None

    def primary_roles(self) -> tuple[str | None, ...]:
        return tuple(self.layout.roles[b - 1] if self.layout else None for b in self.primary)


def _token(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _role_of_name(name: str, landsat: bool) -> str | None:
    token = _token(name)
    if not token:
        return None
    for prefix in ("SR", "ST", "TOA"):  # Landsat Collection 2: SR_B4, ST_B10
        if token.startswith(prefix + "B"):
            token, landsat = token[len(prefix):], True
    if token in _WORDS:
        return _WORDS[token]
    match = re.fullmatch(r"B0*(\d{1,2})(A?)", token)
    if match is None:
        # a file or description ending in the band name: T31TCJ_20200101_B04, LC09_..._SR_B4
        match = re.search(r"(?:^|[^A-Z0-9])B(0?\d{1,2}A?)$", name.upper())
        if match is None:
            return None
        token = "B" + match.group(1)
        match = re.fullmatch(r"B0*(\d{1,2})(A?)", token)
        if match is None:
            return None
    number, narrow = int(match.group(1)), match.group(2)
    if narrow:
        return NIR_NARROW if number == 8 else None
    if landsat:
        return _LANDSAT89.get(f"B{number}")
    return _SENTINEL2.get(f"B{number:02d}")


def _looks_landsat(names: Sequence[str]) -> bool:
    text = " ".join(names).upper()
    return bool(re.search(r"\b(SR|ST)_B\d", text) or re.search(r"\bL[COTE]0[89]_", text))


def identify(facts: BandFacts) -> BandLayout:
    """The layout of a file's bands, from the most to the least certain evidence: band
    names, then wavelengths, then colour interpretations, then a product of that band count;
    unknown bands stay None."""
    count = facts.count
    # "band3", "Band 3": placeholders GDAL, QGIS or the engine print for a band with no name
    names = ["" if re.fullmatch(r"band\s*\d+", n.strip(), re.IGNORECASE) else n
             for n in facts.descriptions] + [""] * (count - len(facts.descriptions))
    if count == 1 and not names[0] and facts.file_name:
        names[0] = facts.file_name.rsplit(".", 1)[0]  # a per-band file names its band
    landsat = _looks_landsat([*names, facts.file_name])
    roles: list[str | None] = [_role_of_name(n, landsat) if n else None for n in names[:count]]
    product = "Landsat 8/9" if landsat and any(roles) else ""
    waves = list(facts.wavelengths_nm) + [None] * (count - len(facts.wavelengths_nm))
    for i, wave in enumerate(waves[:count]):
        if roles[i] is None and wave:
            nm = wave * 1000 if wave < 10 else wave  # micrometres in some files
            roles[i] = next((role for low, high, role in _WAVELENGTHS if low <= nm < high), None)
    colours = list(facts.colours) + [""] * (count - len(facts.colours))
    for i, colour in enumerate(colours[:count]):
        if roles[i] is None:
            roles[i] = _COLOURS.get(_token(colour))
    if any(roles):
        return BandLayout(tuple(roles), product)
    if facts.byte and count in (3, 4):
        return BandLayout((RED, GREEN, BLUE, ALPHA)[:count] if count == 3 or
                          _token(colours[3]) == "ALPHA" else (RED, GREEN, BLUE, NIR),
                          "RGB picture" if count == 3 else "RGB + NIR (NAIP order)", True)
    known = _BY_COUNT.get((count, facts.integer))
    if known is not None:
        return BandLayout(known[1], known[0], True)
    return BandLayout((None,) * count)


def propose(layout: BandLayout) -> SourceProposal:
    """Primary = the red, green and blue bands where the file has them (else its first three
    bands, or all of fewer); auxiliary = the other bands of the same files in AUX_GROUPS
    (bands of unknown role in one group "other"); alpha is never a source."""
    rgb = [layout.band_of(role) for role in RGB]
    if all(rgb):
        primary = tuple(b for b in rgb if b)
    else:
        primary = tuple(b for b in range(1, min(layout.count, 3) + 1)
                        if layout.roles[b - 1] != ALPHA)
    groups: list[tuple[str, tuple[int, ...]]] = []
    for name, roles in AUX_GROUPS:
        bands = tuple(b for b in (layout.band_of(r) for r in roles) if b and b not in primary)
        if name == "other":
            bands += tuple(b for b in range(1, layout.count + 1)
                           if layout.roles[b - 1] is None and b not in primary)
        if bands:
            groups.append((name, bands))
    return SourceProposal(primary, tuple(groups), layout)


def map_roles(needed: Sequence[str | None], layout: BandLayout) -> tuple[int, ...] | None:
    """The bands of `layout` that hold the `needed` roles, in their order; None when one is
    unknown or missing."""
    bands = [layout.band_of(role) if role else None for role in needed]
    return tuple(b for b in bands if b) if all(bands) else None


def role_words(roles: Sequence[str | None]) -> str:
    """"red, green and blue" (unknown roles as "band N of the model")."""
    words = [role or f"band {i}" for i, role in enumerate(roles, start=1)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
