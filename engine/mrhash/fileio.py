"""Atomic file writes: a reader (or a re-run after kill -9) sees the old file or the new one,
never half of one."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write (streamed, however large); it
    replaces `path` only when the block succeeds, else it is removed and `path` is as it was."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def check_writable(path: str | os.PathLike, name: str = "the output") -> None:
    """BadInput unless `path` can be written as a file: not a folder, in an existing writable
    folder. Checked before long work, which must not find that out at its end."""
    from mrhash.errors import BadInput

    path = Path(path)
    if path.is_dir():
        raise BadInput(f"is a folder; {name} needs a file name", path=str(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"the folder {folder} does not exist", path=str(path))
    if not os.access(folder, os.W_OK):
        raise BadInput(f"the folder {folder} is not writable", path=str(path))


def read_cache(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of an index's cache file; IndexCorrupted (a cache is rebuilt from the store)
    when it cannot be read."""
    from mrhash.errors import IndexCorrupted

    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise IndexCorrupted(f"cannot read the {what} file ({error.strerror})",
                             path=str(path)) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while the block runs; BadInput
    "<what> in use" when another process holds it. The OS drops the lock when a holder dies,
    even by kill -9, so a stale lock never blocks anyone."""
    from mrhash.errors import BadInput

    handle = open(path, "a+")  # noqa: SIM115 (closed below)
    try:
        try:
            if sys.platform == "win32":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            raise BadInput(f"{what} in use by another process ({holder or 'unknown'}): wait "
                           "for it to finish", path=str(path)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()
