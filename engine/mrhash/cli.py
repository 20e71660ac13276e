"""`mrhash` command line. Each area registers its sub-commands from `mrhash.commands.*`;
those modules import heavy libraries (torch, faiss) only inside the command functions, so
`mrhash --help` and the worker start fast."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from mrhash import __version__
from mrhash.errors import MrHashError

# area module -> registers its sub-commands (see each module's `register`)
COMMAND_MODULES = ("raster", "model", "index", "bench", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrhash", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mrhash {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mrhash.commands.{name}")
        module.register(subparsers)
    return parser


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
    try:
        return int(args.func(args) or 0)
    except MrHashError as error:
        print(f"mrhash {args.command}: error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mrhash {args.command}: interrupted", file=sys.stderr)
        return 130
