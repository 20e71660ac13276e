"""`mrhash export`: every tile of an index as a vector file other tools open: GeoPackage or
GeoParquet 1.0, written without QGIS or GDAL.

One feature a tile: id, path (its primary raster), col, row, width, height (pixel window),
valid_fraction, code (hex); geometry = the footprint's EPSG:4326 box (the stored bounds), a
polygon of 5 points, counter-clockwise.

- GeoPackage 1.2: plain sqlite3 and the spec's tables (gpkg_spatial_ref_sys, gpkg_contents,
  gpkg_geometry_columns, gpkg_extensions), geometries as the GeoPackage binary header
  (envelope) + WKB, and the R-tree spatial index extension with the spec's triggers (added
  last: they call ST_* functions that only GeoPackage readers such as GDAL provide).
- GeoParquet 1.0 (pyarrow): WKB column `geometry`, the `geo` file metadata (no crs: OGC:CRS84,
  lon/lat), one row group per chunk.

Rows are streamed in chunks from one read transaction (a build running meanwhile is seen as
of the start), so memory stays flat at any size; the file is written beside the output and
renamed over it only once complete. The output may not be in the index folder or be the
index's model, and an existing file is replaced only when it is an earlier export of the
same format (outputs.py): never a raster or any other file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mrhash_contract import index_layout

from mrhash.errors import BadInput
from mrhash.fileio import atomic_output, check_writable
from mrhash.jobs import JobControl
from mrhash.outputs import INDEX_FOLDER, MODEL_FILE, OutputKind, check_output

FORMATS = {"gpkg": ".gpkg", "geoparquet": ".parquet"}
CHUNK = 50_000
LAYER = "tiles"
DESCRIPTION = "MrHash index tiles"  # of the layer in gpkg_contents: how an export is known
PARQUET_COLUMNS = ("id", "path", "col", "row", "width", "height", "valid_fraction", "code",
                   "geometry")

# one polygon of 5 points as little-endian WKB: byte order, type 3, 1 ring, 5 points, 10 doubles
_WKB = np.dtype([("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"),
                 ("xy", "<f8", (10,))])
# GeoPackage binary header: "GP", version 0, flags (little endian, xy envelope), srs id,
# envelope minx, maxx, miny, maxy; then the WKB
_GPKG = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs_id", "<i4"),
                  ("envelope", "<f8", (4,)), ("wkb", _WKB)])

WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
             'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
             'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG",'
             '"9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]')


@dataclass
class Chunk:
    """Up to CHUNK tiles, as columns."""

    ids: np.ndarray          # int64
    paths: list[str]
    windows: np.ndarray      # int32 [n, 4]: col, row, width, height
    valid: np.ndarray        # float64
    codes: list[str]         # hex
    bounds: np.ndarray       # float64 [n, 4]: west, south, east, north

    @classmethod
    def of(cls, rows: list[tuple]) -> Chunk:
        return cls(np.array([r[0] for r in rows], np.int64), [r[1] for r in rows],
                   np.array([r[2:6] for r in rows], np.int32).reshape(-1, 4),
                   np.array([r[6] for r in rows], np.float64),
                   [bytes(r[7]).hex() for r in rows],
                   np.array([r[8:12] for r in rows], np.float64).reshape(-1, 4))

    def wkb(self) -> np.ndarray:
        """One WKB polygon record a tile (structured array, 93 bytes each)."""
        west, south, east, north = self.bounds.T
        out = np.zeros(len(self.ids), _WKB)
        out["order"], out["type"], out["rings"], out["points"] = 1, 3, 1, 5
        out["xy"] = np.stack([west, south, east, south, east, north, west, north,
                              west, south], axis=1)
        return out


def _rows(db: sqlite3.Connection) -> Iterator[Chunk]:
    for rows in index_layout.tile_rows(db, CHUNK):
        yield Chunk.of(rows)


def check_format(fmt: str | None, output: str | Path) -> str:
    """The format named, else the one the output's extension says."""
    if fmt is None:
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        fmt = by_suffix.get(Path(output).suffix.lower())
        if fmt is None:
            raise BadInput(f"cannot tell the format from the extension: give the format "
                           f"({' or '.join(FORMATS)})", path=str(output))
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")
    return fmt


# -- GeoPackage -------------------------------------------------------------------------------
_GPKG_SCHEMA = f"""
PRAGMA application_id = 1196444487;  -- "GPKG"
PRAGMA user_version = 10200;         -- GeoPackage 1.2
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
    organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
    definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
    identifier TEXT UNIQUE, description TEXT DEFAULT '',
    last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
    CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
    geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
    m TINYINT NOT NULL, CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
    CONSTRAINT uk_gc_table_name UNIQUE (table_name),
    CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
    CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT,
    extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL,
    CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
CREATE TABLE {LAYER} (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, geom POLYGON,
    id INTEGER NOT NULL, path TEXT NOT NULL, col MEDIUMINT NOT NULL, row MEDIUMINT NOT NULL,
    width MEDIUMINT NOT NULL, height MEDIUMINT NOT NULL, valid_fraction REAL NOT NULL,
    code TEXT NOT NULL);
CREATE VIRTUAL TABLE rtree_{LAYER}_geom USING rtree(id, minx, maxx, miny, maxy);
"""

_SRS_ROWS = [
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined",
     "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
     "undefined geographic coordinate reference system"),
    ("WGS 84 geodetic", 4326, "EPSG", 4326, WGS84_WKT,
     "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
]


def _rtree_triggers(t: str, c: str = "geom", i: str = "fid") -> str:
    """The R-tree extension's triggers (GeoPackage 1.2 annex F.3), keeping the index right
    when a reader edits the layer."""
    values = (f"NEW.{i}, ST_MinX(NEW.{c}), ST_MaxX(NEW.{c}), ST_MinY(NEW.{c}), "
              f"ST_MaxY(NEW.{c})")
    filled, empty = (f"(NEW.{c} NOTNULL AND NOT ST_IsEmpty(NEW.{c}))",
                     f"(NEW.{c} ISNULL OR ST_IsEmpty(NEW.{c}))")
    rtree = f"rtree_{t}_{c}"
    return f"""
CREATE TRIGGER {rtree}_insert AFTER INSERT ON {t} WHEN {filled}
BEGIN INSERT OR REPLACE INTO {rtree} VALUES ({values}); END;
CREATE TRIGGER {rtree}_update1 AFTER UPDATE OF {c} ON {t}
  WHEN OLD.{i} = NEW.{i} AND {filled}
BEGIN INSERT OR REPLACE INTO {rtree} VALUES ({values}); END;
CREATE TRIGGER {rtree}_update2 AFTER UPDATE OF {c} ON {t}
  WHEN OLD.{i} = NEW.{i} AND {empty}
BEGIN DELETE FROM {rtree} WHERE id = OLD.{i}; END;
CREATE TRIGGER {rtree}_update3 AFTER UPDATE ON {t}
  WHEN OLD.{i} != NEW.{i} AND {filled}
BEGIN DELETE FROM {rtree} WHERE id = OLD.{i};
      INSERT OR REPLACE INTO {rtree} VALUES ({values}); END;
CREATE TRIGGER {rtree}_update4 AFTER UPDATE ON {t}
  WHEN OLD.{i} != NEW.{i} AND {empty}
BEGIN DELETE FROM {rtree} WHERE id IN (OLD.{i}, NEW.{i}); END;
CREATE TRIGGER {rtree}_delete AFTER DELETE ON {t} WHEN OLD.{c} NOT NULL
BEGIN DELETE FROM {rtree} WHERE id = OLD.{i}; END;
"""


def _gpkg_geometries(chunk: Chunk) -> np.ndarray:
    west, south, east, north = chunk.bounds.T
    out = np.zeros(len(chunk.ids), _GPKG)
    out["magic"], out["version"], out["flags"], out["srs_id"] = b"GP", 0, 0b011, 4326
    out["envelope"] = np.stack([west, east, south, north], axis=1)
    out["wkb"] = chunk.wkb()
    return out


def write_gpkg(path: Path, chunks: Iterator[Chunk], extent: tuple | None,
               tick: Callable[[int], None]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # a temporary file, fsynced and renamed once complete: no journal needed meanwhile
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.executescript(_GPKG_SCHEMA)
        db.execute("BEGIN")
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
                       _SRS_ROWS)
        db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description,"
                   " min_x, min_y, max_x, max_y, srs_id) VALUES (?, 'features', ?, ?, ?, ?, "
                   "?, ?, 4326)", (LAYER, LAYER, DESCRIPTION, *(extent or [None] * 4)))
        db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POLYGON', 4326, 0, "
                   "0)", (LAYER,))
        db.execute("INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
                   "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
                   (LAYER,))
        for chunk in chunks:
            geometries = _gpkg_geometries(chunk)
            db.executemany(
                f"INSERT INTO {LAYER} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((int(i), g.tobytes(), int(i), p, *map(int, w), float(v), c)
                 for i, g, p, w, v, c in zip(chunk.ids, geometries, chunk.paths,
                                             chunk.windows, chunk.valid, chunk.codes,
                                             strict=True)))
            db.executemany(f"INSERT INTO rtree_{LAYER}_geom VALUES (?, ?, ?, ?, ?)",
                           ((int(i), w, e, s, n) for i, (w, s, e, n)
                            in zip(chunk.ids, chunk.bounds.tolist(), strict=True)))
            tick(len(chunk.ids))
        db.execute("COMMIT")
        db.executescript(_rtree_triggers(LAYER))
    finally:
        db.close()


# -- GeoParquet -------------------------------------------------------------------------------
def geo_metadata(extent: tuple | None) -> dict:
    """GeoParquet 1.0 file metadata; no crs = OGC:CRS84 (lon/lat)."""
    column = {"encoding": "WKB", "geometry_types": ["Polygon"]}
    if extent is not None:
        column["bbox"] = list(extent)
    return {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}


def write_geoparquet(path: Path, chunks: Iterator[Chunk], extent: tuple | None,
                     tick: Callable[[int], None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = (pa.int64(), pa.string(), pa.int32(), pa.int32(), pa.int32(), pa.int32(),
             pa.float64(), pa.string(), pa.binary())
    schema = pa.schema(list(zip(PARQUET_COLUMNS, types, strict=True)),
                       metadata={"geo": json.dumps(geo_metadata(extent))})
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for chunk in chunks:
            n = len(chunk.ids)
            offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * _WKB.itemsize)
                                   .tobytes())
            wkb = pa.Array.from_buffers(pa.binary(), n,
                                        [None, offsets, pa.py_buffer(chunk.wkb().tobytes())])
            columns = [chunk.ids, chunk.paths, *chunk.windows.T, chunk.valid, chunk.codes, wkb]
            writer.write_table(pa.Table.from_arrays(
                [pa.array(c, type=f.type) if not isinstance(c, pa.Array) else c
                 for c, f in zip(columns, schema, strict=True)], schema=schema))
            tick(n)


WRITERS = {"gpkg": write_gpkg, "geoparquet": write_geoparquet}


# -- what an earlier export looks like (it may be replaced; any other file may not) ---------
def _exported_gpkg(path: Path, head: bytes) -> bool:
    """A GeoPackage written here: the GPKG application id and this module's layer row."""
    if not (head.startswith(b"SQLite format 3\0") and head[68:72] == b"GPKG"):
        return False
    try:  # read-only: checking a file must never change it
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT 1 FROM gpkg_contents WHERE table_name = ? AND "
                             "description = ?", (LAYER, DESCRIPTION)).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def _exported_geoparquet(path: Path, head: bytes) -> bool:
    """A GeoParquet file written here: Parquet with this module's columns and `geo`."""
    if not head.startswith(b"PAR1"):
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException):
        return False
    return tuple(schema.names) == PARQUET_COLUMNS and b"geo" in (schema.metadata or {})


OUTPUT_KINDS = {"gpkg": OutputKind("a GeoPackage written by mrhash export", _exported_gpkg),
                "geoparquet": OutputKind("a GeoParquet file written by mrhash export",
                                         _exported_geoparquet)}


def export_index(index_dir: str | Path, fmt: str | None, output: str | Path,
                 job: JobControl | None = None) -> dict:
    """Write every tile of the index to `output` (see the module doc). -> {output, format,
    n_tiles, seconds}."""
    from mrhash.indexer import IndexFolder

    started = time.monotonic()
    fmt = check_format(fmt, output)
    check_writable(output)
    folder = IndexFolder(index_dir, read_only=True)
    try:
        # never over the index's own files or its model, nor over a raster or any file that
        # is not an earlier export: checked before anything is written (the CLI, the worker)
        check_output(output, OUTPUT_KINDS[fmt], [(folder.root, INDEX_FOLDER),
                                                 (folder.store.get("model_path"), MODEL_FILE)])
        db = folder.store.db
        db.execute("BEGIN")  # one snapshot for the count, the extent and every row
        n_tiles = folder.store.count()
        extent = index_layout.tile_extent(db)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if job:
                job.check()
                job.report(done, n_tiles, f"{done:,}/{n_tiles:,} tiles")

        with atomic_output(output) as tmp:
            WRITERS[fmt](tmp, _rows(db), extent if n_tiles else None, tick)
        db.execute("COMMIT")
    finally:
        folder.close()
    if job:
        job.report(n_tiles, n_tiles, "done", force=True)
    return {"output": str(Path(output).resolve()), "format": fmt, "n_tiles": n_tiles,
            "seconds": round(time.monotonic() - started, 2)}
