"""Map sub-commands: `map` (every tile of an index scored for marked examples, written as a
GeoPackage of the likely tiles and the areas they form; mrhash/mapping.py) and `export-map`
(such a map as GeoParquet, one file a layer)."""

from __future__ import annotations

import argparse
import sys

from mrhash.outputs import outputs_checked


def register(subparsers: argparse._SubParsersAction) -> None:
    from mrhash_contract.protocol import MAP_FLOOR as FLOOR
    from mrhash_contract.protocol import MAP_THRESHOLD as THRESHOLD

    parser = subparsers.add_parser(
        "map", help="score every tile of an index for tiles marked relevant (or not) and "
                    "write the likely ones and the areas they form to a GeoPackage")
    parser.add_argument("--index", required=True, nargs="+", metavar="DIR",
                        help="index folder; several (built with one model) are mapped as one "
                             "(examples then as --point)")
    for flag, which in (("--positive", "like the ones to map"), ("--negative", "unlike them")):
        parser.add_argument(flag, nargs="+", type=int, default=[], metavar="ID",
                            help=f"ids of tiles {which}")
    parser.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"),
                        help="a place like the ones to map (read from the indexed raster "
                             "under it, or --raster)")
    parser.add_argument("--crs", default="EPSG:4326", help="CRS of --point (default EPSG:4326)")
    parser.add_argument("--raster", help="raster to read --point from")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"calibrated score (0-1) from which a tile is a detection "
                             f"(default {THRESHOLD})")
    parser.add_argument("--floor", type=float, default=FLOOR,
                        help=f"lowest score kept in the tiles layer (default {FLOOR})")
    parser.add_argument("--within", help="score only tiles whose centre lies in this WKT "
                                         "(EPSG:4326)")
    parser.add_argument("--model", help="model package, when the one the index recorded has "
                                        "moved (needed for --point)")
    parser.add_argument("--output", required=True, help="GeoPackage (.gpkg) to write")
    parser.add_argument("--json", help="write the summary and detections here")
    parser.set_defaults(func=run_map_command)

    export = subparsers.add_parser(
        "export-map", help="write a map's tiles and areas at a confidence as GeoParquet 1.1 "
                           "(X.parquet -> X_areas.parquet and X_tiles.parquet)")
    export.add_argument("--map", required=True, help="GeoPackage written by mrhash map")
    export.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"keep tiles and areas scoring at least this (0-1, default "
                             f"{THRESHOLD})")
    export.add_argument("--output", required=True,
                        help="X.parquet: X_areas.parquet and X_tiles.parquet are written")
    export.set_defaults(func=run_export_map_command)


@outputs_checked(indexes=["index"], models=["model"])
def run_map_command(args: argparse.Namespace) -> int:
    from mrhash_contract.protocol import Example, MapRequest

    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads
    from mrhash.model.package import load_model
    from mrhash.search.mapping import run_map

    limit_threads()
    marks = [(i, True) for i in args.positive] + [(i, False) for i in args.negative]
    examples = [Example(tile=tile, relevant=relevant) for tile, relevant in marks]
    if args.point:
        examples.append(Example(point=tuple(args.point), crs=args.crs, raster=args.raster))
    request = MapRequest(examples, index=args.index[0], output=args.output,
                         threshold=args.threshold, floor=args.floor, within=args.within)
    result = run_map(request, load_model(args.model) if args.model else None,
                     indexes=args.index)
    print(f"mrhash map: {result['n_detected']} of {result['n_scored']} tiles at or above "
          f"{result['threshold']} ({result['n_areas']} areas, {result['detected_km2']:.3f} "
          f"km²) -> {result['output']}", file=sys.stderr)
    if args.json:
        write_json(args.json, result)
    return 0


def run_export_map_command(args: argparse.Namespace) -> int:
    from mrhash.search.mapping import export_map

    result = export_map(args.map, args.output, args.threshold)
    outputs = result["outputs"]
    print(f"mrhash export-map: {result['n_tiles']} tiles and {result['n_areas']} areas at or "
          f"above {result['threshold']} -> {outputs['tiles']}, {outputs['areas']}",
          file=sys.stderr)
    return 0
