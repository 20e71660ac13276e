"""Tiles to codes: a source opened for a model, its tiles read and encoded in threads ahead of
the consumer (the local build, the Dask workers and the benchmarks share these)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from mrhash.errors import BadInput
from mrhash.raster.sources import (
    DEFAULT_CACHE_BYTES,
    Source,
    SourceSpec,
    open_source,
)
from mrhash.raster.tiling import Tile, tile_grid

BATCH_SIZE = 32
# A build reads its tiles window by window from rasters tiled in blocks up to this side:
# GDAL decodes each block once as the tiles reach it, while the encoder works. Loading every
# band whole first left the encoder idle meanwhile (1.7 s of a 13-band 4096² raster's 8 s
# build, one core unused). Striped or big-block files still load whole bands (a window read
# would decode their strips again for every row of tiles), and so do files whose pixels can
# be invalid (nodata, float): the tile grid reads their values first, from memory then.
WINDOWED_BLOCK_PX = 1024
T = TypeVar("T")


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


@dataclass(frozen=True)
class EncodedBatch:
    """A batch of tiles encoded: their embeddings [n, bits + latent] and the raw patches they
    were encoded from (float32 [n, C, patch, patch] and bool valid [n, patch, patch]), which
    the build's thumbnails reuse instead of reading the tiles again."""

    embeddings: np.ndarray
    patches: np.ndarray
    valid: np.ndarray


def encoded_batches(model, source: Source, tiles: Sequence[Tile], batch_size: int
                    ) -> Generator[EncodedBatch, None, None]:
    """The tiles' batches encoded, in order: reads and encoding each run in a thread of their
    own ahead of the consumer (onnxruntime, torch and rasterio release the GIL), so the
    consumer's commits overlap both."""
    return run_ahead((EncodedBatch(model.embed(patches, valid), patches, valid)
                      for _, patches, valid
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


def open_for_build(spec: SourceSpec, model) -> Source:
    """A raster opened for a build's sequential tile reads (`open_for_model`): windowed
    reads where its files are tiled in small blocks and hold no invalid pixels, whole bands
    in memory otherwise (see WINDOWED_BLOCK_PX)."""
    source = open_for_model(spec, model, cache_bytes=0)
    if (source.block_side > WINDOWED_BLOCK_PX
            or any(band_file.checks_values for band_file in source.files)):
        source.keep_in_memory(DEFAULT_CACHE_BYTES)
    return source


def encode_tiles(model, spec: SourceSpec, tile_size: int | None = None,
                 min_valid: float = 0.5) -> np.ndarray:
    """Codes of every tile of one source (benchmarks use it to get real codes)."""
    with open_for_model(spec, model) as source:
        tiles = tile_grid(source, tile_size or model.patch_size, None, min_valid)
        return np.concatenate([model.encode(batch, valid) for _, batch, valid
                               in tile_patches(source, tiles, model.patch_size)])
