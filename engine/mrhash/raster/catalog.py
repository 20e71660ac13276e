"""`mrhash scan`: a catalogue of the raster sources in a folder. Per-band files of one product
are one source; every file is checked on its own first, so a bad file is listed under `errors`
with the reason and never stops the rest of the folder."""

from __future__ import annotations

from pathlib import Path

import shapely

from mrhash.errors import MrHashError
from mrhash.jobs import JobControl
from mrhash.raster.bandinfo import layout_of
from mrhash.raster.sources import (
    Source,
    SourceSpec,
    band_token,
    check_raster,
    list_rasters,
    open_source,
    source_groups,
)

WGS84 = "EPSG:4326"


def describe_source(source: Source, name: str) -> dict:
    """Catalogue entry of an opened source (JSON-ready)."""
    native = source.footprint
    outline = native.geometry_in(WGS84)
    return {
        "name": name,
        "paths": list(source.spec.paths),
        "crs": source.crs,
        "res": list(source.res),
        "width": source.width,
        "height": source.height,
        "count": source.count,
        "bands": list(source.band_names),
        "band_res": [list(r) for r in source.band_resolutions],
        "dtype": source.dtype,
        # what the bands are (contract band_profiles): the plugin proposes the sources of a
        # training from it
        "layout": _layout(source),
        "nodata": source.nodata,
        "footprint": {"crs": native.crs, "bounds": list(native.bounds),
                      "wkt": native.polygon().wkt},
        "footprint_wgs84": {"geojson": shapely.geometry.mapping(outline),
                            "wkt": outline.wkt, "bounds": list(outline.bounds)},
    }


def _layout(source: Source) -> dict:
    layout = layout_of(source)
    return {"roles": list(layout.roles), "product": layout.product, "assumed": layout.assumed}


def _source_name(paths: tuple[str, ...]) -> str:
    stem = Path(paths[0]).stem
    if len(paths) > 1:
        token = band_token(paths[0]) or ""
        stem = stem[: len(stem) - len(token)].rstrip("_-.") or stem
    return stem


def scan(folder: str | Path, job: JobControl | None = None) -> dict:
    """Describe every raster source under `folder` (recursively):
    {folder, sources: [...], errors: [{path, error}]}."""
    listing = list_rasters(folder)
    root, files = Path(listing.root), listing.files
    errors: list[dict] = list(listing.problems)
    good: list[str] = []
    for done, path in enumerate(files):
        if job:
            job.check()
            job.report(done, len(files), f"checking {Path(path).name}")
        try:
            check_raster(path).close()
            good.append(path)
        except MrHashError as error:
            errors.append({"path": path, "error": error.message})
    sources = []
    for paths in source_groups(good):
        try:
            with open_source(SourceSpec(name=_source_name(paths), paths=paths)) as source:
                sources.append(describe_source(source, source.spec.name))
        except MrHashError as error:
            errors.append({"path": paths[0], "error": error.message})
    if job:
        job.report(len(files), len(files), "scanned", force=True)
    return {"folder": str(root), "n_files": len(files), "sources": sources, "errors": errors}
