"""`mrhash bench <name>`: benchmarks, each in `mrhash.benchmarks.<module>` with
`add_arguments(parser)` and `run(args) -> dict` (written as JSON to --json or stdout)."""

from __future__ import annotations

import argparse
import importlib

from mrhash.outputs import outputs_checked

# sub-command -> module in mrhash.benchmarks
BENCHMARKS = {"read": "read", "search": "search", "index": "indexing", "encoders": "encoders"}


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (figures for docs/BENCHMARKS.md)")
    names = bench.add_subparsers(dest="benchmark", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"mrhash.benchmarks.{module_name}")
        parser = names.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(parser)
        parser.add_argument("--json", help="write the figures to this JSON file")
        parser.set_defaults(func=_runner(module))


def _runner(module):
    @outputs_checked(models=["model"])
    def run(args: argparse.Namespace) -> int:
        from mrhash.cli import write_json

        write_json(args.json, module.run(args))
        return 0

    return run
