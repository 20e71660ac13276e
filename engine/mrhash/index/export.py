"""`mrhash export`: every tile of an index as a vector file other tools open: GeoPackage or
GeoParquet 1.1, written without QGIS or GDAL.

One feature a tile: id, path (its primary raster), col, row, width, height (pixel window),
valid_fraction, code (hex); geometry = the footprint's EPSG:4326 box (the stored bounds), a
polygon of 5 points, counter-clockwise.

- GeoPackage 1.2: plain sqlite3 and the spec's tables (gpkg_spatial_ref_sys, gpkg_contents,
  gpkg_geometry_columns, gpkg_extensions), geometries as the GeoPackage binary header
  (envelope) + WKB, and the R-tree spatial index extension with the spec's triggers (added
  last: they call ST_* functions that only GeoPackage readers such as GDAL provide).
- GeoParquet 1.1 (pyarrow): WKB column `geometry`, its `bbox` covering column (struct xmin,
  ymin, xmax, ymax, declared in the `geo` file metadata's `covering`; no crs: OGC:CRS84,
  lon/lat); the rows in Hilbert order of their centres (`hilbert_keys`), one row group per
  chunk with the column statistics, so a reader skips the row groups outside its area.
- The GeoPackage helpers (`GpkgLayer`, `gpkg_create`, `gpkg_insert`, `gpkg_finish`,
  `gpkg_boxes`, `gpkg_geometry`) also write `mrhash map`'s layers (mapping.py).

Rows are streamed in chunks from one read transaction (a build running meanwhile is seen as
of the start), so memory stays flat at any size (the GeoParquet order keeps 24 bytes a tile:
its id and centre); the file is written beside the output and
renamed over it only once complete. The output may not be in the index folder or be the
index's model, and an existing file is replaced only when it is an earlier export of the
same format (outputs.py): never a raster or any other file.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mrhash_contract import index_layout
from mrhash_contract.protocol import ExportResult

from mrhash.errors import BadInput
from mrhash.fileio import atomic_output, check_writable
from mrhash.index.folder import IndexFolder
from mrhash.jobs import JobControl
from mrhash.outputs import INDEX_FOLDER, MODEL_FILE, OutputKind, check_output

FORMATS = {"gpkg": ".gpkg", "geoparquet": ".parquet"}
CHUNK = 50_000
LAYER = "tiles"
DESCRIPTION = "MrHash index tiles"  # of the layer in gpkg_contents: how an export is known
BBOX, BBOX_FIELDS = "bbox", ("xmin", "ymin", "xmax", "ymax")  # GeoParquet 1.1 covering

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
        return box_wkb(self.bounds)


def box_wkb(bounds: np.ndarray) -> np.ndarray:
    """Boxes [n, 4] (west, south, east, north) as WKB polygon records (structured array, 93
    bytes each: 5 points, counter-clockwise)."""
    west, south, east, north = np.asarray(bounds, np.float64).reshape(-1, 4).T
    out = np.zeros(len(west), _WKB)
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
_GPKG_SCHEMA = """
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
"""
# the attribute columns of an export's tiles layer (fid = the tile id)
TILE_COLUMNS = ("id INTEGER NOT NULL, path TEXT NOT NULL, col MEDIUMINT NOT NULL, "
                "row MEDIUMINT NOT NULL, width MEDIUMINT NOT NULL, height MEDIUMINT NOT NULL, "
                "valid_fraction REAL NOT NULL, code TEXT NOT NULL")


@dataclass(frozen=True)
class GpkgLayer:
    """A feature table of a GeoPackage: its name, description (in gpkg_contents: how a file
    written here is known again), attribute columns after fid and geom (SQL), geometry
    type."""

    name: str
    description: str
    columns: str
    geometry_type: str = "POLYGON"

    @property
    def n_columns(self) -> int:
        """fid, geom and the attribute columns."""
        return 2 + self.columns.count(",") + 1


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


def gpkg_boxes(bounds: np.ndarray) -> np.ndarray:
    """Boxes [n, 4] (west, south, east, north, EPSG:4326) as GeoPackage geometry blobs
    (structured array: the binary header with its envelope, then the WKB polygon)."""
    bounds = np.asarray(bounds, np.float64).reshape(-1, 4)
    west, south, east, north = bounds.T
    out = np.zeros(len(bounds), _GPKG)
    out["magic"], out["version"], out["flags"], out["srs_id"] = b"GP", 0, 0b011, 4326
    out["envelope"] = np.stack([west, east, south, north], axis=1)
    out["wkb"] = box_wkb(bounds)
    return out


def gpkg_geometry(wkb: bytes, bounds: tuple[float, float, float, float]) -> bytes:
    """Any little-endian WKB geometry (EPSG:4326) as a GeoPackage geometry blob with its
    envelope (west, south, east, north)."""
    west, south, east, north = bounds
    return struct.pack("<2sBBi4d", b"GP", 0, 0b011, 4326, west, east, south, north) + wkb


def gpkg_create(db: sqlite3.Connection, layers: list[GpkgLayer]) -> None:
    """The GeoPackage tables and `layers` (empty, extent unknown) in a new file, then BEGIN:
    rows go in with `gpkg_insert`, and `gpkg_finish` commits."""
    # a temporary file, fsynced and renamed once complete: no journal needed meanwhile
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(_GPKG_SCHEMA)
    db.execute("BEGIN")
    db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _SRS_ROWS)
    for layer in layers:
        db.execute(f"CREATE TABLE {layer.name} (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT "
                   f"NULL, geom {layer.geometry_type}, {layer.columns})")
        db.execute(f"CREATE VIRTUAL TABLE rtree_{layer.name}_geom USING rtree(id, minx, maxx, "
                   "miny, maxy)")
        db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description,"
                   " srs_id) VALUES (?, 'features', ?, ?, 4326)",
                   (layer.name, layer.name, layer.description))
        db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, 4326, 0, 0)",
                   (layer.name, layer.geometry_type))
        db.execute("INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
                   "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
                   (layer.name,))


def gpkg_insert(db: sqlite3.Connection, layer: GpkgLayer, fids: np.ndarray,
                rows: Iterable[tuple], boxes: np.ndarray) -> None:
    """Features of `layer`: rows (fid, geometry blob, attributes...) with the fids [n] and
    boxes [n, 4] (west, south, east, north) of the R-tree, in the same order."""
    db.executemany(f"INSERT INTO {layer.name} VALUES ({', '.join('?' * layer.n_columns)})",
                   rows)
    db.executemany(f"INSERT INTO rtree_{layer.name}_geom VALUES (?, ?, ?, ?, ?)",
                   ((int(f), w, e, s, n) for f, (w, s, e, n)
                    in zip(fids, np.asarray(boxes).reshape(-1, 4).tolist(), strict=True)))


def gpkg_finish(db: sqlite3.Connection, extents: dict[str, tuple | None]) -> None:
    """Each layer's extent (west, south, east, north; None: empty) in gpkg_contents, COMMIT,
    then the R-tree triggers (last: they call ST_* functions that only GeoPackage readers
    such as GDAL provide)."""
    for name, extent in extents.items():
        if extent is not None and None not in extent:
            db.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? "
                       "WHERE table_name = ?", (*map(float, extent), name))
    db.execute("COMMIT")
    for name in extents:
        db.executescript(_rtree_triggers(name))


def write_gpkg(path: Path, chunks: Iterator[Chunk], extent: tuple | None,
               tick: Callable[[int], None]) -> None:
    layer = GpkgLayer(LAYER, DESCRIPTION, TILE_COLUMNS)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        gpkg_create(db, [layer])
        for chunk in chunks:
            geometries = gpkg_boxes(chunk.bounds)
            gpkg_insert(db, layer, chunk.ids,
                        ((int(i), g.tobytes(), int(i), p, *map(int, w), float(v), c)
                         for i, g, p, w, v, c in zip(chunk.ids, geometries, chunk.paths,
                                                     chunk.windows, chunk.valid, chunk.codes,
                                                     strict=True)), chunk.bounds)
            tick(len(chunk.ids))
        gpkg_finish(db, {LAYER: extent})
    finally:
        db.close()


# -- GeoParquet -------------------------------------------------------------------------------
HILBERT_ORDER = 16  # a 65,536 x 65,536 grid over the extent: finer than any two tile centres


def hilbert_keys(centres: np.ndarray, extent: tuple[float, float, float, float]
                 ) -> np.ndarray:
    """Each point's [n, 2] distance along the Hilbert curve of a 2**HILBERT_ORDER grid over
    `extent` (west, south, east, north): points near on the curve are near in space, so rows
    sorted by it form row groups of small, little-overlapping extents (int64 [n])."""
    side = 1 << HILBERT_ORDER
    west, south, east, north = extent
    span = np.maximum([east - west, north - south], 1e-12)
    grid = ((np.asarray(centres, np.float64).reshape(-1, 2) - [west, south]) / span
            * (side - 1)).round().clip(0, side - 1).astype(np.int64)
    x, y = grid[:, 0].copy(), grid[:, 1].copy()
    keys = np.zeros(len(grid), np.int64)
    step = side >> 1
    while step:  # xy2d, vectorised: one quadrant digit a level, then rotate the quadrant
        rx, ry = (x & step) > 0, (y & step) > 0
        keys += step * step * ((3 * rx) ^ ry)
        flip = ~ry & rx
        x, y = np.where(flip, side - 1 - x, x), np.where(flip, side - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        step >>= 1
    return keys


def _rows_in_space(store, db: sqlite3.Connection, extent: tuple | None) -> Iterator[Chunk]:
    """Every tile in Hilbert order of its box centre (ties by id), CHUNK at a time: one pass
    for the ids and centres (24 bytes a tile), then the rows read back by id in that order."""
    ids, centres = [], []
    for chunk in _rows(db):
        ids.append(chunk.ids)
        centres.append((chunk.bounds[:, :2] + chunk.bounds[:, 2:]) / 2)
    if not ids or extent is None:
        return
    ids = np.concatenate(ids)
    ordered = ids[np.argsort(hilbert_keys(np.concatenate(centres), extent), kind="stable")]
    del ids, centres
    for start in range(0, len(ordered), CHUNK):
        part = ordered[start:start + CHUNK].tolist()
        records = store.tiles(part)
        yield Chunk.of([(r.id, r.path, *r.window, r.valid_fraction, r.code, *r.bounds4326)
                        for r in (records[i] for i in part if i in records)])


def geo_metadata(extent: tuple | None, geometry_types: tuple[str, ...] = ("Polygon",)
                 ) -> dict:
    """GeoParquet 1.1 file metadata; no crs = OGC:CRS84 (lon/lat); the `bbox` column is
    the geometry's covering (readers filter row groups by its statistics)."""
    column = {"encoding": "WKB", "geometry_types": list(geometry_types),
              "covering": {"bbox": {name: [BBOX, name] for name in BBOX_FIELDS}}}
    if extent is not None:
        column["bbox"] = list(extent)
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


class GeoParquetWriter:
    """A GeoParquet 1.1 file of attribute columns, then `geometry` (WKB, lon/lat) and its
    `bbox` covering: one row group a `write` (give rows in space order, `hilbert_keys`), with
    the statistics pyarrow keeps of every column, the bbox fields included. A context
    manager; pyarrow is imported only here (an optional dependency of exports)."""

    def __init__(self, path: Path, attributes: list[tuple[str, str]], extent: tuple | None,
                 geometry_types: tuple[str, ...] = ("Polygon",)):
        # the optional parquet extra: only for GeoParquet
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._box = pa.struct([(name, pa.float64()) for name in BBOX_FIELDS])
        self.schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in attributes]
                                + [("geometry", pa.binary()), (BBOX, self._box)],
                                metadata={"geo": json.dumps(geo_metadata(extent,
                                                                         geometry_types))})
        self._writer = pq.ParquetWriter(str(path), self.schema, compression="zstd",
                                        write_statistics=True)

    def __enter__(self) -> GeoParquetWriter:
        return self

    def __exit__(self, *_exc) -> None:
        self._writer.close()

    def write(self, columns: list, wkb, bounds: np.ndarray) -> None:
        """One row group: the attribute columns (sequences, in schema order), the geometries
        (a pyarrow binary array, or a list of WKB bytes) and their boxes [n, 4] (west, south,
        east, north)."""
        pa = self._pa
        bounds = np.asarray(bounds, np.float64).reshape(-1, 4)
        geometry = wkb if isinstance(wkb, pa.Array) else pa.array(wkb, pa.binary())
        bbox = pa.StructArray.from_arrays([pa.array(v) for v in bounds.T],
                                          fields=list(self._box))
        arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=False)]
        self._writer.write_table(pa.Table.from_arrays([*arrays, geometry, bbox],
                                                      schema=self.schema),
                                 row_group_size=max(len(bounds), 1))


def box_wkb_array(bounds: np.ndarray):
    """Boxes [n, 4] as a pyarrow binary array of WKB polygons, without a copy a row."""
    # the optional parquet extra: only for GeoParquet
    import pyarrow as pa

    n = len(bounds)
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * _WKB.itemsize).tobytes())
    return pa.Array.from_buffers(pa.binary(), n,
                                 [None, offsets, pa.py_buffer(box_wkb(bounds).tobytes())])


TILE_ATTRIBUTES = [("id", "int64"), ("path", "string"), ("col", "int32"), ("row", "int32"),
                   ("width", "int32"), ("height", "int32"), ("valid_fraction", "float64"),
                   ("code", "string")]
PARQUET_COLUMNS = (*(name for name, _ in TILE_ATTRIBUTES), "geometry", BBOX)


def write_geoparquet(path: Path, chunks: Iterator[Chunk], extent: tuple | None,
                     tick: Callable[[int], None]) -> None:
    """The index's tiles (in space order: `_rows_in_space`), one row group a chunk."""
    with GeoParquetWriter(path, TILE_ATTRIBUTES, extent) as writer:
        for chunk in chunks:
            writer.write([chunk.ids, chunk.paths, *chunk.windows.T, chunk.valid, chunk.codes],
                         box_wkb_array(chunk.bounds), chunk.bounds)
            tick(len(chunk.ids))


WRITERS = {"gpkg": write_gpkg, "geoparquet": write_geoparquet}


# -- what an earlier export looks like (it may be replaced; any other file may not) ---------
def gpkg_written(path: Path, head: bytes, layer: str, description: str) -> bool:
    """A GeoPackage written here: the GPKG application id and the row of `layer` with
    `description` in gpkg_contents."""
    if not (head.startswith(b"SQLite format 3\0") and head[68:72] == b"GPKG"):
        return False
    try:  # read-only: checking a file must never change it
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT 1 FROM gpkg_contents WHERE table_name = ? AND "
                             "description = ?", (layer, description)).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def _exported_gpkg(path: Path, head: bytes) -> bool:
    """A GeoPackage written by an export (this module's layer row)."""
    return gpkg_written(path, head, LAYER, DESCRIPTION)


def geoparquet_written(path: Path, head: bytes, *columns: tuple[str, ...]) -> bool:
    """A GeoParquet file written here: Parquet with `geo` metadata and one of the column
    lists `columns`."""
    if not head.startswith(b"PAR1"):
        return False
    # the optional parquet extra: only for GeoParquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException):
        return False
    return tuple(schema.names) in columns and b"geo" in (schema.metadata or {})


def _exported_geoparquet(path: Path, head: bytes) -> bool:
    """An export's GeoParquet (one of before GeoParquet 1.1, without the bbox column, too)."""
    return geoparquet_written(path, head, PARQUET_COLUMNS, PARQUET_COLUMNS[:-1])


OUTPUT_KINDS = {"gpkg": OutputKind("a GeoPackage written by mrhash export", _exported_gpkg),
                "geoparquet": OutputKind("a GeoParquet file written by mrhash export",
                                         _exported_geoparquet)}


def export_index(index_dir: str | Path, fmt: str | None, output: str | Path,
                 job: JobControl | None = None) -> dict:
    """Write every tile of the index to `output` (see the module doc). -> {output, format,
    n_tiles, seconds}."""
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

        extent = extent if n_tiles else None
        rows = _rows(db) if fmt == "gpkg" else _rows_in_space(folder.store, db, extent)
        with atomic_output(output) as tmp:
            WRITERS[fmt](tmp, rows, extent, tick)
        db.execute("COMMIT")
    finally:
        folder.close()
    if job:
        job.report(n_tiles, n_tiles, "done", force=True)
    return ExportResult(str(Path(output).resolve()), fmt, n_tiles,
                        round(time.monotonic() - started, 2)).to_result()
