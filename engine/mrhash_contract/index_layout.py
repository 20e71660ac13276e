"""An index folder on disk (docs/ARCHITECTURE.md, *An index on disk*) and the read-only
queries made of it, by the plugin (`IndexReader`) and by the engine's search, indexer and
export (the functions below, on the engine's open connection). The store that writes the
folder is `mrhash.index.store`; no other module spells the file names or SQL of an index."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

DB_FILE = "index.sqlite"        # the store: the truth of an index
CODES_FILE = "codes.faiss"      # cache of its codes
EMBEDDINGS_FILE = "embeddings.f16"  # cache of its tiles' embeddings
LOCK_FILE = "index.lock"        # held by the one process writing the index
THUMBNAILS_FILE = "thumbnails.sqlite"  # the tiles' pictures, rendered when they were indexed
THUMBNAIL_DIR = "thumbnails"
RESULTS_DIR = "results"         # the plugin's query results of unsaved projects


# -- read queries, on any connection to the store -------------------------------------------
def meta(db: sqlite3.Connection) -> dict[str, str]:
    """The index's recorded settings (model fingerprint, bits, tile grid, bands, ...)."""
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def committed_tiles(db: sqlite3.Connection) -> int:
    """Tiles of the rasters committed so far."""
    return int(db.execute("SELECT COALESCE(SUM(n_tiles), 0) FROM files").fetchone()[0])


def rasters_at(db: sqlite3.Connection, lon: float, lat: float
               ) -> list[tuple[str, tuple[str, ...]]]:
    """(path, every file of the source) of the indexed rasters whose EPSG:4326 box holds
    (lon, lat), by path."""
    rows = db.execute("SELECT path, paths FROM files WHERE west <= ?1 AND east >= ?1 "
                      "AND south <= ?2 AND north >= ?2 AND status = 'done' ORDER BY path",
                      (lon, lat)).fetchall()
    return [(path, tuple(json.loads(paths))) for path, paths in rows]


def first_raster(db: sqlite3.Connection) -> tuple[str, ...] | None:
    """Every file of one indexed raster (the first by path), None in an empty index."""
    row = db.execute("SELECT paths FROM files WHERE status = 'done' ORDER BY path LIMIT 1"
                     ).fetchone()
    return tuple(json.loads(row[0])) if row else None


def tile_extent(db: sqlite3.Connection) -> tuple[float, float, float, float]:
    """west, south, east, north of every tile (EPSG:4326); None values when there is none."""
    return db.execute("SELECT min(west), min(south), max(east), max(north) FROM tiles"
                      ).fetchone()


def tile_rows(db: sqlite3.Connection, chunk: int) -> Iterator[list[tuple]]:
    """Every tile by id, `chunk` rows at a time: (id, raster path, col, row, width, height,
    valid fraction, code, west, south, east, north)."""
    cursor = db.execute(
        "SELECT t.id, f.path, t.col, t.row, t.width, t.height, t.valid_fraction, t.code, "
        "t.west, t.south, t.east, t.north FROM tiles t JOIN files f ON f.id = t.file_id "
        "ORDER BY t.id")
    while rows := cursor.fetchmany(chunk):
        yield rows


def tile_at(db: sqlite3.Connection, lon: float, lat: float) -> int | None:
    """Id of the tile containing (lon, lat) whose centre is nearest (None if none)."""
    row = db.execute(
        "SELECT id FROM tiles_rtree WHERE west <= ?1 AND east >= ?1 AND south <= ?2 "
        "AND north >= ?2 ORDER BY ((west + east) / 2 - ?1) * ((west + east) / 2 - ?1) "
        "+ ((south + north) / 2 - ?2) * ((south + north) / 2 - ?2) LIMIT 1",
        (lon, lat)).fetchone()
    return int(row[0]) if row else None


def footprints(db: sqlite3.Connection, limit: int
               ) -> list[tuple[int, str, float, float, float, float]]:
    """(tile id, raster path, west, south, east, north) of the first `limit` tiles by id."""
    return db.execute(
        "SELECT t.id, f.path, t.west, t.south, t.east, t.north FROM tiles t "
        "JOIN files f ON f.id = t.file_id ORDER BY t.id LIMIT ?", (limit,)).fetchall()


class IndexUnreadable(Exception):
    """The folder holds no readable index (the message names the file and the problem)."""


class IndexReader:
    """Read-only questions about an index folder, without the engine: what the plugin draws
    (tile footprints) and asks (the tile under a click). Opens and closes its connection per
    question, so an index being built is never locked by QGIS."""

    def __init__(self, index_dir: str | Path):
        self.root = Path(index_dir)
        self.db_path = self.root / DB_FILE

    def exists(self) -> bool:
        return self.db_path.is_file()

    def _ask(self, query, *args):
        """query(connection, *args) on a read-only connection opened for it."""
        if not self.exists():
            raise IndexUnreadable(f"{self.root}: no {DB_FILE}, not a MrHash index")
        try:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
                return query(db, *args)
        except sqlite3.Error as error:
            raise IndexUnreadable(f"{self.db_path}: cannot read the index store ({error})") \
                from error

    def meta(self) -> dict[str, str]:
        """The index's recorded settings (model_path, bits, tile_size, ...); IndexUnreadable
        when the folder holds no readable index."""
        return self._ask(meta)

    def tile_at(self, lon: float, lat: float) -> int | None:
        """Id of the tile containing (lon, lat) whose centre is nearest (None if none, or
        no readable index)."""
        try:
            return self._ask(tile_at, lon, lat)
        except IndexUnreadable:
            return None

    def footprints(self, limit: int) -> list[tuple[int, str, float, float, float, float]]:
        """`footprints` of the index; IndexUnreadable when the folder holds no readable
        index."""
        return self._ask(footprints, limit)
