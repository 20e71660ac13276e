"""Thumbnails rendered when their tiles are indexed (issue 26), so a query reads a tile's
picture instead of opening its raster: one SQLite file beside the index (`THUMBNAILS_FILE`).

`pictures` holds one JPEG (quality `JPEG_QUALITY`, full-resolution colour) per tile id: the
tile's picture of `thumbnails.tile_picture` at its own size up to the thumbnail's (a query
enlarges it to the thumbnail's size, nearest, as rendering does); `meta` what they were
rendered for: the index's `uid`, its model's fingerprint and recorded band selection (the
display bands and the colour scale follow from those), the thumbnail size, and the index
`generation` the pictures match.

Agreement with the index (its atomic/generation rules): pictures are written by the build
holding the index lock, each batch in one transaction right after its tiles are committed.
A kill between the two leaves tiles without pictures, which a query renders from the raster
(as for an index built before this store, or with `--no-thumbnails`); a re-run does not
re-render them. Tile ids are never reused (AUTOINCREMENT) and a picture is only ever asked
for a tile in the index, so a picture never shows another tile; the pictures of removed
tiles are dropped with them, and those a kill left behind are dropped when the next build
opens the store at another generation. A store recorded for another index, model or band
selection is emptied by the next build and ignored by queries; `--rebuild` deletes it.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mrhash_contract import index_layout
from mrhash_contract.index_layout import DB_FILE, THUMBNAILS_FILE
from PIL import Image

from mrhash.errors import MrHashError
from mrhash.index.store import MetadataStore, Transaction, connect_read_only
from mrhash.index.thumbnails import (
    THUMBNAIL_PX,
    batch_pictures,
    open_for_thumbnails,
    png_bytes,
    tile_picture,
)
from mrhash.log import log
from mrhash.raster.sources import Source
from mrhash.raster.tiling import Tile

# 64 px EuroSAT tiles: ~3 KB each, a mean error of ~2 of 255 (a PNG of the same picture:
# ~8 KB; a WebP ~1 KB but its half-resolution colour blurs a 32 px tile; JPEG encodes in
# 0.1 ms, WebP 0.5 ms). No 4:2:0 chroma subsampling: small tiles keep their colours.
JPEG_QUALITY = 95

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pictures (id INTEGER PRIMARY KEY, image BLOB NOT NULL);
"""


def store_identity(meta: dict[str, str], size: int = THUMBNAIL_PX) -> dict[str, str]:
    """What a store's pictures were rendered for, from the index's meta: pictures of another
    index, model or band selection (other display bands, another colour scale) never show."""
    return {"uid": meta.get("uid", ""), "fingerprint": meta.get("fingerprint", ""),
            "bands": meta.get("bands") or "null", "size": str(size)}


def _recorded(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


class ThumbnailWriter:
    """The build's side: renders each committed batch's pictures and stores them."""

    def __init__(self, root: Path, store: MetadataStore, model, size: int = THUMBNAIL_PX):
        self.store, self.size = store, size
        self.rgb = model.config.get("rgb")
        self.stats = model.stats
        self.db = sqlite3.connect(root / THUMBNAILS_FILE, timeout=30, isolation_level=None,
                                  check_same_thread=False)  # as the index's store
        # a rollback journal (not WAL): a read-only index's store opens without a -shm file
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._source: Source | None = None
        self._source_key: tuple = ()
        self._reconcile(root)

    def _reconcile(self, root: Path) -> None:
        """Empty a store of another index, model or band selection; drop the pictures of
        tiles removed since it was last written (a kill between the two commits)."""
        identity = store_identity(index_layout.meta(self.store.db), self.size)
        recorded = _recorded(self.db)
        same = {k: recorded.get(k) for k in identity} == identity
        stale = same and recorded.get("generation") != str(self.store.generation)
        if stale:  # (ATTACH is refused inside a transaction)
            self.db.execute("ATTACH DATABASE ? AS idx",
                            ((root / DB_FILE).absolute().as_uri() + "?mode=ro",))
        try:
            with Transaction(self.db):
                if not same:
                    self.db.execute("DELETE FROM pictures")
                elif stale:
                    self.db.execute("DELETE FROM pictures WHERE id NOT IN "
                                    "(SELECT id FROM idx.tiles)")
                self._record(identity)
        finally:
            if stale:
                self.db.execute("DETACH DATABASE idx")

    def _record(self, identity: dict[str, str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [*identity.items(), ("generation", str(self.store.generation))])

    def _open(self, paths: tuple[str, ...], bands: tuple[int | str, ...] | None) -> Source:
        """The raster of the batch, kept open while its batches come (one raster at a time)."""
        if self._source is None or self._source_key != (paths, bands):
            self.close_source()
            self._source = open_for_thumbnails(paths, bands)
            self._source_key = (paths, bands)
        return self._source

    def add(self, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
            tiles: Sequence[Tile], ids: Sequence[int],
            read: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Render and store the pictures of a committed batch (tile i has id ids[i]): from
        `read`, the raw patches and valid masks its tiles were encoded from, where those are
        the tiles' own pixels, else from the tiles' windows read again. A tile that cannot be
        read for its picture gets none (a query renders it)."""
        rows = []
        try:
            pictures = None if read is None else batch_pictures(
                *read, [tile.window for tile in tiles], self.rgb, self.stats)
            if pictures is None:
                source = self._open(paths, bands)
                pictures = [tile_picture(source, tile.window, self.rgb, self.size, self.stats)
                            for tile in tiles]
            rows = [(int(tile_id), self._jpeg(picture))
                    for tile_id, picture in zip(ids, pictures, strict=True)]
        except (MrHashError, OSError) as error:
            log.warning(f"thumbnails of {paths[0]} not stored ({error}); queries render them")
        with Transaction(self.db):
            self.db.executemany("INSERT OR REPLACE INTO pictures VALUES (?, ?)", rows)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)",
                            (str(self.store.generation),))

    def _jpeg(self, picture: Image.Image) -> bytes:
        if max(picture.size) > self.size:  # as png_bytes shrinks it: nearest
            picture = picture.resize((self.size, self.size), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return buffer.getvalue()

    def remove(self, ids: Sequence[int]) -> None:
        """Drop the pictures of removed tiles (after the store removed them)."""
        with Transaction(self.db):
            self.db.executemany("DELETE FROM pictures WHERE id = ?", [(int(i),) for i in ids])
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)",
                            (str(self.store.generation),))

    def close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def close(self) -> None:
        self.close_source()
        self.db.close()


class ThumbnailReader:
    """The query's side: a stored picture as thumbnail PNG bytes, or None (render it)."""

    def __init__(self, db: sqlite3.Connection, size: int):
        self.db, self.size = db, size

    @classmethod
    def open(cls, root: Path, meta: dict[str, str], size: int = THUMBNAIL_PX
             ) -> ThumbnailReader | None:
        """The store of the index whose meta is `meta`, None when there is none or it was
        rendered for another index, model or band selection."""
        path = root / THUMBNAILS_FILE
        if not path.is_file():
            return None
        try:
            db = connect_read_only(path)
            identity = store_identity(meta, size)
            recorded = _recorded(db)
        except sqlite3.Error as error:
            log.warning(f"{path}: stored thumbnails unreadable ({error}); rendering them")
            return None
        if {k: recorded.get(k) for k in identity} != identity:
            db.close()
            return None
        return cls(db, size)

    def __call__(self, tile_id: int, size: int) -> bytes | None:
        """PNG bytes of the tile's stored picture at `size`, None when it has none."""
        if size != self.size:
            return None
        try:
            row = self.db.execute("SELECT image FROM pictures WHERE id = ?", (tile_id,)
                                  ).fetchone()
            if row is None:
                return None
            with Image.open(io.BytesIO(row[0])) as picture:
                return png_bytes(picture, size)
        except (sqlite3.Error, OSError, ValueError) as error:  # a damaged blob: render it
            log.warning(f"stored thumbnail of tile {tile_id} unreadable ({error})")
            return None

    def close(self) -> None:
        self.db.close()
