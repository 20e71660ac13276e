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

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mrhash_contract.index_layout import (  # the folder's layout, shared with the plugin
    DB_FILE,
    LOCK_FILE,
)
from mrhash_contract.protocol import FIX_REBUILD, FileProblem, IndexRequest, IndexResult

from mrhash.errors import BadInput, IndexCorrupted, MrHashError
from mrhash.fileio import exclusive_lock
from mrhash.index.builder import Builder, FileOutcome, LocalRunner, skipped
from mrhash.index.folder import IndexFolder, clear_index, index_bands, index_root
from mrhash.index.store import FileRecord, FileState, MetadataStore
from mrhash.index.thumbnail_store import ThumbnailWriter
from mrhash.jobs import JobControl
from mrhash.log import log
from mrhash.model.config import BUILD_RANGES, check_range
from mrhash.model.history import model_file, owner, register_index
from mrhash.model.onnx_encoder import ENCODER_OF_PRECISION, encoder_precision
from mrhash.model.package import load_model, package_bytes
from mrhash.raster.sources import (
    RASTER_EXTENSIONS,
    FolderListing,
    SourceSpec,
    list_rasters,
    source_groups,
)

if TYPE_CHECKING:  # the writer's module is imported only when a build stores thumbnails
    pass

BATCH_SIZE = 32


def discover(folder: str | Path, bands: Sequence[int | str] | None
             ) -> tuple[list[SourceSpec], FolderListing]:
    """Every raster (or per-band product) under `folder` (absolute paths), with the model's
    band selection, and the listing that says which folders could be read."""
    listing = list_rasters(folder)
    return ([SourceSpec("primary", paths, bands) for paths in source_groups(listing.files)],
            listing)


def _account(result: IndexResult, builder: Builder, outcome: FileOutcome) -> None:
    if outcome.error is None:
        result.added += outcome.added
        result.removed += outcome.removed
        result.files_indexed += 1
        return
    result.skipped.append(FileProblem(outcome.path, outcome.error))
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
    precision = encoder_precision(model.encoder_used)
    if "fingerprint" not in meta:
        folder.store.set_meta({"fingerprint": model.fingerprint, "bits": model.bits,
                               "latent": model.latent_dim,
                               "model_path": recorded_path,
                               "patch_size": model.patch_size, "tile_size": tile_size,
                               "stride": stride, "min_valid": min_valid,
                               "bands": json.dumps(list(bands) if bands else None),
                               "encoder_precision": precision, "encoder": model.encoder_used})
        register_index(recorded_path, folder.root, model.fingerprint)
        return
    if meta["fingerprint"] != model.fingerprint:
        built_with = model_file(meta.get("model_path") or model_path, meta["fingerprint"])
        raise IndexCorrupted(
            f"index was built with another model (fingerprint {meta['fingerprint'][:12]}, "
            f"{built_with}); {model_path} has {model.fingerprint[:12]}. Use that "
            "model, another index folder, or --rebuild", path=str(folder.root), fix=FIX_REBUILD)
    recorded = (int(meta["tile_size"]), int(meta["stride"]), float(meta["min_valid"]))
    if recorded != (tile_size, stride, min_valid):
        raise BadInput(f"index was built with tile size {recorded[0]}, stride {recorded[1]}, "
                       f"min valid {recorded[2]}; use the same or --rebuild",
                       path=str(folder.root), fix=FIX_REBUILD)
    if index_bands(meta, model) != bands:
        raise BadInput(f"index was built with bands {_bands_text(index_bands(meta, model))}, "
                       f"not {_bands_text(bands)}; use the same or --rebuild",
                       path=str(folder.root), fix=FIX_REBUILD)
    # one index, one precision: a tile's code never depends on which build reached its raster
    built = meta.get("encoder_precision", "float")  # indexes from before: float encoders
    if built != precision:
        wanted = ENCODER_OF_PRECISION[built].replace("auto", "onnx")
        raise BadInput(f"index was built with the {built} encoder ({wanted}), this build "
                       f"encodes with {model.encoder_used}; use --encoder {wanted} or "
                       "--rebuild", path=str(folder.root), fix=FIX_REBUILD)
    # the model file may have moved: remember where it is now
    folder.store.set_meta({"model_path": recorded_path, "encoder": model.encoder_used})
    register_index(recorded_path, folder.root, model.fingerprint)


def _bands_text(bands: tuple[int | str, ...] | None) -> str:
    return ",".join(map(str, bands)) if bands else "all"


def check_build_options(tile_size: int, stride: int, min_valid: float,
                        batch_size: int) -> None:
    """Refuse settings that would be written into a new index and then demand a rebuild."""
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
        from mrhash.index.dask import DaskRunner, connect

        model_bytes = package_bytes(model_path)
        cluster = connect(dask)
    try:
        root = index_root(index_dir, create=True)  # the lock file lives in it
        with exclusive_lock(root / LOCK_FILE, "index"):
            if rebuild:
                clear_index(root)
            first = not (root / DB_FILE).exists()
            index_folder = IndexFolder(root, create=True)

            def runner(builder: Builder):
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


def index_request(request: IndexRequest, job: JobControl | None = None, *, model=None,
                  batch_size: int = BATCH_SIZE) -> IndexResult:
    """`build_index` of the contract's request: what the worker's `index` method and
    `mrhash index` both call (each turns its input into an IndexRequest first)."""
    return build_index(request.folder, request.model, request.index, request.tile_size,
                       request.stride, job, min_valid=request.min_valid,
                       rebuild=request.rebuild, batch_size=batch_size, model=model,
                       bands=request.bands, dask=request.dask, thumbnails=request.thumbnails)


def check_bands_found(result: IndexResult, bands: Sequence[int | str] | None) -> None:
    """BadInput when bands were given and every raster was skipped for lacking them: "no
    tile was indexed" with exit 0 would hide a wrong --bands."""
    missing = [s for s in result.skipped if "does not exist" in s.error]
    if bands and result.n_tiles == 0 and missing and len(missing) == len(result.skipped):
        raise BadInput(f"--bands {_bands_text(tuple(bands))}: a band does not exist in any "
                       f"raster of the folder (e.g. {missing[0].path}: "
                       f"{missing[0].error})", path=str(result.index))


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
    started = time.monotonic()
    _check_settings(index_folder, model, tile_size, stride, min_valid, model_path, selection)
    builder = Builder(index_folder, model, tile_size, stride, min_valid, job, batch_size)
    builder.n_files = len(specs)
    if thumbnails:
        builder.thumbnails = ThumbnailWriter(index_folder.root, index_folder.store, model)
    try:
        return _build_with(builder, index_folder, specs, listing, job, make_runner, started)
    finally:
        if builder.thumbnails:
            builder.thumbnails.close()


def _build_with(builder: Builder, index_folder: IndexFolder, specs: list[SourceSpec],
                listing: FolderListing, job: JobControl | None, make_runner: Callable,
                started: float) -> IndexResult:
    runner = make_runner(builder)
    result = IndexResult(str(index_folder.root.resolve()), 0)
    records = index_folder.store.files()
    present = {spec.paths[0] for spec in specs}
    result.skipped += [FileProblem(**problem) for problem in listing.problems]
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
                result.kept.append(FileProblem(path, "its folder is gone, empty or unreadable "
                                               "(an unmounted share?): its tiles are kept "
                                               "(rebuild the index to drop them)"))
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
