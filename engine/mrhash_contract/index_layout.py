"""An index folder on disk (docs/ARCHITECTURE.md, *An index on disk*) and the read-only
queries the plugin makes of it: the engine writes the folder (`mrhash.metadata`,
`mrhash.indexer`); nothing else spells its file names or its SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

DB_FILE = "index.sqlite"        # the store: the truth of an index
CODES_FILE = "codes.faiss"      # cache of its codes
EMBEDDINGS_FILE = "embeddings.f16"  # cache of its tiles' embeddings
LOCK_FILE = "index.lock"        # held by the one process writing the index
THUMBNAIL_DIR = "thumbnails"
RESULTS_DIR = "results"         # the plugin's query results of unsaved projects


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

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.exists():
            raise IndexUnreadable(f"{self.root}: no {DB_FILE}, not a MrHash index")
        try:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise IndexUnreadable(f"{self.db_path}: cannot read the index store ({error})") \
                from error

    def tile_at(self, lon: float, lat: float) -> int | None:
        """Id of the tile containing (lon, lat) whose centre is nearest (None if none)."""
        try:
            rows = self._rows(
                "SELECT id FROM tiles_rtree WHERE west <= ?1 AND east >= ?1 AND south <= ?2 "
                "AND north >= ?2 ORDER BY ((west + east) / 2 - ?1) * ((west + east) / 2 - ?1) "
                "+ ((south + north) / 2 - ?2) * ((south + north) / 2 - ?2) LIMIT 1",
                (lon, lat))
        except IndexUnreadable:
            return None
        return int(rows[0][0]) if rows else None

    def footprints(self, limit: int) -> list[tuple[int, str, float, float, float, float]]:
        """(tile id, raster path, west, south, east, north) of the first `limit` tiles by id;
        IndexUnreadable when the folder holds no readable index."""
        return self._rows(
            "SELECT t.id, f.path, t.west, t.south, t.east, t.north FROM tiles t "
            "JOIN files f ON f.id = t.file_id ORDER BY t.id LIMIT ?", (limit,))
