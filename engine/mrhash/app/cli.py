"""`mrhash` command line: unsupervised deep hashing to find similar places in rasters.

Each area registers its sub-commands from `mrhash.app.commands.*`, and the research package
beside the engine, when installed, its own (`eval`, `bench`). Those modules import the stages
(torch, faiss, rasterio) only inside the command functions, so `mrhash --help` and the worker
start fast."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence

from mrhash import __version__
from mrhash.errors import MrHashError, user_error

# area module -> registers its sub-commands (see each module's `register`)
COMMAND_MODULES = ("raster", "model", "index", "mapping", "doctor", "cache")
# command modules of distributions beside the engine, registered when installed; found by name
# (reading every installed distribution's entry points would cost ~28 ms at each start)
EXTENSION_MODULES = ("mrhash_research.commands",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrhash", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mrhash {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (also MRHASH_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mrhash.app.commands.{name}")
        module.register(subparsers)
    for name in EXTENSION_MODULES:
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


# arguments that name a file the command writes: checked before any work starts
OUTPUT_ARGUMENTS = ("output", "json", "npy")


def check_outputs(args: argparse.Namespace) -> None:
    """Every output file can be written: not a folder, in an existing writable folder. A
    training run must not find out after an hour that it cannot save its model."""
    from mrhash.fileio import check_writable

    for name in OUTPUT_ARGUMENTS:
        value = getattr(args, name, None)
        if value and value != "-":
            check_writable(value, f"--{name}")


def write_json(path: str | None, payload: object) -> None:
    """Write a command's JSON result atomically to `path`, or to stdout when no path."""
    from mrhash.fileio import atomic_write_text

    text = json.dumps(payload, indent=2, default=str)
    if path in (None, "-"):
        print(text)
    else:
        atomic_write_text(path, text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MRHASH_DEBUG", "") not in ("", "0")
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"mrhash {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        known = user_error(error)
        if known is not None and not (debug and not isinstance(error, MrHashError)):
            print(f"mrhash {args.command}: error: {known.message}", file=sys.stderr)
            return 2
        if debug:
            raise
        print(f"mrhash {args.command}: internal error: {type(error).__name__}: {error} "
              "(run with --debug or MRHASH_DEBUG=1 for the traceback, and report it)",
              file=sys.stderr)
        return 3
