"""Atomic file writes: a reader (or a re-run after kill -9) sees the old file or the new one,
never half of one."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mrhash.errors import BadInput, IndexCorrupted


@contextmanager
def atomic_output(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write (streamed, however large); it
    replaces `path` only when the block succeeds, else it is removed and `path` is as it was.
    `durable`: on disk before it replaces `path` (fsync); a cache that can be made again
    skips it (a power cut may then leave an empty file, which its reader remakes)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, durable) as tmp:
        tmp.write_bytes(data)


def check_writable(path: str | os.PathLike, name: str = "the output") -> None:
    """BadInput unless `path` can be written as a file: not a folder, in an existing writable
    folder. Checked before long work, which must not find that out at its end."""
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
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise IndexCorrupted(f"cannot read the {what} file ({error.strerror})",
                             path=str(path)) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _open_lock_file(path: str | os.PathLike, what: str):
    """The lock file opened for reading and writing, created if missing, never through a
    symbolic link: the holder's pid is written into it, and a link planted in its place would
    have that written over whatever it points to (a file of the user's, of another index).
    Only a regular file is a lock (a FIFO would block, a device be written to)."""
    refuse = (f"is a symbolic link, not the {what}'s lock file: it is not followed (the lock "
              "would be written through it); remove the link and run again")
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: no O_NOFOLLOW
        raise BadInput(refuse, path=str(path))
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once and is refused below
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if os.path.islink(path):  # ELOOP (Linux), EMLINK (FreeBSD), EFTYPE (NetBSD)
            raise BadInput(refuse, path=str(path)) from None
        raise
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise BadInput(f"is not a regular file, so it cannot be the {what}'s lock file; "
                       "remove it and run again", path=str(path))
    # a hard link to a file of the user's (or a file swapped in under the name after the
    # open) would have the pid written over that file: only a lock file of its own is used
    problem = (f"is a hard link to another file ({opened.st_nlink} names)"
               if opened.st_nlink > 1 else
               None if _same_file(path, opened) else "was replaced while it was opened")
    if problem:
        os.close(fd)
        raise BadInput(f"{problem}, not the {what}'s own lock file: it is not written to; "
                       "remove it and run again", path=str(path))
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "r+")


def _same_file(path: str | os.PathLike, opened: os.stat_result) -> bool:
    """Whether `path` still names the file that was opened (same device and inode)."""
    try:
        named = os.lstat(path)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while the block runs; BadInput
    "<what> in use" when another process holds it. The OS drops the lock when a holder dies,
    even by kill -9, so a stale lock never blocks anyone."""
    handle = _open_lock_file(path, what)
    try:
        try:
            if sys.platform == "win32":
                # a platform's own locking module: only one of the two exists
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                # a platform's own locking module: only one of the two exists
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
