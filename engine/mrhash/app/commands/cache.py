"""`mrhash cache DIR`: the size of a pull cache (what remote auxiliary sources gave, kept for
resumed and offline runs), per source; `--clear` deletes what the cache wrote (never another
file of a folder given as the cache)."""

from __future__ import annotations

import argparse
import sys

from mrhash.outputs import outputs_checked


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache", help="size of a pull cache of remote sources (default: "
        "<model>.pull-cache), or --clear it")
    cache.add_argument("folder", metavar="DIR", help="the pull cache folder")
    cache.add_argument("--clear", action="store_true", help="delete the cache's files (the "
                       "next training pulls again from the network); other files are kept")
    cache.add_argument("--json", help="write the report here (- = stdout)")
    cache.set_defaults(func=run_cache)


@outputs_checked(caches=["folder"])
def run_cache(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.raster.pull_cache import cache_report, clear_cache

    report = clear_cache(args.folder) if args.clear else cache_report(args.folder)
    for source in report["sources"]:
        print(f"{source['source']}: {source['footprints']} footprints, {source['files']} "
              f"files, {source['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    verb = "cleared" if args.clear else "holds"
    print(f"{report['cache']} {verb} {report['files']} files, {report['bytes'] / 1e6:.1f} MB",
          file=sys.stderr)
    if report.get("kept"):
        print(f"kept {len(report['kept'])} entries the cache did not write: "
              f"{', '.join(report['kept'][:5])}{', ...' if len(report['kept']) > 5 else ''}",
              file=sys.stderr)
    if args.json:
        write_json(args.json, {**report, "cleared": bool(args.clear)})
    return 0
