"""Errors the user sees. Each carries a stable `code` (for the worker protocol) and a message
that names the file and the problem; none of them should ever surface as a traceback."""

from __future__ import annotations

import sqlite3

from mrhash_contract import protocol
from mrhash_contract.protocol import FIX_REBUILD

from mrhash.dependencies import OPTIONAL_PACKAGES, package_of


class MrHashError(Exception):
    """Base class: an expected failure with a message fit for a user."""

    code = protocol.ERROR

    def __init__(self, message: str, *, path: str | None = None, fix: str | None = None):
        self.path = path
        # machine-readable next step (one of FIXES) for a client that words it its own way
        # (the plugin says "tick Rebuild" where the CLI message names --rebuild)
        self.fix = fix
        super().__init__(f"{path}: {message}" if path else message)

    @property
    def message(self) -> str:
        return str(self)


# values of MrHashError.fix: the contract's vocabulary (protocol.FIXES)
FIXES = protocol.FIXES


class BadInput(MrHashError):
    """Unreadable, malformed or inconsistent input (raster, footprint, band, parameter)."""

    code = protocol.BAD_INPUT


class OutsideIndex(BadInput):
    """A point query on no indexed raster, with no raster given to read the patch from."""

    code = protocol.OUTSIDE_INDEX


class ModelFormatError(MrHashError):
    """A model package that is missing, corrupted, or of an unsupported format version."""

    code = protocol.BAD_MODEL


class IndexCorrupted(MrHashError):
    """An index folder whose files are truncated, inconsistent, or made by another model."""

    code = protocol.BAD_INDEX


class Cancelled(MrHashError):
    """The user cancelled a long job; work done so far is kept consistent."""

    code = protocol.CANCELLED


class MissingDependency(MrHashError):
    """The engine's environment lacks a runtime requirement (`package`, imported as `module`)."""

    code = protocol.MISSING_DEPENDENCY

    def __init__(self, module: str, package: str):
        self.module, self.package = module, package
        optional = OPTIONAL_PACKAGES.get(module)
        needed = (f"; {optional[1]} needs it: install the engine with `pip install "
                  f"mrhash[{optional[0]}]`" if optional else "")
        super().__init__(f"the engine's Python lacks the package {package} "
                         f"(import {module} failed){needed}")

    @classmethod
    def of(cls, error: ModuleNotFoundError) -> MissingDependency:
        """The user-facing form of an import failure inside the engine."""
        module = (error.name or str(error)).split(".")[0]
        return cls(module, package_of(module))


def user_error(error: BaseException) -> MrHashError | None:
    """The user-facing form of an error raised below the engine's own checks (a missing
    package, a damaged database, a file system failure), or None for a real bug."""
    if isinstance(error, MrHashError):
        return error
    if isinstance(error, protocol.RequestError):
        return BadInput(str(error))
    if isinstance(error, ModuleNotFoundError):
        return MissingDependency.of(error)
    if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
        return BadInput("the disk is full: free some space and run again (what was committed "
                        "is kept)")
    if isinstance(error, sqlite3.DatabaseError):
        return IndexCorrupted(f"the index database is damaged or unreadable ({error}); "
                              "rebuild the index", fix=FIX_REBUILD)
    if isinstance(error, OSError):
        where = error.filename if isinstance(error.filename, str) else None
        return BadInput(error.strerror or str(error), path=where)
    return None


def validated(request):
    """`request.validate()` with its RequestError as BadInput: the engine's API raises
    MrHashError, whoever built the request."""
    try:
        request.validate()
    except protocol.RequestError as error:
        raise BadInput(str(error)) from None
    return request
