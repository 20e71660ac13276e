"""Index sub-commands: `index` (build or update an index, here or on a Dask cluster), `info`
(what it holds, and its digest), `query` (search it), `refine`
(re-rank it from marked examples), `export` (its tiles as GeoPackage / GeoParquet) and `serve`
(the JSON-lines worker QGIS drives)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mrhash.model.onnx_encoder import ENCODER_CHOICES, ENCODER_HELP
from mrhash.outputs import outputs_checked


def register(subparsers: argparse._SubParsersAction) -> None:
    from mrhash.model.config import BUILD_RANGES, option_type

    def build_option(name: str):  # the ranges indexer.check_build_options (the worker) checks
        return option_type(name, *BUILD_RANGES[name])

    index = subparsers.add_parser(
        "index", help="tile, encode and index every raster of a folder (incremental, resumable)")
    index.add_argument("folder", help="folder of rasters (searched recursively)")
    index.add_argument("--model", required=True, help="model package (.safetensors)")
    index.add_argument("--index", required=True, help="index folder (created if missing)")
    index.add_argument("--tile-size", type=build_option("tile size"),
                       help="tile size in pixels (default: the model's patch size)")
    index.add_argument("--stride", type=build_option("stride"),
                       help="pixels between tiles (default: tile size)")
    index.add_argument("--bands", help="bands of these rasters the model encodes, when they "
                       "differ from its training data (e.g. 1,2,3 of RGB files for a model "
                       "trained on bands 4,3,2); default: the model's")
    index.add_argument("--min-valid", type=float, default=0.5,  # checked: check_build_options
                       help="skip tiles with a smaller valid-data fraction (default 0.5)")
    index.add_argument("--rebuild", action="store_true",
                       help="discard the index folder's index and build it again")
    index.add_argument("--no-thumbnails", dest="thumbnails", action="store_false",
                       help="do not store each tile's thumbnail at indexing time (queries "
                       "then render them from the rasters; the index is smaller)")
    index.add_argument("--batch-size", type=build_option("batch size"), default=32,
                       help="tiles encoded at once")
    index.add_argument("--device", default="auto", help="auto, cpu or cuda")
    index.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto",
                       help=ENCODER_HELP)
    index.add_argument("--dask", metavar="ADDRESS",
                       help="encode on a Dask cluster: a scheduler's address (tcp://host:8786) "
                       "or local:N for N worker processes on this machine; this process "
                       "stays the index's only writer. Workers need the rasters at the same "
                       "paths (docs/SCALING.md)")
    index.add_argument("--json", help="write the result here (default: stdout)")
    index.set_defaults(func=run_index)

    info = subparsers.add_parser(
        "info", help="what an index holds: tiles, bits, model, rasters, size on disk and a "
                     "digest of its (raster, window, code) set")
    info.add_argument("--index", required=True, help="index folder")
    info.add_argument("--json", help="write the result here (default: stdout)")
    info.set_defaults(func=run_info)

    query = subparsers.add_parser("query", help="search an index for tiles like a query patch")
    query.add_argument("--index", required=True, nargs="+", metavar="DIR",
                       help="index folder; several (built with one model) are searched as one, "
                       "each hit naming its index")
    where = query.add_mutually_exclusive_group(required=True)
    where.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"),
                       help="query the indexed raster at this point")
    where.add_argument("--footprint", help="WKT footprint to read from --raster (default: "
                       "the indexed raster under its centre)")
    where.add_argument("--tile", type=int, help="query with an indexed tile's code")
    _add_place_arguments(query, "raster to read the query patch from: the --footprint, or "
                         "the tile-sized patch around --point (any raster, indexed or not; "
                         "default: the indexed raster under it)")
    query.add_argument("--footprint-crs", help="CRS of --footprint (default: the raster's; "
                       "EPSG:4326 without --raster)")
    query.add_argument("--exclude-radius", type=float, default=0.0,
                       help="drop hits whose centre is closer than this to the query (metres)")
    _add_hits_arguments(query)
    query.set_defaults(func=run_query)

    refine = subparsers.add_parser(
        "refine", help="re-rank the whole index from tiles (or a point) marked relevant or not "
                       "(relevance feedback); prints hits like `query`")
    refine.add_argument("--index", required=True, help="index folder")
    refine.add_argument("--positive", nargs="+", type=int, default=[], metavar="ID",
                        help="ids of tiles marked relevant")
    refine.add_argument("--negative", nargs="+", type=int, default=[], metavar="ID",
                        help="ids of tiles marked not relevant")
    refine.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"),
                        help="a relevant example at this point (read like `query --point`)")
    _add_place_arguments(refine, "raster to read --point from (default: the indexed raster "
                         "under it)")
    refine.add_argument("--include-examples", action="store_true",
                        help="let the marked tiles come back as hits (default: never)")
    _add_hits_arguments(refine)
    refine.set_defaults(func=run_refine)

    export = subparsers.add_parser(
        "export", help="write every tile of an index (footprint, raster, window, code) as a "
                       "GeoPackage or GeoParquet file")
    export.add_argument("--index", required=True, help="index folder")
    export.add_argument("--format", choices=["gpkg", "geoparquet"],
                        help="default: from the output's extension (.gpkg, .parquet)")
    export.add_argument("--output", required=True, help="file to write (replaced only once "
                        "complete)")
    export.set_defaults(func=run_export)

    serve = subparsers.add_parser(
        "serve", help="JSON-lines worker on stdin/stdout (the QGIS plugin's engine)")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto",
                       help=ENCODER_HELP)
    serve.set_defaults(func=run_serve)


def _add_place_arguments(parser: argparse.ArgumentParser, raster_help: str) -> None:
    parser.add_argument("--crs", default="EPSG:4326", help="CRS of --point (default EPSG:4326)")
    parser.add_argument("--raster", help=raster_help)
    parser.add_argument("--raster-bands", metavar="BANDS",
                        help="bands of --raster to read as the model's, in its order (e.g. 1,2,3 "
                        "for an RGB file and a model of bands 4,3,2); default: matched by what "
                        "its bands say")


def _bands(text: str | None) -> list[int | str] | None:
    from mrhash_contract.bands import parse_bands

    bands = parse_bands(text)
    return list(bands) if bands else None


def _add_hits_arguments(parser: argparse.ArgumentParser) -> None:
    """What `query` and `refine` share: how many hits, where, thumbnails, model, output."""
    parser.add_argument("-k", type=int, default=20, help="number of hits (default 20)")
    parser.add_argument("--within", help="keep hits whose centre lies in this WKT (EPSG:4326)")
    parser.add_argument("--thumbnails", action="store_true",
                        help="render PNG thumbnails of the hits (cached in the index folder)")
    parser.add_argument("--model", help="model package, when the one the index recorded has "
                        "moved (it must be the same model: same fingerprint)")
    parser.add_argument("--json", help="write the hits here (default: stdout)")


class ProgressPrinter:
    """Progress with ETA on stderr: one rewritten line on a terminal, else a line every 5 s."""

    def __init__(self, stream=sys.stderr):
        import time

        self.stream = stream
        self.tty = stream.isatty()
        self._clock = time.monotonic
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        now = self._clock()
        if not self.tty and now - self._last < 5:
            return
        self._last = now
        fraction = event.get("fraction")
        eta = event.get("eta_s")
        text = (f"[{fraction * 100:5.1f}%] " if fraction is not None else "") \
            + (f"ETA {eta:.0f}s " if eta is not None else "") + str(event.get("message", ""))
        if self.tty:
            self.stream.write("\r" + text[:120].ljust(120))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


@outputs_checked(indexes=["index"], models=["model"])
def run_index(args: argparse.Namespace) -> int:

    from mrhash_contract.protocol import IndexRequest

    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads, resolve_device
    from mrhash.errors import Cancelled
    from mrhash.index.build import DB_FILE, index_request
    from mrhash.jobs import JobControl
    from mrhash.model.package import load_model

    limit_threads()
    printer = ProgressPrinter()
    job = JobControl(printer)
    # first Ctrl-C: stop at the next batch with everything committed kept; second: abort
    previous = signal.signal(signal.SIGINT, lambda *_: (job.cancel(),
                                                        signal.signal(signal.SIGINT, previous)))
    model = (load_model(args.model).to(resolve_device(args.device))
             .use_encoder(args.encoder))
    try:
        request = IndexRequest(folder=args.folder, model=args.model, index=args.index,
                               tile_size=args.tile_size, stride=args.stride,
                               min_valid=args.min_valid, rebuild=args.rebuild,
                               bands=_bands(args.bands), dask=args.dask,
                               thumbnails=args.thumbnails)
        result = index_request(request, job, model=model, batch_size=args.batch_size)
    except Cancelled:
        printer.close()
        print("mrhash index: cancelled; committed tiles are kept, run the same command to "
              "resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    printer.close()
    write_json(args.json, result.to_result())
    print(f"mrhash index: {result.n_tiles} tiles ({result.added} added, {result.removed} "
          f"removed, {result.unchanged} rasters unchanged, {len(result.skipped)} skipped, "
          f"{len(result.kept)} kept unread) in "
          f"{result.seconds:.1f} s", file=sys.stderr)
    if result.n_tiles == 0 and not (Path(args.index) / DB_FILE).exists():
        print("mrhash index: no tile was indexed, so no index was written (fix the skipped "
              "rasters or --bands and run again)", file=sys.stderr)
    for verb, items in (("skipped", result.skipped), ("kept", result.kept)):
        for item in items:
            said = item.error if item.error.startswith(item.path) else \
                f"{item.path}: {item.error}"
            print(f"  {verb} {said}", file=sys.stderr)
    return 0


@outputs_checked(indexes=["index"])
def run_info(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.index.info import index_info

    write_json(args.json, index_info(args.index))
    return 0


@outputs_checked(indexes=["index"], models=["model"])
def run_query(args: argparse.Namespace) -> int:
    from mrhash_contract.protocol import QueryRequest

    from mrhash.app.cli import write_json
    from mrhash.index.hamming import query_threads
    from mrhash.search.searcher import run_query

    query_threads()
    query = QueryRequest(point=tuple(args.point) if args.point else None, crs=args.crs,
                         raster=args.raster, bands=_bands(args.raster_bands),
                         footprint=args.footprint, footprint_crs=args.footprint_crs,
                         tile=args.tile, k=args.k, within=args.within,
                         exclude_radius=args.exclude_radius, thumbnails=args.thumbnails)
    # the model (torch) is loaded only for a query that encodes a patch: a query by tile
    # reads its code from the index and its thumbnails' colours from the model's config
    if args.model:  # a wrong --model is said before anything else (its config, no torch)
        from mrhash.model.package import read_card

        read_card(args.model)
    write_json(args.json, run_query(args.index, query, model_file=args.model,
                                    model_loader=_threaded_load))
    return 0


def _threaded_load(path: str):
    """The model of `path`, torch's threads capped first (the CLI's rule for encoding)."""
    from mrhash.device import limit_threads
    from mrhash.model.package import load_model

    limit_threads()
    return load_model(path)


@outputs_checked(indexes=["index"], models=["model"])
def run_refine(args: argparse.Namespace) -> int:
    from mrhash_contract.protocol import Example, RefineRequest

    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads
    from mrhash.index.hamming import query_threads
    from mrhash.search.refine import refine
    from mrhash.search.searcher import Searcher

    limit_threads()
    query_threads()
    examples = [Example(tile=i, relevant=True) for i in args.positive]
    if args.point:
        examples.append(Example(point=tuple(args.point), crs=args.crs, raster=args.raster,
                                bands=_bands(args.raster_bands), relevant=True))
    examples += [Example(tile=i, relevant=False) for i in args.negative]
    request = RefineRequest(examples, k=args.k, exclude_examples=not args.include_examples,
                            within=args.within, thumbnails=args.thumbnails)
    searcher = Searcher(args.index, _model(args.model))
    try:
        write_json(args.json, refine(searcher, request))
    finally:
        searcher.close()
    return 0


def _model(path: str | None):
    """The model given with --model (the index's moved), else None: the index's own."""
    if not path:
        return None
    from mrhash.model.package import load_model

    return load_model(path)


def run_export(args: argparse.Namespace) -> int:
    from mrhash.index.export import export_index
    from mrhash.jobs import JobControl

    printer = ProgressPrinter()
    result = export_index(args.index, args.format, args.output, JobControl(printer))
    printer.close()
    print(f"mrhash export: {result['n_tiles']} tiles -> {result['output']} "
          f"({result['format']}, {result['seconds']:.1f} s)", file=sys.stderr)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from mrhash.app.worker import serve

    return serve(args.device, args.encoder)
