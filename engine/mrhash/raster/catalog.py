"""`mrhash scan`: a catalogue of the raster sources in a folder. Per-band files of one product
are one source; every file is checked on its own first, so a bad file is listed under `errors`
with the reason and never stops the rest of the folder."""

from __future__ import annotations

from pathlib import Path

import shapely
from mrhash_contract.protocol import FileProblem, ScannedLayout, ScannedSource, ScanResult

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


def describe_source(source: Source, name: str) -> ScannedSource:
    """Catalogue entry of an opened source."""
    native = source.footprint
    outline = native.geometry_in(WGS84)
    # what the bands are (contract band_profiles): the plugin proposes the sources of a
    # training from it
    layout = layout_of(source)
    return ScannedSource(
        name, list(source.spec.paths), source.crs, [float(r) for r in source.res],
        source.width, source.height, source.count, list(source.band_names),
        [[float(v) for v in r] for r in source.band_resolutions], str(source.dtype),
        source.nodata,
        {"crs": native.crs, "bounds": list(native.bounds), "wkt": native.polygon().wkt},
        {"geojson": shapely.geometry.mapping(outline), "wkt": outline.wkt,
         "bounds": list(outline.bounds)},
        ScannedLayout(list(layout.roles), layout.product, layout.assumed))


def _source_name(paths: tuple[str, ...]) -> str:
    stem = Path(paths[0]).stem
    if len(paths) > 1:
        token = band_token(paths[0]) or ""
        stem = stem[: len(stem) - len(token)].rstrip("_-.") or stem
    return stem


def scan(folder: str | Path, job: JobControl | None = None) -> dict:
    """Describe every raster source under `folder` (recursively): the ScanResult as the
    worker sends it, {folder, n_files, sources: [...], errors: [{path, error}]}."""
    listing = list_rasters(folder)
    root, files = Path(listing.root), listing.files
    errors = [FileProblem(**problem) for problem in listing.problems]
    good: list[str] = []
    for done, path in enumerate(files):
        if job:
            job.check()
            job.report(done, len(files), f"checking {Path(path).name}")
        try:
            check_raster(path).close()
            good.append(path)
        except MrHashError as error:
            errors.append(FileProblem(path, error.message))
    sources = []
    for paths in source_groups(good):
        try:
            with open_source(SourceSpec(name=_source_name(paths), paths=paths)) as source:
                sources.append(describe_source(source, source.spec.name))
        except MrHashError as error:
            errors.append(FileProblem(paths[0], error.message))
    if job:
        job.report(len(files), len(files), "scanned", force=True)
    return ScanResult(str(root), len(files), sources, errors).to_result()
