"""`mrhash cache DIR`: the size of a pull cache (what remote auxiliary sources gave, kept for
resumed and offline runs), per source; `--clear` deletes it."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache", help="size of a pull cache of remote sources (default: "
        "<model>.pull-cache), or --clear it")
    cache.add_argument("folder", metavar="DIR", help="the pull cache folder")
    cache.add_argument("--clear", action="store_true", help="delete the cache (the next "
                       "training pulls again from the network)")
    cache.add_argument("--json", help="write the report here (- = stdout)")
    cache.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    from mrhash.cli import write_json
    from mrhash.pull_cache import cache_report, clear_cache

    report = clear_cache(args.folder) if args.clear else cache_report(args.folder)
    for source in report["sources"]:
        print(f"{source['source']}: {source['footprints']} footprints, {source['files']} "
              f"files, {source['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    verb = "cleared" if args.clear else "holds"
    print(f"{report['cache']} {verb} {report['files']} files, {report['bytes'] / 1e6:.1f} MB",
          file=sys.stderr)
    if args.json:
        write_json(args.json, {**report, "cleared": bool(args.clear)})
    return 0
