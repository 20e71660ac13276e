"""An index folder: its SQLite store (the truth), the FAISS and embedding caches of its codes,
its recorded settings checked, and clearing it for a rebuild."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from mrhash_contract import index_layout
from mrhash_contract.choices import BITS
from mrhash_contract.index_layout import (  # the folder's layout, shared with the plugin
    CODES_FILE,
    DB_FILE,
    EMBEDDINGS_FILE,
    THUMBNAIL_DIR,
    THUMBNAILS_FILE,
)
from mrhash_contract.protocol import FIX_INDEX, FIX_REBUILD

from mrhash.errors import BadInput, IndexCorrupted
from mrhash.index.embeddings import EmbeddingTable
from mrhash.index.hamming import BinaryIndex
from mrhash.index.store import MetadataStore
from mrhash.log import log
from mrhash.model.config import check_range


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
                                 "`mrhash index`)", path=str(self.root), fix=FIX_INDEX)
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
                                 fix=FIX_INDEX)
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
                              "`mrhash index --rebuild`", path=path, fix=FIX_REBUILD)

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


def index_bands(meta: dict[str, str], model) -> tuple[int | str, ...] | None:
    """The band selection an index reads its rasters with: the one given when it was built,
    else the model's primary bands."""
    recorded = json.loads(meta.get("bands") or "null")
    return tuple(recorded) if recorded else model.primary.bands


def clear_index(index_dir: str | Path) -> None:
    """Remove an index's files (for --rebuild), leaving other files of the folder alone."""
    root = Path(index_dir)
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", CODES_FILE, EMBEDDINGS_FILE,
                 THUMBNAILS_FILE, f"{THUMBNAILS_FILE}-journal"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / THUMBNAIL_DIR, ignore_errors=True)
