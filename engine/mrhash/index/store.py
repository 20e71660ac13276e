"""SQLite store of an index: one row per tile (source, pixel window, footprint in the native CRS
and in EPSG:4326, validity, code) and one row per indexed raster (size, mtime, content hash,
state) for incremental and resumable builds.

The store is the truth of an index: it holds every code, so the FAISS file is a cache that can
always be rebuilt from it. Every change of the tile set runs in one transaction that also bumps
`generation`; the FAISS file records the generation it was saved at (index.py). Tile ids use
AUTOINCREMENT, so an id is never reused, even after its file is removed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mrhash_contract.protocol import FIX_REBUILD

from mrhash.errors import BadInput, IndexCorrupted
from mrhash.index.embeddings import EmbeddingTable, sign_values, to_blobs

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,          -- primary raster (first path of the source)
    paths TEXT NOT NULL,                -- JSON list of every file of the source
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL,
    crs TEXT NOT NULL,
    west REAL, south REAL, east REAL, north REAL,   -- raster extent in EPSG:4326
    status TEXT NOT NULL CHECK (status IN ('partial', 'done')),
    n_grid INTEGER NOT NULL,            -- tiles of the grid (ordinals 0..n_grid-1)
    n_tiles INTEGER NOT NULL DEFAULT 0, -- tiles stored so far
    fingerprint TEXT NOT NULL,          -- model that encoded the tiles
    ident TEXT NOT NULL DEFAULT ''      -- inode + ctime of its files (FileState.ident)
);
CREATE TABLE IF NOT EXISTS tiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id),
    ordinal INTEGER NOT NULL,           -- position in the file's tile grid
    col INTEGER NOT NULL, row INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    west REAL NOT NULL, south REAL NOT NULL, east REAL NOT NULL, north REAL NOT NULL,
    valid_fraction REAL NOT NULL,
    code BLOB NOT NULL,
    embedding BLOB,                     -- float16 relaxed code (embeddings.py); NULL: none kept
    UNIQUE (file_id, ordinal)
);
CREATE VIRTUAL TABLE IF NOT EXISTS tiles_rtree USING rtree(id, west, east, south, north);
"""


@dataclass(frozen=True)
class FileState:
    """What identifies a raster's content: unchanged when size, mtime and `ident` (inode and
    ctime: a file replaced by another, even with the same size and mtime, changes them) match;
    otherwise unchanged only when the content hash matches (a touch, a chmod, a copy back)."""

    paths: tuple[str, ...]
    size: int
    mtime_ns: int
    ident: str = ""

    @classmethod
    def of(cls, paths: Sequence[str]) -> FileState:
        stats = [Path(p).stat() for p in paths]
        ident = hashlib.sha1(repr([(s.st_ino, s.st_ctime_ns) for s in stats]).encode())
        return cls(tuple(paths), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats),
                   ident.hexdigest()[:16])

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    id: int
    path: str
    paths: tuple[str, ...]
    size: int
    mtime_ns: int
    hash: str
    crs: str
    bounds4326: tuple[float, float, float, float]
    status: str
    n_grid: int
    n_tiles: int
    fingerprint: str
    ident: str = ""


@dataclass(frozen=True)
class TileRow:
    """A tile as the indexer inserts it."""

    ordinal: int
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float]       # native CRS of its file
    bounds4326: tuple[float, float, float, float]   # west, south, east, north
    valid_fraction: float


@dataclass(frozen=True)
class TileRecord:
    id: int
    path: str
    paths: tuple[str, ...]
    crs: str
    ordinal: int
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float]
    bounds4326: tuple[float, float, float, float]
    valid_fraction: float
    code: bytes


MAX_WINDOW = 8192  # pixels of a tile's side (indexer's largest tile size)
_TILE_COLUMNS = ("t.id, f.path, f.paths, f.crs, t.ordinal, t.col, t.row, t.width, t.height, "
                 "t.minx, t.miny, t.maxx, t.maxy, t.west, t.south, t.east, t.north, "
                 "t.valid_fraction, t.code")


def _tile_record(row: tuple) -> TileRecord:
    return TileRecord(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4],
                      tuple(row[5:9]), tuple(row[9:13]), tuple(row[13:17]), row[17], row[18])


def _file_record(row: sqlite3.Row) -> FileRecord:
    return FileRecord(row["id"], row["path"], tuple(json.loads(row["paths"])), row["size"],
                      row["mtime_ns"], row["hash"], row["crs"],
                      (row["west"], row["south"], row["east"], row["north"]), row["status"],
                      row["n_grid"], row["n_tiles"], row["fingerprint"],
                      row["ident"] if "ident" in row.keys() else "")


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open for queries only: on read-only storage (a DVD, a read-only share, a folder without
    write permission) SQLite cannot make its WAL index, so it is opened as immutable there."""
    uri = path.absolute().as_uri()
    for options in ("?mode=ro", "?mode=ro&immutable=1"):
        db = sqlite3.connect(uri + options, uri=True, timeout=30, check_same_thread=False,
                             isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM meta").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
            if options.endswith("immutable=1"):
                raise
    raise AssertionError("unreachable")


class MetadataStore:
    """One SQLite database (WAL mode: queries read while a build writes)."""

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool = False):
        self.path = str(path)
        if not create and not Path(path).is_file():
            raise IndexCorrupted("no index database here (build one with `mrhash index`)",
                                 path=self.path)
        try:
            if read_only:
                self.db = connect_read_only(Path(path))
            else:
                self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                          isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a killed process (only power loss loses commits)
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.row_factory = sqlite3.Row
            if create:
                self.db.executescript(_SCHEMA)
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(files)")}
                if "ident" not in columns:  # an index made before files recorded it
                    self.db.execute("ALTER TABLE files ADD COLUMN ident TEXT NOT NULL "
                                    "DEFAULT ''")
                if not _has_column(self.db, "tiles", "embedding"):  # ... or embeddings
                    self.db.execute("ALTER TABLE tiles ADD COLUMN embedding BLOB")
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
                # names this index: its codes cache records it (index.py)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('uid', ?)",
                                (secrets.token_hex(8),))
            version = self.get("schema_version")
        except sqlite3.DatabaseError as error:
            if "full" in str(error):
                raise BadInput("the disk is full: free some space and run again",
                               path=self.path) from None
            raise IndexCorrupted(f"unreadable index database ({error}); rebuild it with "
                                 "`mrhash index --rebuild`", path=self.path,
                                 fix=FIX_REBUILD) from None
        if version != str(SCHEMA_VERSION):
            raise IndexCorrupted(f"index schema version {version}, this engine reads "
                                 f"{SCHEMA_VERSION}; rebuild it with `mrhash index --rebuild`",
                                 path=self.path, fix=FIX_REBUILD)

    def close(self) -> None:
        self.db.close()

    def _transaction(self):
        return Transaction(self.db)

    # -- meta ----------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, values: dict[str, object]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, str(v)) for k, v in values.items()])

    @property
    def generation(self) -> int:
        text = self.get("generation", "0")
        try:
            return int(str(text))
        except ValueError:
            raise IndexCorrupted(f"damaged index metadata: generation is {text!r}, not a "
                                 "number; rebuild the index with `mrhash index --rebuild`",
                                 path=self.path, fix=FIX_REBUILD) from None

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                        "WHERE key = 'generation'")

    # -- files ---------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT * FROM files ORDER BY path").fetchall()
        return {row["path"]: _file_record(row) for row in rows}

    def touch_file(self, file_id: int, state: FileState) -> None:
        """Record a new mtime and ident for content whose hash did not change."""
        with self._transaction():
            self.db.execute("UPDATE files SET mtime_ns = ?, ident = ? WHERE id = ?",
                            (state.mtime_ns, state.ident, file_id))

    def start_file(self, state: FileState, content_hash: str, crs: str,
                   bounds4326: tuple[float, float, float, float], n_grid: int,
                   fingerprint: str) -> tuple[int, list[int]]:
        """Replace any record of this raster with a fresh 'partial' one, in one transaction.
        -> (file id, ids of the tiles removed with the old record)."""
        with self._transaction():
            removed = self._delete_file(state.paths[0])
            cursor = self.db.execute(
                "INSERT INTO files (path, paths, size, mtime_ns, hash, crs, west, south, east, "
                "north, status, n_grid, n_tiles, fingerprint, ident) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'partial', ?, 0, ?, ?)",
                (state.paths[0], json.dumps(list(state.paths)), state.size, state.mtime_ns,
                 content_hash, crs, *bounds4326, n_grid, fingerprint, state.ident))
            if n_grid == 0:
                self.db.execute("UPDATE files SET status = 'done' WHERE id = ?",
                                (cursor.lastrowid,))
        return int(cursor.lastrowid), removed

    def add_tiles(self, file_id: int, rows: Sequence[TileRow], codes: np.ndarray,
                  done: bool, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Insert one batch of a file's tiles (and mark the file done with its last batch)
        in one transaction; `embeddings`: theirs [n, bits + latent], stored as float16.
        -> the new tile ids."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        blobs = to_blobs(embeddings) if embeddings is not None else [None] * len(codes)
        ids = []
        with self._transaction():
            for row, code, blob in zip(rows, codes, blobs, strict=True):
                cursor = self.db.execute(
                    "INSERT INTO tiles (file_id, ordinal, col, row, width, height, minx, miny, "
                    "maxx, maxy, west, south, east, north, valid_fraction, code, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (file_id, row.ordinal, *row.window, *row.bounds, *row.bounds4326,
                     row.valid_fraction, code.tobytes(), blob))
                ids.append(cursor.lastrowid)
            west, south, east, north = (np.array([r.bounds4326[i] for r in rows])
                                        for i in range(4))
            self.db.executemany("INSERT INTO tiles_rtree VALUES (?, ?, ?, ?, ?)",
                                zip(ids, west, east, south, north, strict=True))
            self.db.execute("UPDATE files SET n_tiles = n_tiles + ?, status = ? WHERE id = ?",
                            (len(ids), "done" if done else "partial", file_id))
            if ids:
                self._bump()
        return np.asarray(ids, dtype=np.int64)

    def remove_file(self, path: str) -> list[int]:
        """Drop a raster and its tiles in one transaction. -> the removed tile ids."""
        with self._transaction():
            return self._delete_file(path)

    def _delete_file(self, path: str) -> list[int]:
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            return []
        ids = [r[0] for r in self.db.execute("SELECT id FROM tiles WHERE file_id = ?", row)]
        self.db.execute("DELETE FROM tiles_rtree WHERE id IN "
                        "(SELECT id FROM tiles WHERE file_id = ?)", row)
        self.db.execute("DELETE FROM tiles WHERE file_id = ?", row)
        self.db.execute("DELETE FROM files WHERE id = ?", row)
        if ids:
            self._bump()
        return ids

    def next_ordinal(self, file_id: int) -> int:
        row = self.db.execute("SELECT MAX(ordinal) FROM tiles WHERE file_id = ?",
                              (file_id,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    # -- tiles ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])

    def tiles(self, ids: Iterable[int]) -> dict[int, TileRecord]:
        ids = [int(i) for i in ids]
        found: dict[int, TileRecord] = {}
        for start in range(0, len(ids), 500):  # SQLite bound-parameter limit
            chunk = ids[start:start + 500]
            rows = self.db.execute(
                f"SELECT {_TILE_COLUMNS} FROM tiles t JOIN files f ON f.id = t.file_id "
                f"WHERE t.id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update((row[0], self._checked_tile(tuple(row))) for row in rows)
        return found

    def _checked_tile(self, row: tuple) -> TileRecord:
        """The tile of a row; IndexCorrupted naming the database for a window no tile grid
        makes (negative, empty or beyond MAX_WINDOW pixels: reading it would exhaust memory)
        or a paths column that is not a JSON list."""
        col, row_, width, height = row[5:9]
        if not all(isinstance(v, int) for v in row[5:9]) or col < 0 or row_ < 0 \
                or not (0 < width <= MAX_WINDOW and 0 < height <= MAX_WINDOW):
            raise IndexCorrupted(f"tile {row[0]} has the window {tuple(row[5:9])}, which no "
                                 "tile grid makes: the database is damaged; rebuild the index",
                                 path=self.path, fix=FIX_REBUILD)
        try:
            return _tile_record(row)
        except (ValueError, TypeError):
            raise IndexCorrupted(f"tile {row[0]}'s raster paths are not a JSON list: the "
                                 "database is damaged; rebuild the index", path=self.path,
                                 fix=FIX_REBUILD) from None

    def all_codes(self, code_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, codes [n, code_bytes]) of every tile: rebuilds the FAISS cache."""
        rows = self.db.execute("SELECT id, code FROM tiles ORDER BY id").fetchall()
        return self._codes(rows, code_bytes)

    def _codes(self, rows: list, code_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        bad = next((row[0] for row in rows if not isinstance(row[1], bytes)
                    or len(row[1]) != code_bytes), None)
        if bad is not None:
            raise IndexCorrupted(f"tile {bad} has a code that is not {code_bytes} bytes: the "
                                 "database is damaged; rebuild the index", path=self.path,
                                 fix=FIX_REBUILD)
        ids = np.asarray([row[0] for row in rows], dtype=np.int64)
        codes = np.frombuffer(b"".join(row[1] for row in rows), np.uint8).reshape(-1, code_bytes)
        return ids, codes

    def content_digest(self, chunk: int = 65_536) -> str:
        """sha256 of the set of (raster, window, code) of every tile, in (raster, window)
        order: the same for two builds of the same folder with the same model, whatever
        built them (ids, build order and batching do not enter it)."""
        digest = hashlib.sha256()
        cursor = self.db.execute(
            "SELECT f.path, t.col, t.row, t.width, t.height, t.code FROM tiles t "
            "JOIN files f ON f.id = t.file_id ORDER BY f.path, t.row, t.col, t.width, t.height")
        while rows := cursor.fetchmany(chunk):
            digest.update("".join(f"{path}\t{col} {row} {width} {height}\t{bytes(code).hex()}\n"
                                  for path, col, row, width, height, code in rows).encode())
        return digest.hexdigest()

    def file_counts(self) -> dict[str, int]:
        """Rasters by status: {'done': n, 'partial': m}."""
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))
        return {status: int(counts.get(status, 0)) for status in ("done", "partial")}

    def all_embeddings(self, bits: int, latent: int = 0, chunk: int = 65_536):
        """Every tile's embedding [bits + latent] as an EmbeddingTable (rebuilds its cache),
        read in chunks; a tile stored without one gets the +-1 values of its code bits and a
        zero latent."""
        table = EmbeddingTable(bits, latent)
        column = "embedding" if _has_column(self.db, "tiles", "embedding") else "NULL"
        cursor = self.db.execute(f"SELECT id, code, {column} FROM tiles ORDER BY id")
        while rows := cursor.fetchmany(chunk):
            ids = np.asarray([row[0] for row in rows], np.int64)
            values = np.zeros((len(rows), table.dim), np.float32)
            have = np.asarray([isinstance(row[2], bytes) and len(row[2]) == table.dim * 2
                               for row in rows])
            if have.any():
                values[have] = np.frombuffer(b"".join(row[2] for row, ok in zip(
                    rows, have, strict=True) if ok), np.float16).reshape(-1, table.dim)
            if not have.all():
                _, codes = self._codes([row[:2] for row, ok in zip(rows, have, strict=True)
                                        if not ok], bits // 8)
                values[~have, :bits] = sign_values(codes, bits)
            table.add(ids, values)
        table.compact()
        return table

    def centres4326(self, ids: Sequence[int]) -> dict[int, tuple[float, float]]:
        """(lon, lat) of the EPSG:4326 box centre of each tile (spatial filters)."""
        found: dict[int, tuple[float, float]] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):  # SQLite bound-parameter limit
            chunk = ids[start:start + 500]
            found.update((row[0], ((row[1] + row[3]) / 2, (row[2] + row[4]) / 2))
                         for row in self.db.execute(
                             "SELECT id, west, south, east, north FROM tiles WHERE id IN "
                             f"({','.join('?' * len(chunk))})", chunk))
        return found

    def ids_within(self, bounds4326: tuple[float, float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, box centres [n, 2] lon/lat) of tiles whose EPSG:4326 box intersects
        `bounds4326` (R-tree)."""
        west, south, east, north = bounds4326
        rows = self.db.execute(
            "SELECT t.id, (t.west + t.east) / 2, (t.south + t.north) / 2 FROM tiles_rtree r "
            "JOIN tiles t ON t.id = r.id "  # the R-tree holds float32 boxes: centres from t
            "WHERE r.east >= ? AND r.west <= ? AND r.north >= ? AND r.south <= ? ORDER BY t.id",
            (west, east, south, north)).fetchall()
        array = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        return array[:, 0].astype(np.int64), array[:, 1:]

    def codes_within(self, bounds4326: tuple[float, float, float, float],
                     code_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of tiles whose EPSG:4326 box intersects `bounds4326` (R-tree)."""
        west, south, east, north = bounds4326
        rows = self.db.execute(
            "SELECT t.id, t.code FROM tiles_rtree r JOIN tiles t ON t.id = r.id "
            "WHERE r.east >= ? AND r.west <= ? AND r.north >= ? AND r.south <= ? "
            "ORDER BY t.id", (west, east, south, north)).fetchall()
        return self._codes(rows, code_bytes)


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception (a kill leaves no trace)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_) -> None:
        if not exc_type:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite has rolled back itself on some errors (full)
            self.db.execute("ROLLBACK")
