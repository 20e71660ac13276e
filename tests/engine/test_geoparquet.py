"""GeoParquet 1.1 exports: the `bbox` covering column (struct xmin/ymin/xmax/ymax, declared in
the geo metadata's `covering`), rows in Hilbert order of their centres, one row group a chunk
with statistics a reader filters by, checked field by field against the 1.1 specification and
by `geoparquet-validator` (PyPI) where installed; on a real index (tiny model, 36 EuroSAT
tiles) and on a synthetic grid of 400 tiles large enough to judge the spatial order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from mrhash.index import export
from mrhash.index.export import BBOX_FIELDS, export_index, hilbert_keys
from test_export import stored
from test_index_support import indexed_folder, synthetic_index


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, eurosat_dir):
    return indexed_folder(tmp_path_factory, eurosat_dir, "geoparquet")


@pytest.fixture(scope="module")
def grid_index(tmp_path_factory, eurosat_dir):
    raster = sorted(eurosat_dir.glob("*/*.tif"))[0]
    relaxed = np.random.default_rng(0).uniform(-1, 1, (400, 64)).astype(np.float32)
    return synthetic_index(tmp_path_factory.mktemp("grid") / "index", raster, relaxed)


def exported(index, path, monkeypatch, chunk: int):
    import pyarrow.parquet as pq

    monkeypatch.setattr(export, "CHUNK", chunk)
    export_index(index, "geoparquet", path)
    return pq.ParquetFile(path)


def test_rows_carry_their_bbox_in_hilbert_order(index_dir, tmp_path, monkeypatch):
    parquet = exported(index_dir, tmp_path / "t.parquet", monkeypatch, 6)
    table = parquet.read()
    rows = {r[0]: r for r in stored(index_dir)}
    assert parquet.num_row_groups == 6 and table.num_rows == 36
    assert table.column_names[-2:] == ["geometry", "bbox"]
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(rows)
    boxes = np.array([[b[f] for f in BBOX_FIELDS] for b in table.column("bbox").to_pylist()])
    geometries = shapely.from_wkb(table.column("geometry").to_pylist())
    assert np.array_equal(boxes, [rows[i][8:12] for i in ids])
    assert np.array_equal(boxes, shapely.bounds(geometries))
    for name in ("path", "code"):  # every other column follows its row
        values = table.column(name).to_pylist()
        assert values == [rows[i][1] if name == "path" else rows[i][7].hex() for i in ids]
    geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
    keys = hilbert_keys((boxes[:, :2] + boxes[:, 2:]) / 2, geo["columns"]["geometry"]["bbox"])
    assert np.all(np.diff(keys) >= 0)  # space order


def test_geo_metadata_is_geoparquet_1_1(index_dir, tmp_path, monkeypatch):
    parquet = exported(index_dir, tmp_path / "t.parquet", monkeypatch, 10)
    geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
    bounds = np.array([r[8:12] for r in stored(index_dir)])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert "crs" not in column  # OGC:CRS84
    assert column["bbox"] == [bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(),
                              bounds[:, 3].max()]
    # the covering: each of xmin, ymin, xmax, ymax a path into a top-level struct column
    assert column["covering"] == {"bbox": {f: ["bbox", f] for f in BBOX_FIELDS}}
    box = parquet.schema_arrow.field("bbox").type
    assert [box.field(i).name for i in range(box.num_fields)] == list(BBOX_FIELDS)
    assert all(str(box.field(i).type) == "double" for i in range(box.num_fields))


def test_row_groups_have_bbox_statistics(grid_index, tmp_path, monkeypatch):
    parquet = exported(grid_index, tmp_path / "g.parquet", monkeypatch, 40)
    table = parquet.read()
    assert parquet.num_row_groups == 10
    names = parquet.schema_arrow.names
    spans, start = [], 0
    for group in range(parquet.num_row_groups):
        meta = parquet.metadata.row_group(group)
        stats = {meta.column(c).path_in_schema: meta.column(c).statistics
                 for c in range(meta.num_columns)}
        values = table.slice(start, meta.num_rows).column("bbox").to_pylist()
        start += meta.num_rows
        for field in BBOX_FIELDS:
            column = [v[field] for v in values]
            assert stats[f"bbox.{field}"].has_min_max
            assert (stats[f"bbox.{field}"].min, stats[f"bbox.{field}"].max) == (
                min(column), max(column))
        spans.append((stats["bbox.xmax"].max - stats["bbox.xmin"].min)
                     * (stats["bbox.ymax"].max - stats["bbox.ymin"].min))
    assert "bbox" in names
    # in space order the row groups tile the grid (0.195 x 0.195 degrees) with little
    # overlap: together hardly more than its extent (a random order: 10 times it)
    assert sum(spans) < 1.5 * 0.195 * 0.195


def test_hilbert_keys_walk_the_grid_cell_by_cell():
    side = 4
    cells = np.array([(x, y) for y in range(side) for x in range(side)], float)
    keys = hilbert_keys(cells, (0.0, 0.0, side - 1.0, side - 1.0))
    assert len(set(keys.tolist())) == 16
    walk = cells[np.argsort(keys)]
    assert np.all(np.abs(np.diff(walk, axis=0)).sum(axis=1) == 1)  # each step: a neighbour


@pytest.mark.parametrize("fixture, chunk", [("index_dir", 6), ("grid_index", 40)])
def test_the_validator_finds_it_conformant(fixture, chunk, request, tmp_path, monkeypatch):
    validator = pytest.importorskip("geoparquet_validator")
    out = tmp_path / "t.parquet"
    exported(request.getfixturevalue(fixture), out, monkeypatch, chunk)
    report = validator.check(str(out))
    assert validator.conformant(report), validator.failed(report)
    assert report["version"] == "1.1.0"
    status = {o["id"]: o["status"] for o in report["outcomes"]}
    assert all(status[f"/conf/covering/{t}"] == "pass" for t in (
        "keys", "bbox-paths", "bbox-column-structure", "bbox-column-type"))
    assert status["/conf/distribution/geospatial-statistics"] == "pass"
    if fixture == "grid_index":
        assert status["/conf/distribution/spatial-order"] == "pass"


def test_an_export_of_geoparquet_1_0_may_be_replaced(index_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "old.parquet"
    columns = export.PARQUET_COLUMNS[:-1]
    pq.write_table(pa.table({c: [] for c in columns}).replace_schema_metadata(
        {"geo": json.dumps({"version": "1.0.0"})}), out)
    assert export_index(index_dir, None, out)["n_tiles"] == 36
    assert pq.read_schema(out).names[-1] == "bbox"
