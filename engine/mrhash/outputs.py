"""Outputs never clobber inputs: every file a command writes is checked here first.

A command's output is refused (BadInput naming the file and why) when it

- lies inside an index folder the command reads (its database, caches, thumbnails: writing
  there damages the index),
- is a file the command reads (the model package),
- already exists and is not what the command itself writes: an existing file is replaced only
  when it is recognisably an earlier output of the same kind (a JSON file for `--json`, a
  GeoPackage written by `mrhash export` for an export, ...). A GeoTIFF, a database, a model or
  a FIFO/device (where `os.replace` would put a regular file in its place) is never replaced.

The check reads at most a file's head and writes nothing, so it runs before any work and
before anything is written (`fileio.atomic_output` writes beside the target meanwhile)."""

from __future__ import annotations

import argparse
import codecs
import functools
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mrhash_contract.index_layout import RESULTS_DIR

from mrhash.errors import BadInput
from mrhash.fileio import check_writable

HEAD_BYTES = 64 * 1024  # what is read of an existing file to tell its kind


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, and how to recognise a file written earlier as one (then it may
    be replaced: it is the same kind of output, not an input)."""

    what: str                                  # in messages: "a JSON file"
    written_before: Callable[[Path, bytes], bool]  # (path, first HEAD_BYTES) -> same kind?


# (path, what it is) of something an output must spare; the usual "what"s:
Protected = tuple[str | os.PathLike | None, str]
INDEX_FOLDER, MODEL_FILE, PULL_CACHE = "the index folder", "the model file", "the pull cache"


def _text(head: bytes) -> str | None:
    """The head as UTF-8 text (a BOM allowed, no NUL byte), None for a binary file."""
    if b"\0" in head:
        return None
    try:  # an incremental decoder: a character cut at the end of the head is no error
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def _is_json_text(_: Path, head: bytes) -> bool:
    """JSON text: UTF-8 starting with an object or an array. The head only: a JSON output may
    be large, and a binary file fails on its first bytes."""
    text = _text(head)
    return text is not None and text.lstrip().startswith(("{", "["))


JSON = OutputKind("a JSON file", _is_json_text)
NUMPY = OutputKind("a NumPy .npy file", lambda _, head: head.startswith(b"\x93NUMPY"))

# the first bytes of files an output must not replace, to say in plain words what is there
_SIGNATURES = (
    (b"II*\0", "a TIFF/GeoTIFF raster"), (b"MM\0*", "a TIFF/GeoTIFF raster"),
    (b"II+\0", "a BigTIFF raster"), (b"MM\0+", "a BigTIFF raster"),
    (b"\x89PNG", "a PNG image"), (b"\0\0\0\x0cjP  ", "a JPEG 2000 raster"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"PAR1", "a Parquet file"),
    (b"\x93NUMPY", "a NumPy array"), (b"PK\x03\x04", "a ZIP archive"),
)


def describe(head: bytes) -> str:
    """What a file's first bytes say it is, in plain words."""
    if head.startswith(b"SQLite format 3\0"):
        # the GeoPackage application id ("GPKG") is at offset 68 of the SQLite header
        return "a GeoPackage" if head[68:72] == b"GPKG" else "an SQLite database"
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    if _is_json_text(Path(), head):
        return "a JSON file"
    # safetensors: a little-endian u64 header length, then the header as a JSON object
    if head[8:10] == b'{"' and 0 < int.from_bytes(head[:8], "little") < 1 << 27:
        return "a model package (safetensors)"
    return "a text file" if _text(head) is not None else "a file of another kind"


def _real(path: str | os.PathLike) -> Path:
    """The path with every symbolic link resolved (a missing last part kept as is)."""
    return Path(os.path.realpath(os.fspath(path)))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also a hard link or another mount of the same file
    except OSError:
        return a == b


def check_output(path: str | os.PathLike, kind: OutputKind,
                 protected: Iterable[Protected] = (), name: str = "the output") -> Path:
    """`path` checked as a file the command may write (see the module doc): writable (not a
    folder, in an existing writable folder), not inside or equal to anything `protected`, and
    not an existing file of another kind. Returns it; raises BadInput naming it otherwise."""
    check_writable(path, name)
    target = _real(path)
    for item, what in protected:
        if not item:
            continue
        guarded = _real(item)
        if guarded.is_dir():
            # an index folder's results/ holds what clients write from its searches (the
            # plugin's results and maps): outputs, never one of the files the engine reads
            if what == INDEX_FOLDER and (guarded / RESULTS_DIR) in target.parents:
                continue
            if target == guarded or guarded in target.parents:
                raise BadInput(f"is inside {what} {item}: {name} would overwrite or mix with "
                               "the files it reads; write it elsewhere", path=str(path))
        elif target == guarded or (target.exists() and _same_file(target, guarded)):
            raise BadInput(f"is {what}: {name} would overwrite it; give another file name",
                           path=str(path))
    try:
        found = os.stat(target)
    except FileNotFoundError:
        return Path(path)  # a new file: nothing to lose
    except OSError as error:
        raise BadInput(f"cannot be checked before writing ({error.strerror})",
                       path=str(path)) from None
    if not stat.S_ISREG(found.st_mode):
        raise BadInput(f"exists and is not a regular file (a device, FIFO or socket): "
                       f"{name} would be put in its place; give a file name", path=str(path))
    if found.st_size == 0:
        return Path(path)  # an empty file holds nothing to lose
    try:
        with open(target, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as error:
        raise BadInput(f"exists and cannot be read to check what it is ({error.strerror}); "
                       "give another file name", path=str(path)) from None
    if not kind.written_before(target, head):
        raise BadInput(f"exists and is {describe(head)}, not {kind.what}: {name} would "
                       "replace it; give another file name (or delete it first)",
                       path=str(path))
    return Path(path)


# -- the CLI ---------------------------------------------------------------------------------
# arguments naming a file a command writes (not `--output`: what it is depends on the
# command, and export checks its own), and the kind of file each is
CLI_OUTPUTS: dict[str, OutputKind] = {"json": JSON, "geojson": JSON, "npy": NUMPY}


def _values(args: argparse.Namespace, names: Iterable[str]) -> list[str]:
    found = []
    for name in names:
        value = getattr(args, name, None)
        found += value if isinstance(value, list) else [value] if value else []
    return [str(v) for v in found]


def check_cli_outputs(args: argparse.Namespace, indexes: Iterable[str] = (),
                      models: Iterable[str] = (), caches: Iterable[str] = ()) -> None:
    """Check every output argument of a command (CLI_OUTPUTS) against the index folders,
    model files and pull caches named by the arguments `indexes`, `models` and `caches`, and
    against the command's other outputs (`--json` and `--npy` the same file: one would
    replace the other)."""
    protected: list[Protected] = [
        *((p, INDEX_FOLDER) for p in _values(args, indexes)),
        *((p, MODEL_FILE) for p in _values(args, models)),
        *((p, PULL_CACHE) for p in _values(args, caches))]
    for name, kind in CLI_OUTPUTS.items():
        value = getattr(args, name, None)
        if value and value != "-":
            check_output(value, kind, protected, f"--{name}")
            protected.append((value, f"the --{name} output"))


def outputs_checked(indexes: Iterable[str] = (), models: Iterable[str] = (),
                    caches: Iterable[str] = ()
                    ) -> Callable[[Callable[[argparse.Namespace], int]],
                                  Callable[[argparse.Namespace], int]]:
    """Decorate a CLI command: `check_cli_outputs(args, indexes, models, caches)` before it
    runs, so nothing is read, computed or written for an output refused at the end."""
    indexes, models, caches = tuple(indexes), tuple(models), tuple(caches)

    def decorate(run: Callable[[argparse.Namespace], int]
                 ) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def checked(args: argparse.Namespace) -> int:
            check_cli_outputs(args, indexes, models, caches)
            return run(args)

        return checked

    return decorate
