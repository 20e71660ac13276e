"""`mrhash export` of a real index: a GeoPackage that Debian's GDAL opens and validates, a
GeoParquet file pyarrow reads back with its `geo` metadata; chunked streaming, atomic
replacement, checks before work, the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import shapely
from mrhash.errors import BadInput, Cancelled, IndexCorrupted
from mrhash.index import export
from mrhash.index.build import DB_FILE
from mrhash.index.export import export_index
from mrhash.jobs import JobControl
from test_index_support import THREADS_ENV, indexed_folder

GDAL_PYTHON = "/usr/bin/python3"  # Debian's, with osgeo (never imported by the engine)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, eurosat_dir):
    return indexed_folder(tmp_path_factory, eurosat_dir, "export")


def stored(index_dir) -> list[tuple]:
    with sqlite3.connect(index_dir / DB_FILE) as db:
        return db.execute("SELECT t.id, f.path, t.col, t.row, t.width, t.height, "
                          "t.valid_fraction, t.code, t.west, t.south, t.east, t.north "
                          "FROM tiles t JOIN files f ON f.id = t.file_id ORDER BY t.id").fetchall()


GDAL_READ = """
import json, sys
from osgeo import gdal, ogr
gdal.UseExceptions()
ds = ogr.Open(sys.argv[1])
layer = ds.GetLayer(0)
defn = layer.GetLayerDefn()
names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
features = [layer.GetNextFeature() for _ in range(layer.GetFeatureCount())]
first = features[0]
layer.SetSpatialFilterRect(*[float(v) for v in sys.argv[2:6]])
indexed = ds.ExecuteSQL("SELECT HasSpatialIndex('tiles', 'geom')").GetNextFeature()
print(json.dumps({
    "name": layer.GetName(), "count": len(features),
    "srs": layer.GetSpatialRef().GetAuthorityCode(None),
    "geometry_type": ogr.GeometryTypeToName(layer.GetGeomType()), "fields": names,
    "first": {"fid": first.GetFID(), **{n: first.GetField(n) for n in names}},
    "first_wkt": first.GetGeometryRef().ExportToWkt(),
    "in_box": layer.GetFeatureCount(), "spatial_index": indexed.GetField(0)}))
"""


def test_geopackage_opens_in_gdal_and_validates(index_dir, tmp_path):
    out = tmp_path / "tiles.gpkg"
    result = export_index(index_dir, "gpkg", out)
    rows = stored(index_dir)
    assert result == {"output": str(out.resolve()), "format": "gpkg", "n_tiles": 36,
                      "seconds": result["seconds"]}
    west, south, east, north = rows[0][8:12]
    read = subprocess.run([GDAL_PYTHON, "-c", GDAL_READ, str(out), str(west), str(south),
                           str(east), str(north)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert read.returncode == 0, read.stderr
    info = json.loads(read.stdout)
    assert info["count"] == 36 and info["srs"] == "4326" and info["name"] == "tiles"
    assert info["geometry_type"] == "Polygon" and info["spatial_index"] == 1
    assert info["fields"] == ["id", "path", "col", "row", "width", "height", "valid_fraction",
                              "code"]
    first = info["first"]
    assert (first["fid"], first["id"], first["path"]) == (rows[0][0], rows[0][0], rows[0][1])
    assert [first[k] for k in ("col", "row", "width", "height")] == list(rows[0][2:6])
    assert first["code"] == rows[0][7].hex() and first["valid_fraction"] == rows[0][6]
    geometry = shapely.from_wkt(info["first_wkt"])  # WKT text: 15 significant digits
    assert shapely.equals_exact(shapely.normalize(geometry),
                                shapely.normalize(shapely.box(west, south, east, north)), 1e-9)
    assert info["in_box"] >= 1  # the R-tree answers a spatial filter
    # the GeoPackage validator shipped with GDAL finds nothing wrong
    check = subprocess.run([GDAL_PYTHON, "-m", "osgeo_utils.samples.validate_gpkg", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_geoparquet_reads_back_with_its_geo_metadata(index_dir, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(export, "CHUNK", 10)  # streamed: 4 chunks, one row group each
    out = tmp_path / "tiles.parquet"
    assert export_index(index_dir, None, out)["format"] == "geoparquet"  # by extension
    table = pq.read_table(out)
    rows = {r[0]: r for r in stored(index_dir)}
    assert pq.ParquetFile(out).num_row_groups == 4
    assert table.column_names == ["id", "path", "col", "row", "width", "height",
                                  "valid_fraction", "code", "geometry", "bbox"]
    ids = table.column("id").to_pylist()  # in space order (tests/engine/test_geoparquet.py)
    assert sorted(ids) == sorted(rows)
    assert table.column("path").to_pylist() == [rows[i][1] for i in ids]
    assert table.column("code").to_pylist() == [rows[i][7].hex() for i in ids]
    assert table.column("width").to_pylist() == [rows[i][4] for i in ids]
    boxes = shapely.from_wkb(table.column("geometry").to_pylist())
    assert all(b.equals(shapely.box(*rows[i][8:12])) for b, i in zip(boxes, ids, strict=True))
    assert all(b.exterior.is_ccw for b in boxes)
    geo = json.loads(table.schema.metadata[b"geo"])
    bounds = np.array([r[8:12] for r in rows.values()])
    assert geo == {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"],
        "covering": {"bbox": {f: ["bbox", f] for f in ("xmin", "ymin", "xmax", "ymax")}},
        "bbox": [bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(),
                 bounds[:, 3].max()]}}}


def test_an_existing_output_is_replaced_only_on_success(index_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "CHUNK", 10)
    out = tmp_path / "tiles.gpkg"
    export_index(index_dir, "gpkg", out)  # the previous export
    previous = out.read_bytes()
    events = []
    job = JobControl(lambda event: (events.append(event), job.cancel()), min_interval_s=0)
    with pytest.raises(Cancelled):
        export_index(index_dir, "gpkg", out, job)
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.gpkg"]  # no temporary left
    events.clear()
    export_index(index_dir, "gpkg", out, JobControl(events.append, min_interval_s=0))
    assert out.read_bytes()[:16] == b"SQLite format 3\0"
    assert [e["done"] for e in events] == [10, 20, 30, 36, 36]
    assert events[-1]["fraction"] == 1.0


def test_bad_outputs_are_refused_before_any_work(index_dir, tmp_path):
    for output, fmt, message in ((tmp_path / "missing" / "t.gpkg", "gpkg", "does not exist"),
                                 (tmp_path, "gpkg", "is a folder"),
                                 (tmp_path / "t.shp", None, "cannot tell the format"),
                                 (tmp_path / "t.gpkg", "shapefile", "unknown export format")):
        with pytest.raises(BadInput, match=message):
            export_index(index_dir, fmt, output)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IndexCorrupted, match="not an index folder"):
        export_index(tmp_path, "gpkg", tmp_path / "t.gpkg")


def test_export_command(index_dir, tmp_path):
    out = tmp_path / "tiles.parquet"
    run = subprocess.run([sys.executable, "-m", "mrhash", "export", "--index", str(index_dir),
                          "--format", "geoparquet", "--output", str(out)],
                         capture_output=True, text=True, timeout=120, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    assert "36 tiles" in run.stderr and out.is_file()
    bad = subprocess.run([sys.executable, "-m", "mrhash", "export", "--index", str(index_dir),
                          "--output", str(tmp_path / "no" / "t.gpkg")], capture_output=True,
                         text=True, timeout=120, env=THREADS_ENV)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
