"""One build's bookkeeping: each raster planned (its tile grid, where a killed build stopped),
its encoded tiles committed in order, and the local runner that encodes them in this process
(index/dask.py has the cluster's)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrhash.errors import BadInput, MrHashError
from mrhash.index.encode import encoded_batches, open_for_build
from mrhash.index.folder import IndexFolder
from mrhash.index.store import FileRecord, FileState, TileRow
from mrhash.jobs import JobControl
from mrhash.model.package import pack_codes
from mrhash.raster.sources import (
    Source,
    SourceSpec,
)
from mrhash.raster.tiling import Tile, tile_grid

if TYPE_CHECKING:  # the writer's module is imported only when a build stores thumbnails
    from mrhash.index.thumbnail_store import ThumbnailWriter


def _tile_rows(tiles: Sequence[Tile], first_ordinal: int) -> list[TileRow]:
    """Rows to store; BadInput when a tile has no position in EPSG:4326 (then the raster is
    skipped: a hit must be placeable on the map and in a spatial filter)."""
    return [TileRow(first_ordinal + i, tile.window, tile.footprint.bounds,
                    tile.footprint.to("EPSG:4326").bounds, tile.valid_fraction)
            for i, tile in enumerate(tiles)]


@dataclass
class FilePlan:
    """One raster to (re)index: its tile grid, its record in the store and the first ordinal
    still to encode (0, or where a killed build stopped)."""

    spec: SourceSpec
    file_id: int
    tiles: list[Tile]
    start: int
    removed: int            # tiles of an older version of the raster, dropped
    committed: int = 0      # tiles of `todo` stored so far
    todo: list[Tile] = field(init=False)  # the tiles still to encode (from `start`)

    def __post_init__(self) -> None:
        self.todo = self.tiles[self.start:]


@dataclass
class FileOutcome:
    """How one raster ended: tiles added and removed, or the error that skipped it."""

    path: str
    added: int = 0
    removed: int = 0
    error: str | None = None


class Builder:
    """One `build_index` run: plans each raster and commits its encoded tiles (in order, so
    a killed build resumes where it stopped); the encoding itself is the runner's."""

    def __init__(self, folder: IndexFolder, model, tile_size: int, stride: int,
                 min_valid: float, job: JobControl | None, batch_size: int):
        self.folder, self.model, self.job = folder, model, job
        self.tile_size, self.stride, self.min_valid = tile_size, stride, min_valid
        self.batch_size = batch_size
        self.store = folder.store
        self.index = folder.load_codes()
        self.embeddings = folder.load_embeddings()
        self.tiles_done = 0
        self.new_hashes: set[str] = set()  # content of the rasters (re)indexed in this run
        self.n_files = 0
        self.thumbnails: ThumbnailWriter | None = None  # pictures at commit

    def remove(self, path: str) -> int:
        ids = self.store.remove_file(path)
        self._forget(ids)
        return len(ids)

    def _forget(self, ids: list[int]) -> None:
        self.index.remove(np.asarray(ids))
        self.embeddings.remove(ids)
        if self.thumbnails and ids:
            self.thumbnails.remove(ids)

    def save(self) -> None:
        """Both caches at the store's generation."""
        self.folder.save_codes(self.index)
        self.folder.save_embeddings(self.embeddings)

    def plan(self, spec: SourceSpec, source: Source, record: FileRecord | None,
             state: FileState) -> FilePlan:
        """Lay the raster's tile grid; resume a 'partial' record of the same file, else
        start a fresh record (dropping an older version's tiles)."""
        tiles = tile_grid(source, self.tile_size, self.stride, self.min_valid)
        resume = (record is not None and record.status == "partial"
                  and record.paths == state.paths and record.n_grid == len(tiles)
                  and record.size == state.size
                  and (record.mtime_ns == state.mtime_ns
                       or record.hash == state.content_hash()))
        if resume:
            return FilePlan(spec, record.id, tiles, self.store.next_ordinal(record.id), 0)
        try:
            bounds4326 = source.footprint.to("EPSG:4326").bounds
        except BadInput as error:
            raise BadInput(f"cannot be placed on the map: {error.message}",
                           path=spec.paths[0]) from None
        content = state.content_hash()
        self.new_hashes.add(content)
        file_id, old_ids = self.store.start_file(state, content, source.crs, bounds4326,
                                                 len(tiles), self.model.fingerprint)
        self._forget(old_ids)
        return FilePlan(spec, file_id, tiles, 0, len(old_ids))

    def commit(self, plan: FilePlan, embeddings: np.ndarray, file_no: int,
               read: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Store the next `len(embeddings)` tiles of the plan (one transaction; the last
        batch marks the raster done): the code is the sign of the embedding's code part.
        `read`: the raw patches and valid masks they were encoded from, where this process
        read them (the thumbnails are made from those instead of a second read)."""
        todo = plan.todo
        offset = plan.committed
        chunk = todo[offset:offset + len(embeddings)]
        if embeddings.shape[1] != self.embeddings.dim:  # before anything is written
            raise ValueError(f"embeddings of {embeddings.shape[1]} values, "
                             f"{self.embeddings.dim} expected")
        codes = pack_codes(embeddings[:, :self.model.bits])
        done = offset + len(chunk) == len(todo)
        ids = self.store.add_tiles(plan.file_id, _tile_rows(chunk, plan.start + offset), codes,
                                   done, embeddings)
        self.index.add(ids, codes)
        self.embeddings.add(ids, embeddings)
        if self.thumbnails:  # after the tiles' commit: a kill between leaves them to render
            self.thumbnails.add(plan.spec.paths, plan.spec.bands, chunk, ids, read)
        plan.committed += len(ids)
        self.tiles_done += len(ids)
        if self.job:  # no metrics here: they would bypass the report rate limit
            position = plan.start + plan.committed
            self.job.report(file_no + position / len(plan.tiles), self.n_files,
                            f"raster {file_no + 1}/{self.n_files} "
                            f"{Path(plan.spec.paths[0]).name}: tile {position}/"
                            f"{len(plan.tiles)} ({self.tiles_done} tiles)")


class LocalRunner:
    """Encodes in this process, one raster at a time: reads and encoding run ahead in threads
    of their own, commits (SQLite, in this thread) in order as batches come."""

    def __init__(self, builder: Builder):
        self.builder = builder

    def submit(self, spec: SourceSpec, record: FileRecord | None, state: FileState,
               file_no: int) -> list[FileOutcome]:
        builder = self.builder
        path = spec.paths[0]
        try:
            with open_for_build(spec, builder.model) as source:
                plan = builder.plan(spec, source, record, state)
                with closing(encoded_batches(builder.model, source, plan.todo,
                                             builder.batch_size)) as batches:
                    for batch in batches:
                        if builder.job:
                            builder.job.check()
                        builder.commit(plan, batch.embeddings, file_no,
                                       (batch.patches, batch.valid))
        except (BadInput, OSError) as error:
            return [skipped(error, path)]
        return [FileOutcome(path, plan.committed, plan.removed)]

    def drain(self) -> list[FileOutcome]:
        return []

    def close(self) -> None:
        pass


def skipped(error: BadInput | OSError, path: str) -> FileOutcome:
    """The outcome of a raster that cannot be indexed; a full disk stops the build instead."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        raise error
    return FileOutcome(path, error=error_text(error, path))


def error_text(error: Exception, path: str) -> str:
    """What a skipped raster's entry says: the error's message, naming the file."""
    if isinstance(error, MrHashError):
        return error.message
    return f"{path}: {getattr(error, 'strerror', None) or error}"
