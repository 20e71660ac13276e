"""Errors the user sees. Each carries a stable `code` (for the worker protocol) and a message
that names the file and the problem; none of them should ever surface as a traceback."""

from __future__ import annotations


class MrHashError(Exception):
    """Base class: an expected failure with a message fit for a user."""

    code = "error"

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)

    @property
    def message(self) -> str:
        return str(self)


class BadInput(MrHashError):
    """Unreadable, malformed or inconsistent input (raster, footprint, band, parameter)."""

    code = "bad_input"


class ModelFormatError(MrHashError):
    """A model package that is missing, corrupted, or of an unsupported format version."""

    code = "bad_model"


class IndexCorrupted(MrHashError):
    """An index folder whose files are truncated, inconsistent, or made by another model."""

    code = "bad_index"


class Cancelled(MrHashError):
    """The user cancelled a long job; work done so far is kept consistent."""

    code = "cancelled"


class MissingDependency(MrHashError):
    """The engine's environment lacks a runtime requirement (`package`, imported as `module`)."""

    code = "missing_dependency"

    def __init__(self, module: str, package: str):
        self.module, self.package = module, package
        super().__init__(f"the engine's Python lacks the package {package} "
                         f"(import {module} failed)")
