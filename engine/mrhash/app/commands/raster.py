"""Raster sub-commands: `scan` (catalogue a folder) and `tiles` (tile grid as GeoJSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrhash_contract.bands import parse_bands

from mrhash.outputs import outputs_checked


def register(subparsers: argparse._SubParsersAction) -> None:
    scan = subparsers.add_parser(
        "scan", help="catalogue the raster sources of a folder (bad files listed with the reason)")
    scan.add_argument("folder")
    scan.add_argument("--json", help="write the catalogue here (default: stdout)")
    scan.set_defaults(func=run_scan)

    tiles = subparsers.add_parser(
        "tiles", help="tile grid over a raster (or a product folder) as GeoJSON in EPSG:4326")
    tiles.add_argument("raster", help="a raster file, or a folder of one product's band files")
    tiles.add_argument("--bands", help="comma-separated 1-based indices or names (B04,B03,B02)")
    tiles.add_argument("--size", type=int, default=64, help="tile size in pixels (default 64)")
    tiles.add_argument("--stride", type=int, help="pixels between tiles (default: size)")
    tiles.add_argument("--min-valid", type=float, default=0.5,
                       help="skip tiles with a smaller valid-data fraction (default 0.5)")
    tiles.add_argument("--geojson", help="write the FeatureCollection here (default: stdout)")
    tiles.set_defaults(func=run_tiles)


@outputs_checked()
def run_scan(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.raster.catalog import scan

    catalogue = scan(args.folder)
    write_json(args.json, catalogue)
    if args.json:
        print(f"{len(catalogue['sources'])} sources, {len(catalogue['errors'])} errors "
              f"-> {args.json}", file=sys.stderr)
    return 0


def tiles_geojson(tiles: list, crs: str) -> dict:
    """FeatureCollection (RFC 7946, EPSG:4326 geometry) with native bounds/crs/window."""
    import shapely

    features = []
    for number, tile in enumerate(tiles):
        outline = tile.footprint.geometry_in("EPSG:4326", densify=1)  # a tile: corners suffice
        features.append({
            "type": "Feature",
            "id": number,
            "geometry": shapely.geometry.mapping(outline),
            "properties": {"path": tile.path, "window": list(tile.window), "crs": crs,
                           "bounds": list(tile.footprint.bounds),
                           "valid_fraction": tile.valid_fraction},
        })
    return {"type": "FeatureCollection", "features": features}


@outputs_checked()
def run_tiles(args: argparse.Namespace) -> int:
    from mrhash.fileio import atomic_write_text
    from mrhash.raster.sources import SourceSpec, open_source, spec_from_folder
    from mrhash.raster.tiling import tile_grid

    bands = parse_bands(args.bands)
    if Path(args.raster).is_dir():
        spec = spec_from_folder(args.raster, bands)
    else:
        spec = SourceSpec("primary", (args.raster,), bands)
    with open_source(spec) as source:
        tiles = tile_grid(source, args.size, args.stride, args.min_valid)
        collection = tiles_geojson(tiles, source.crs)
    text = json.dumps(collection)
    if args.geojson in (None, "-"):
        print(text)
    else:
        atomic_write_text(args.geojson, text + "\n")
        print(f"{len(tiles)} tiles -> {args.geojson}", file=sys.stderr)
    return 0
