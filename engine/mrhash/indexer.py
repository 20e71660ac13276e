"""`mrhash index`: tile every raster of a folder, encode the tiles with a model, store them.

Incremental: a raster whose size+mtime (or, after a touch, content hash) is unchanged is
skipped, new ones are added, removed ones dropped, changed ones re-encoded.

Resumable after a kill at any moment: each batch of a raster's tiles is committed to SQLite in
one transaction (its last batch also marks the raster done); the tile grid is deterministic, so
a re-run continues a 'partial' raster at its next tile ordinal with the ids a clean run would
have given. The FAISS file is a cache of the store's codes, rewritten atomically at the end
(and on cancel); a stale one is rebuilt from the store when the index is opened.

Reading and encoding each run in a thread ahead of the commits (rasterio, onnxruntime and
torch release the GIL), so indexing is bound by the encoder, not by reads or SQLite; batches
are still committed in tile order, one transaction each.
"""

from __future__ import annotations

import errno
import json
import queue
import shutil
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from mrhash_contract import index_layout
from mrhash_contract.choices import BITS
from mrhash_contract.index_layout import (  # the folder's layout, shared with the plugin
    CODES_FILE,
    DB_FILE,
    EMBEDDINGS_FILE,
    LOCK_FILE,
    THUMBNAIL_DIR,
    THUMBNAILS_FILE,
)

from mrhash.config import check_range
from mrhash.embeddings import EmbeddingTable, pack_codes
from mrhash.errors import BadInput, IndexCorrupted, MrHashError
from mrhash.fileio import exclusive_lock
from mrhash.index import BinaryIndex
from mrhash.jobs import JobControl
from mrhash.log import log
from mrhash.metadata import FileRecord, FileState, MetadataStore, TileRow
from mrhash.model_history import model_file, owner, register_index
from mrhash.sources import (
    RASTER_EXTENSIONS,
    FolderListing,
    Source,
    SourceSpec,
    list_rasters,
    open_source,
    source_groups,
)
from mrhash.tiling import Tile, tile_grid

if TYPE_CHECKING:  # the writer's module is imported only when a build stores thumbnails
    from mrhash.thumbnail_store import ThumbnailWriter

BATCH_SIZE = 32
T = TypeVar("T")


def index_root(root: str | Path, create: bool) -> Path:
    """An index folder's path, made when `create`; BadInput when it is a file or cannot be
    made."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise BadInput("is a file, not an index folder", path=str(path))
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInput(f"cannot create the index folder ({error.strerror})",
                           path=str(path)) from None
    return path


class IndexFolder:
    """An index directory: the SQLite store (truth) and the FAISS cache of its codes."""

    def __init__(self, root: str | Path, *, create: bool = False, read_only: bool = False):
        self.root = index_root(root, create)
        if not create and not (self.root / DB_FILE).is_file():
            raise IndexCorrupted(f"not an index folder (no {DB_FILE}; build one with "
                                 "`mrhash index`)", path=str(self.root), fix="index")
        self.store = MetadataStore(self.root / DB_FILE, create=create, read_only=read_only)

    @property
    def codes_path(self) -> Path:
        return self.root / CODES_FILE

    @property
    def thumbnail_dir(self) -> Path:
        return self.root / THUMBNAIL_DIR

    def close(self) -> None:
        self.store.close()

    def meta(self) -> dict[str, str]:
        """The recorded settings, checked: IndexCorrupted naming the database when a number
        is not one or out of range, `bands` is not JSON, or a model is recorded without its
        fingerprint (damaged metadata must not give silently wrong tiles or codes)."""
        meta = index_layout.meta(self.store.db)
        check_meta(meta, self.store.path)
        return meta

    @property
    def bits(self) -> int:
        bits = self.meta().get("bits")
        if bits is None:
            raise IndexCorrupted("index has no model recorded (interrupted before its first "
                                 "raster); run `mrhash index` again", path=str(self.root),
                                 fix="index")
        return int(bits)

    @property
    def latent(self) -> int:
        """Length of the latent part of the embeddings (0: a model older than format 2)."""
        return int(self.meta().get("latent") or 0)

    def n_tiles(self) -> int:
        return index_layout.committed_tiles(self.store.db)

    @property
    def embeddings_path(self) -> Path:
        return self.root / EMBEDDINGS_FILE

    def _cached(self, path: Path, load: Callable, what: str, rebuild: Callable,
                shape: dict[str, int]):
        """What a cache file holds when it matches the store (`shape`, generation, tile
        count, index uid), else `rebuild()` from the store, which holds everything."""
        generation, n_tiles, uid = self.store.generation, self.n_tiles(), self.store.get("uid")
        if path.exists():
            try:
                value, header = load(path)
            except IndexCorrupted as error:
                log.warning(f"{error.message}; rebuilding the {what} from the database")
            else:
                if (all(header.get(key) == size for key, size in shape.items())
                        and header["generation"] == generation
                        and header["ntotal"] == n_tiles and header.get("index_uid") == uid):
                    return value
                log.warning(f"{path} does not match the database (generation "
                            f"{header['generation']} vs {generation}, {header['ntotal']} vs "
                            f"{n_tiles} {what}, or another index's file or model); rebuilding "
                            "it from the database")
        return rebuild()

    def load_codes(self) -> BinaryIndex:
        """The FAISS index of the store's codes. The file is only a cache: when it is missing,
        damaged, stale (older generation, another size) or another index's (its uid), it is
        rebuilt from the store, which holds every code."""
        bits = self.bits

        def rebuild() -> BinaryIndex:
            index = BinaryIndex(bits)
            index.add(*self.store.all_codes(bits // 8))
            index.optimize()
            return index

        return self._cached(self.codes_path, BinaryIndex.load, "codes", rebuild, {"bits": bits})

    def load_embeddings(self) -> EmbeddingTable:
        """Every tile's embedding (embeddings.py); a cache like the codes' file."""
        bits, latent = self.bits, self.latent
        return self._cached(self.embeddings_path, EmbeddingTable.load, "embeddings",
                            lambda: self.store.all_embeddings(bits, latent),
                            {"bits": bits, "latent": latent})

    def save_codes(self, index: BinaryIndex) -> None:
        index.optimize()
        index.save(self.codes_path, self.store.generation, self.store.get("uid"))

    def save_embeddings(self, table: EmbeddingTable) -> None:
        table.save(self.embeddings_path, self.store.generation, self.store.get("uid"))


# recorded numbers: key -> (low, high); whole numbers unless the bounds are floats
META_RANGES: dict[str, tuple[float, float]] = {
    "bits": (8, 4096), "latent": (0, 4096), "patch_size": (4, 4096), "tile_size": (4, 8192),
    "stride": (1, 8192), "generation": (0, 2**62), "min_valid": (0.0, 1.0)}


def check_meta(meta: dict[str, str], path: str) -> None:
    """IndexCorrupted naming the database `path` for damaged recorded settings (META_RANGES,
    bits one of the contract's BITS, bands JSON, a fingerprint with the model)."""
    def damaged(why: str) -> IndexCorrupted:
        return IndexCorrupted(f"damaged index metadata: {why}; rebuild the index with "
                              "`mrhash index --rebuild`", path=path, fix="rebuild")

    for key, (low, high) in META_RANGES.items():
        text = meta.get(key)
        if text is None or (key == "latent" and text == ""):
            continue
        try:
            value = float(text) if isinstance(low, float) else int(text)
            check_range(key, value, low, high)
        except (TypeError, ValueError):
            raise damaged(f"{key} is {text!r}, not a number") from None
        except BadInput as error:
            raise damaged(error.message) from None
    if "bits" in meta and int(meta["bits"]) not in BITS:  # what a model package can have
        raise damaged(f"bits is {meta['bits']}, not one of {BITS}")
    if "bits" in meta and not meta.get("fingerprint"):
        raise damaged("a model is recorded without its fingerprint")
    try:
        bands = json.loads(meta.get("bands") or "null")
    except ValueError:
        raise damaged(f"bands is {meta['bands'][:80]!r}, not JSON") from None
    if bands is not None and not (isinstance(bands, list) and all(
            isinstance(b, (int, str)) and not isinstance(b, bool) for b in bands)):
        raise damaged(f"bands is {meta['bands'][:80]!r}, not a list of bands")


@dataclass
class IndexResult:
    index: str
    n_tiles: int
    added: int = 0          # tiles added
    removed: int = 0        # tiles removed (files gone or changed)
    unchanged: int = 0      # rasters left as they were
    files_indexed: int = 0
    files_removed: int = 0
    skipped: list[dict] = field(default_factory=list)  # [{path, error}]
    kept: list[dict] = field(default_factory=list)  # indexed rasters whose folder was unread
    seconds: float = 0.0
    tiles_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def discover(folder: str | Path, bands: Sequence[int | str] | None
             ) -> tuple[list[SourceSpec], FolderListing]:
    """Every raster (or per-band product) under `folder` (absolute paths), with the model's
    band selection, and the listing that says which folders could be read."""
    listing = list_rasters(folder)
    return ([SourceSpec("primary", paths, bands) for paths in source_groups(listing.files)],
            listing)


def tile_patches(source: Source, tiles: Sequence[Tile], patch_size: int,
                 batch_size: int = BATCH_SIZE
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first tile position, raw float32 [n, C, patch, patch], bool valid [n, patch, patch])
    batches, read by a thread ahead of the consumer. Read errors are raised in the consumer."""
    def read() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(tiles), batch_size):
            reads = [source.read(t.footprint, (patch_size, patch_size))
                     for t in tiles[start:start + batch_size]]
            yield start, np.stack([r[0] for r in reads]), np.stack([r[1] for r in reads])

    return run_ahead(read(), "mrhash-reader")


def encoded_batches(model, source: Source, tiles: Sequence[Tile], batch_size: int
                    ) -> Generator[np.ndarray, None, None]:
    """Embeddings [n, bits + latent] of the tiles' batches in order: reads and encoding each
    run in a thread of their own ahead of the consumer (onnxruntime, torch and rasterio
    release the GIL), so the consumer's commits overlap both."""
    return run_ahead((model.embed(patches, valid) for _, patches, valid
                      in tile_patches(source, tiles, model.patch_size, batch_size)),
                     "mrhash-encoder")


_DONE = object()


def run_ahead(items: Generator[T, None, None], name: str, depth: int = 3
              ) -> Generator[T, None, None]:
    """The items of a generator, made by a thread up to `depth` items ahead of the consumer;
    its errors are raised in the consumer. Closing the result (or leaving its loop) stops the
    thread and closes the generator in it."""
    made: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                made.put(item)
            made.put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            made.put(error)
        finally:
            items.close()

    thread = threading.Thread(target=produce, daemon=True, name=name)

    def consume() -> Generator[T, None, None]:
        thread.start()
        try:
            while (item := made.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    made.get(timeout=0.05)
                except queue.Empty:
                    pass

    return consume()


def expected_bands(model) -> int | None:
    """Band count the model encodes (its primary band selection applied)."""
    return getattr(model, "n_bands", None)


def open_for_model(spec: SourceSpec, model, cache_bytes: int | None = None) -> Source:
    """Open a source and check it has the band count the model encodes."""
    source = open_source(spec) if cache_bytes is None else open_source(spec, cache_bytes)
    want = expected_bands(model)
    if want is not None and source.count != want:
        source.close()
        raise BadInput(f"has {source.count} bands with the model's band selection, the model "
                       f"encodes {want}", path=spec.paths[0])
    return source


def encode_tiles(model, spec: SourceSpec, tile_size: int | None = None,
                 min_valid: float = 0.5) -> np.ndarray:
    """Codes of every tile of one source (benchmarks use it to get real codes)."""
    with open_for_model(spec, model) as source:
        tiles = tile_grid(source, tile_size or model.patch_size, None, min_valid)
        return np.concatenate([model.encode(batch, valid) for _, batch, valid
                               in tile_patches(source, tiles, model.patch_size)])


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


class _Builder:
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

    def commit(self, plan: FilePlan, embeddings: np.ndarray, file_no: int) -> None:
        """Store the next `len(embeddings)` tiles of the plan (one transaction; the last
        batch marks the raster done): the code is the sign of the embedding's code part."""
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
            self.thumbnails.add(plan.spec.paths, plan.spec.bands, chunk, ids)
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

    def __init__(self, builder: _Builder):
        self.builder = builder

    def submit(self, spec: SourceSpec, record: FileRecord | None, state: FileState,
               file_no: int) -> list[FileOutcome]:
        builder = self.builder
        path = spec.paths[0]
        try:
            with open_for_model(spec, builder.model) as source:
                plan = builder.plan(spec, source, record, state)
                with closing(encoded_batches(builder.model, source, plan.todo,
                                             builder.batch_size)) as batches:
                    for embeddings in batches:
                        if builder.job:
                            builder.job.check()
                        builder.commit(plan, embeddings, file_no)
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


def _account(result: IndexResult, builder: _Builder, outcome: FileOutcome) -> None:
    if outcome.error is None:
        result.added += outcome.added
        result.removed += outcome.removed
        result.files_indexed += 1
        return
    result.skipped.append({"path": outcome.path, "error": outcome.error})
    # nothing half-indexed stays behind a file that failed midway
    result.removed += builder.remove(outcome.path)


def _unchanged(record: FileRecord, state: FileState, store: MetadataStore) -> bool:
    if record.status != "done" or record.paths != state.paths or record.size != state.size:
        return False
    if record.mtime_ns == state.mtime_ns and record.ident == state.ident:
        return True
    # touched, or replaced by a file of the same size (and perhaps the same mtime): the hash
    # decides; a record from before idents were kept gets one here
    if state.content_hash() == record.hash:
        store.touch_file(record.id, state)
        return True
    return False


def _check_settings(folder: IndexFolder, model, tile_size: int, stride: int,
                    min_valid: float, model_path: str,
                    bands: tuple[int | str, ...] | None) -> None:
    """Refuse to mix models, tile grids or band selections in one index; record them in a
    new one."""
    meta = folder.meta()
    # a kept generation of a model is recorded as that model: it finds the generation by the
    # fingerprint, and the index stays registered with the model a training replaces
    recorded_path = str(owner(model_path).resolve())
    if "fingerprint" not in meta:
        folder.store.set_meta({"fingerprint": model.fingerprint, "bits": model.bits,
                               "latent": model.latent_dim,
                               "model_path": recorded_path,
                               "patch_size": model.patch_size, "tile_size": tile_size,
                               "stride": stride, "min_valid": min_valid,
                               "bands": json.dumps(list(bands) if bands else None)})
        register_index(recorded_path, folder.root, model.fingerprint)
        return
    if meta["fingerprint"] != model.fingerprint:
        built_with = model_file(meta.get("model_path") or model_path, meta["fingerprint"])
        raise IndexCorrupted(
            f"index was built with another model (fingerprint {meta['fingerprint'][:12]}, "
            f"{built_with}); {model_path} has {model.fingerprint[:12]}. Use that "
            "model, another index folder, or --rebuild", path=str(folder.root), fix="rebuild")
    recorded = (int(meta["tile_size"]), int(meta["stride"]), float(meta["min_valid"]))
    if recorded != (tile_size, stride, min_valid):
        raise BadInput(f"index was built with tile size {recorded[0]}, stride {recorded[1]}, "
                       f"min valid {recorded[2]}; use the same or --rebuild",
                       path=str(folder.root), fix="rebuild")
    if index_bands(meta, model) != bands:
        raise BadInput(f"index was built with bands {_bands_text(index_bands(meta, model))}, "
                       f"not {_bands_text(bands)}; use the same or --rebuild",
                       path=str(folder.root), fix="rebuild")
    # the model file may have moved: remember where it is now
    folder.store.set_meta({"model_path": recorded_path})
    register_index(recorded_path, folder.root, model.fingerprint)


def index_bands(meta: dict[str, str], model) -> tuple[int | str, ...] | None:
    """The band selection an index reads its rasters with: the one given when it was built,
    else the model's primary bands."""
    recorded = json.loads(meta.get("bands") or "null")
    return tuple(recorded) if recorded else model.primary.bands


def _bands_text(bands: tuple[int | str, ...] | None) -> str:
    return ",".join(map(str, bands)) if bands else "all"


def clear_index(index_dir: str | Path) -> None:
    """Remove an index's files (for --rebuild), leaving other files of the folder alone."""
    root = Path(index_dir)
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", CODES_FILE, EMBEDDINGS_FILE,
                 THUMBNAILS_FILE, f"{THUMBNAILS_FILE}-journal"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / THUMBNAIL_DIR, ignore_errors=True)


def check_build_options(tile_size: int, stride: int, min_valid: float,
                        batch_size: int) -> None:
    """Refuse settings that would be written into a new index and then demand a rebuild."""
    from mrhash.config import BUILD_RANGES

    for name, value in (("tile size", tile_size), ("stride", stride),
                        ("batch size", batch_size)):
        check_range(name, value, *BUILD_RANGES[name])
    if not (isinstance(min_valid, (int, float)) and 0.0 <= min_valid <= 1.0):
        raise BadInput(f"min valid must be a fraction between 0 and 1, got {min_valid}")


def build_index(folder: str | Path, model_path: str | Path, index_dir: str | Path,
                tile_size: int | None = None, stride: int | None = None,
                job: JobControl | None = None, *, min_valid: float = 0.5,
                rebuild: bool = False, batch_size: int = BATCH_SIZE,
                model=None, bands: Sequence[int | str] | None = None,
                dask: str | None = None, thumbnails: bool = True) -> IndexResult:
    """Index every raster under `folder` into `index_dir` (see the module doc). `model` may
    pass an already loaded model package (the worker keeps one warm). `bands` selects the
    rasters' bands the model encodes when they differ from its training data (e.g. 1,2,3 of
    RGB files for a model trained on bands 4,3,2 of 13-band files); default: the model's.
    `dask`: encode on a Dask cluster (a scheduler address, or local:N; distributed.py), this
    process staying the one writer. One writer at a time: a second build of the same index
    gets "index in use". `thumbnails`: render each tile's thumbnail as it is committed
    (thumbnail_store.py), so queries need not read the rasters for them."""
    from mrhash.package import load_model, package_bytes

    model = model or load_model(model_path)
    # 0 is refused, not read as "the default"
    tile_size = model.patch_size if tile_size is None else tile_size
    stride = tile_size if stride is None else stride
    check_build_options(tile_size, stride, min_valid, batch_size)
    selection = tuple(bands) if bands else model.primary.bands
    specs, listing = discover(folder, selection)
    check_found(folder, listing)
    cluster = None
    if dask:  # reached before anything is written: a wrong address leaves no index behind
        from mrhash.distributed import DaskRunner, connect

        model_bytes = package_bytes(model_path)
        cluster = connect(dask)
    try:
        root = index_root(index_dir, create=True)  # the lock file lives in it
        with exclusive_lock(root / LOCK_FILE, "index"):
            if rebuild:
                clear_index(root)
            first = not (root / DB_FILE).exists()
            index_folder = IndexFolder(root, create=True)

            def runner(builder: _Builder):
                if cluster is None:
                    return LocalRunner(builder)
                return DaskRunner(builder, cluster, model_bytes)

            try:
                result = _build(index_folder, model, str(model_path), specs, listing,
                                tile_size, stride, min_valid, selection, job, batch_size,
                                runner, thumbnails)
            except sqlite3.OperationalError as error:
                if "full" not in str(error):
                    raise
                raise BadInput("the disk is full: free some space and run again (what was "
                               "committed is kept)", path=str(root)) from None
            finally:
                empty = first and _holds_nothing(index_folder)
                index_folder.close()
                if empty:
                    # a first build that indexed nothing (every raster skipped, cancelled at
                    # once) leaves no index: its recorded settings would refuse a retry with
                    # other bands or another model
                    clear_index(root)
    finally:
        if cluster is not None:
            cluster.close()
    check_bands_found(result, bands)
    return result


def check_bands_found(result: IndexResult, bands: Sequence[int | str] | None) -> None:
    """BadInput when bands were given and every raster was skipped for lacking them: "no
    tile was indexed" with exit 0 would hide a wrong --bands."""
    missing = [s for s in result.skipped if "does not exist" in str(s.get("error"))]
    if bands and result.n_tiles == 0 and missing and len(missing) == len(result.skipped):
        raise BadInput(f"--bands {_bands_text(tuple(bands))}: a band does not exist in any "
                       f"raster of the folder (e.g. {missing[0]['path']}: "
                       f"{missing[0]['error']})", path=str(result.index))


def check_found(folder: str | Path, listing: FolderListing) -> None:
    """BadInput naming the folder when it holds no raster at all (rather than "0 tiles")."""
    if listing.files:
        return
    unread = (f"; {len(listing.problems)} could not be read, e.g. "
              f"{listing.problems[0]['path']}: {listing.problems[0]['error']}"
              if listing.problems else "")
    raise BadInput(f"no raster in this folder or its sub-folders (looked for "
                   f"{', '.join(RASTER_EXTENSIONS)} files){unread}", path=str(folder))


def _holds_nothing(index_folder: IndexFolder) -> bool:
    try:
        return index_folder.store.count() == 0
    except sqlite3.Error:  # a damaged store is left for the user to see, never deleted
        return False


def _build(index_folder: IndexFolder, model, model_path: str, specs: list[SourceSpec],
           listing: FolderListing, tile_size: int, stride: int, min_valid: float,
           selection: tuple[int | str, ...] | None, job: JobControl | None,
           batch_size: int, make_runner: Callable, thumbnails: bool = True) -> IndexResult:
    import time

    started = time.monotonic()
    _check_settings(index_folder, model, tile_size, stride, min_valid, model_path, selection)
    builder = _Builder(index_folder, model, tile_size, stride, min_valid, job, batch_size)
    builder.n_files = len(specs)
    if thumbnails:
        from mrhash.thumbnail_store import ThumbnailWriter

        builder.thumbnails = ThumbnailWriter(index_folder.root, index_folder.store, model)
    try:
        return _build_with(builder, index_folder, specs, listing, job, make_runner, started)
    finally:
        if builder.thumbnails:
            builder.thumbnails.close()


def _build_with(builder: _Builder, index_folder: IndexFolder, specs: list[SourceSpec],
                listing: FolderListing, job: JobControl | None, make_runner: Callable,
                started: float) -> IndexResult:
    import time

    runner = make_runner(builder)
    result = IndexResult(str(index_folder.root.resolve()), 0)
    records = index_folder.store.files()
    present = {spec.paths[0] for spec in specs}
    result.skipped += listing.problems
    unreached: list[str] = []
    try:
        for path in sorted(set(records) - present):
            if not listing.was_listed(path):
                # an unreadable, empty or vanished folder (an unmounted share) is never
                # taken for deleted files; decided after indexing (moved files)
                unreached.append(path)
                continue
            result.removed += builder.remove(path)
            result.files_removed += 1
        for file_no, spec in enumerate(specs):
            if job:
                job.check()
            path = spec.paths[0]
            record = records.get(path)
            try:
                state = FileState.of(spec.paths)
                if record is not None and _unchanged(record, state, index_folder.store):
                    result.unchanged += 1
                    continue
            except OSError as error:
                _account(result, builder, skipped(error, path))
                continue
            for outcome in runner.submit(spec, record, state, file_no):
                _account(result, builder, outcome)
        for outcome in runner.drain():
            _account(result, builder, outcome)
        for path in unreached:
            if records[path].hash in builder.new_hashes:  # moved: its content is indexed
                result.removed += builder.remove(path)
                result.files_removed += 1
            else:
                result.kept.append({"path": path, "error": "its folder is gone, empty or "
                                    "unreadable (an unmounted share?): its tiles are kept "
                                    "(rebuild the index to drop them)"})
    except BaseException:
        # also on cancel or a full disk: what was committed stays searchable; a failure to
        # save the cache must not hide the error that stopped the build
        runner.close()
        try:
            builder.save()
        except (OSError, MrHashError) as error:
            log.warning(f"codes cache not saved ({error}); it is rebuilt from the database "
                        "on next use")
        raise
    builder.save()
    result.n_tiles = builder.index.ntotal
    result.seconds = round(time.monotonic() - started, 2)
    result.tiles_per_s = round(result.added / result.seconds, 1) if result.seconds else 0.0
    if job:
        job.report(len(specs), len(specs), "done", force=True, tiles=builder.tiles_done)
    return result
