"""What the bands of an opened source are (the contract's `band_profiles` fed with what
rasterio reads: descriptions, colour interpretations, wavelengths, data type), and the
mapping of a query raster laid out differently from the index onto the index's bands."""

from __future__ import annotations

from mrhash_contract.band_profiles import BandFacts, BandLayout, identify, map_roles, role_words
from mrhash_contract.protocol import FIX_BANDS

from mrhash.errors import BadInput
from mrhash.raster.sources import Source


def _wavelength_nm(tags: dict[str, str]) -> float | None:
    """A band's centre wavelength from its tags (GDAL's IMAGERY domain in micrometres, or
    ENVI's `wavelength` with `wavelength_units`)."""
    for key, scale in (("CENTRAL_WAVELENGTH_UM", 1000.0), ("wavelength", 1.0)):
        try:
            value = float(tags[key])
        except (KeyError, ValueError):
            continue
        units = tags.get("wavelength_units", "").lower()
        if key == "wavelength" and units.startswith("micro"):
            scale = 1000.0
        return value * scale
    return None


def facts_of(source: Source) -> BandFacts:
    """BandFacts of a source's selected bands (the engine's band names are the files'
    descriptions, or a per-band file's token, else a `bandN` placeholder)."""
    colours: list[str] = []
    waves: list[float | None] = []
    datasets = {f.path: f.dataset for f in source.files}
    for path, index in source.band_files:
        dataset = datasets[path]
        colours.append(dataset.colorinterp[index - 1].name)
        tags = {**dataset.tags(index), **dataset.tags(index, ns="IMAGERY")}
        waves.append(_wavelength_nm(tags))
    dtype = source.dtype
    return BandFacts(source.count, tuple(source.band_names), tuple(colours), tuple(waves),
                     integer=dtype.startswith(("uint", "int")), byte=dtype == "uint8",
                     file_name=source.path.replace("\\", "/").rsplit("/", 1)[-1])


def layout_of(source: Source) -> BandLayout:
    return identify(facts_of(source))


def query_bands(query_source: Source, reference: Source, selected: Source
                ) -> tuple[int, ...] | None:
    """The bands of the query raster (`query_source`, opened with all its bands) to read as
    the index's primary bands, or None when it is laid out like the indexed rasters (read
    with the index's own selection). `reference` is an indexed raster opened with all its
    bands, `selected` the same with the index's selection. Raises BadInput, saying which
    bands the model needs and what the raster has, when its bands cannot be matched."""
    reference_layout = layout_of(reference)
    query_layout = layout_of(query_source)
    if (query_layout.count == reference_layout.count
            and query_layout.roles == reference_layout.roles):
        return None
    positions = {band: i for i, band in enumerate(reference.band_files)}
    needed = tuple(reference_layout.roles[positions[band]] for band in selected.band_files)
    mapped = map_roles(needed, query_layout)
    if mapped is not None:
        return mapped
    raise BandMismatch(needed, query_layout, query_source.path)


class BandMismatch(BadInput):
    """A query raster whose bands cannot be matched to the model's: `needs` are the roles the
    model reads (None: unknown), `band_count` what the raster has; `fix` "bands" tells a
    client to ask which of its bands to read."""

    def __init__(self, needs: tuple[str | None, ...], layout: BandLayout, path: str):
        self.needs = [role or "" for role in needs]
        self.band_count = layout.count
        has = (f"{layout.count} band" if layout.count == 1 else f"{layout.count} bands")
        known = [role for role in layout.roles if role]
        what = f" ({', '.join(known)})" if known else ""
        super().__init__(
            f"the model reads {role_words(needs)}; this raster has {has}{what}, so they cannot "
            "be matched by what its bands say. Say which of its bands to read (bands, in the "
            "model's order), or query a raster with those bands", path=path, fix=FIX_BANDS)
