"""The protocol's typed requests and results (mrhash_contract.protocol): what the plugin
builds survives the line to the worker unchanged and what the worker builds survives it back,
wrong values are errors naming the parameter or the result's field, and every method the
worker answers has its type."""

from __future__ import annotations

import io
import json
import re

import pytest
from mrhash.app.worker import Worker
from mrhash.errors import BadInput, user_error
from mrhash_contract import protocol
from mrhash_contract.protocol import (
    REQUESTS,
    Example,
    ExportMapRequest,
    ExportMapResult,
    ExportRequest,
    ExportResult,
    FileProblem,
    Hit,
    IndexRequest,
    IndexResult,
    MapDetection,
    MapParquet,
    MapRequest,
    MapResult,
    MarkedPlace,
    OpenRequest,
    OpenResult,
    QueryPlace,
    QueryRequest,
    QueryResult,
    RefineRequest,
    RequestError,
    ResultError,
    ScannedLayout,
    ScannedSource,
    ScanRequest,
    ScanResult,
    SourceEntry,
    StacItem,
    StacItemsResult,
    Ties,
    TrainRequest,
)

ROUND_TRIPS = [
    ScanRequest("/data/archive"),
    IndexRequest("/data/archive", "/m/model.safetensors", "/m/index", 64, 32, 0.25, True,
                 [4, 3, "B02"], "local:2", False),
    IndexRequest("/data/archive", "/m/model.safetensors", "/m/index"),
    ExportRequest("/m/index", "/out/tiles.parquet", "geoparquet"),
    QueryRequest(point=(500000.0, 4170000.0), crs="EPSG:32618", raster="/d/a.tif",
                 index="/m/index", k=7, within="POLYGON((0 0,1 0,1 1,0 0))",
                 exclude_radius=250.0, thumbnails=True),
    QueryRequest(tile=12, index="/m/index"),
    OpenRequest("/m/index"),
    OpenRequest("/m/index", "/moved/model.safetensors"),
    RefineRequest([Example(tile=3, relevant=True), Example(tile=9, relevant=False),
                   Example(footprint="POLYGON((0 0,1 0,1 1,0 0))", footprint_crs="EPSG:3857",
                           relevant=True)], "/m/index", k=30, exclude_examples=False),
    TrainRequest("/m/model.safetensors", SourceEntry.local(["/d/a.tif", "/d/b.tif"], [4, 3, 2]),
                 [SourceEntry(name="s2", stac="https://x.org/stac", assets=["B05"],
                              max_cloud=20.0),
                  SourceEntry(name="web", url="https://tiles.x.org/{z}/{x}/{y}.png", bands=[1])],
                 [("nir", [8])], "2021-01-01/2021-12-31", 30.0, "/cache",
                 {"bits": 32, "clusters": 10, "rgb": [0, 1, 2]}),
    MapRequest([Example(tile=3, relevant=True), Example(point=(10.0, 50.0), raster="/d/a.tif",
                                                        bands=[1, 1, 1], relevant=True),
                Example(tile=9, relevant=False)], "/m/index", "/out/map.gpkg",
               threshold=0.7, floor=0.2, within="POLYGON((0 0,1 0,1 1,0 0))"),
    ExportMapRequest("/r/map_1.gpkg", "/out/greenhouses.parquet", threshold=0.72),
]


@pytest.mark.parametrize("request_", ROUND_TRIPS, ids=lambda r: type(r).__name__)
def test_a_request_survives_the_line(request_):
    line = json.dumps(request_.to_params())  # what the plugin writes
    assert type(request_).from_params(json.loads(line)) == request_
    assert REQUESTS[request_.METHOD] is type(request_)


def test_every_job_and_answer_has_its_method():
    typed = set(REQUESTS)
    assert typed <= set(protocol.JOB_METHODS) | set(protocol.ANSWERED)
    assert set(protocol.LONG_JOBS) <= typed


@pytest.mark.parametrize("cls, params, message", [
    (ScanRequest, {}, "scan needs folder"),
    (IndexRequest, {"folder": "f", "model": "m"}, "index needs index"),
    (IndexRequest, {"folder": "f", "model": "m", "index": "i", "tile_size": "big"},
     "bad index parameters"),
    (ExportRequest, {"index": "i"}, "export needs output"),
    (OpenRequest, {}, "open needs index"),
    (OpenRequest, {"index": "i", "model": 3}, "bad open parameters"),
    (QueryRequest, {"point": [1]}, "bad place"),
    (QueryRequest, {"tile": 3, "k": "many"}, "bad query parameters"),
    (RefineRequest, {"examples": {"tile": 3}}, "needs examples"),
    (RefineRequest, {"examples": [{"tile": 3, "relevant": "yes"}]}, "needs relevant"),
    (TrainRequest, {"primary": {"folder": "p"}}, "train needs output"),
    (TrainRequest, {"output": "m", "primary": {"bands": [1]}}, "primary needs paths"),
    (TrainRequest, {"output": "m", "primary": {"folder": "p", "colour": 1}}, "unknown keys"),
    (TrainRequest, {"output": "m", "primary": {"folder": "p"},
                    "auxiliary": [{"stac": "https://x"}]}, "needs assets"),
])
def test_wrong_values_name_the_parameter(cls, params, message):
    with pytest.raises(RequestError, match=message) as raised:
        cls.from_params(params)
    assert isinstance(user_error(raised.value), BadInput)  # reaches users as bad_input


def test_validation_and_the_bare_epsg_code():
    query = QueryRequest(point=(1.0, 2.0), crs="32632", footprint_crs="3857")
    query.validate()
    assert (query.crs, query.footprint_crs) == ("EPSG:32632", "EPSG:3857")
    for bad, message in ((QueryRequest(), "exactly one"),
                         (QueryRequest(tile=2, k=0), "k must be"),
                         (QueryRequest(point=(float("inf"), 0.0)), "not a finite"),
                         (QueryRequest(tile=-4), "positive"),
                         (RefineRequest([Example(tile=1, relevant=False)]), "one relevant")):
        with pytest.raises(RequestError, match=message):
            bad.validate()


def test_the_worker_answers_a_mistyped_request_with_bad_input():
    out = io.StringIO()
    worker = Worker(out, "cpu")
    for line in ({"id": 1, "method": "query", "params": {"index": "/nowhere", "k": "x",
                                                         "tile": 1}},
                 {"id": 2, "method": "refine", "params": {"index": "/nowhere"}},
                 {"id": 3, "method": "scan", "params": {}}):
        assert worker.handle(json.dumps(line))
    worker.shutdown()
    errors = {}
    for text in out.getvalue().splitlines():
        reply = json.loads(text)
        if "error" in reply:
            errors[reply["id"]] = reply["error"]
    assert [errors[i]["code"] for i in (1, 2, 3)] == ["bad_input"] * 3
    assert "bad query parameters" in errors[1]["message"]
    assert "needs examples" in errors[2]["message"]
    assert "scan needs folder" in errors[3]["message"]


SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}
HIT = Hit(1, 12, 3, 0.91, "/d/a.tif", SQUARE, ["/d/a.tif"], [0, 64, 64, 64], "EPSG:32618",
          [500000.0, 4170000.0, 500640.0, 4170640.0], "/i/thumbnails/12_96.png")
PROBLEM = FileProblem("/d/bad.tif", "/d/bad.tif: not a raster")
RESULTS = [
    HIT,
    QueryResult(QueryPlace(SQUARE, "EPSG:32618", [0.0, 0.0, 1.0, 1.0], "00ff", "/d/a.tif", 12),
                [HIT], 36, 0.02, Ties(3, 37, True), index="/i", layout="flat",
                display_bands=[3, 2, 1], display_limits=[[0.0, 1.0]] * 3),
    QueryResult(QueryPlace(SQUARE, "EPSG:4326", [0.0, 0.0, 1.0, 1.0], "00ff", "/d/a.tif",
                           n_relevant=1, n_irrelevant=1,
                           examples=[MarkedPlace(True, "/d/a.tif", [0.0, 0.0, 1.0, 1.0],
                                                 "EPSG:4326", 12)]),
                [HIT, Hit(2, 4, 0, 0.0, "/d/b.tif", SQUARE, index="/j")], 72, 0.5,
                indexes=["/i", "/j"]),
    QueryResult(QueryPlace(), [], 0, 0.0),
    OpenResult("/i", 36, "/m/model.safetensors", 1.5),
    IndexResult("/i", 36, 36, 0, 0, 9, 0, [PROBLEM], [PROBLEM], 2.5, 14.4),
    IndexResult("/i", 0),
    ScanResult("/d", 2, [ScannedSource(
        "a", ["/d/a.tif"], "EPSG:32618", [10.0, 10.0], 64, 64, 3, ["red", None, "blue"],
        [[10.0, 10.0]] * 3, "uint16", None, {"crs": "EPSG:32618"}, {"geojson": SQUARE},
        ScannedLayout(["red", None, "blue"], "rgb", True))], [PROBLEM]),
    ExportResult("/out/tiles.gpkg", "gpkg", 36, 0.3),
    MapResult("/out/map.gpkg", "logistic", 0.5, 0.1, 36, 20, 5, 0.25, 2,
              [MapDetection(3, "/d/a.tif", 0.97), MapDetection(4, "/d/b.tif", 0.6, "/j")], 1.0),
    ExportMapResult(MapParquet("/o/m_areas.parquet", "/o/m_tiles.parquet"), 5, 3, 2, 0.7, 0.1),
    StacItemsResult("https://x.org/stac", 1, [StacItem(
        "s2_east", "https://x.org/stac/items/s2_east.json", None, 12.5, [0.0, 0.0, 1.0, 1.0],
        SQUARE, ["B04", "B08"])], 2),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_a_result_survives_the_line(result):
    line = json.dumps(result.to_result(), allow_nan=False)  # what the worker writes
    assert type(result).from_result(json.loads(line)) == result


def test_absent_and_null_fields_keep_the_wire_format():
    hit = Hit(1, 2, 0, 1.0, "a.tif", SQUARE).to_result()
    assert "thumbnail" not in hit and "index" not in hit  # not asked, one index
    refined = QueryResult(QueryPlace(), [], 0, 0.0).to_result()
    assert refined["ties"] is None and refined["query"] == {}  # a refine's `ties: null`
    assert ScannedSource.from_result(RESULTS[7].sources[0].to_result()).band_layout().roles == (
        "red", None, "blue")


@pytest.mark.parametrize("cls, answer, field", [
    (QueryResult, {"query": {}, "hits": [{**HIT.to_result(), "distance": "3"}], "n_tiles": 1,
                   "seconds": 0.1}, "QueryResult.hits[0].distance must be int"),
    (QueryResult, {"query": {}, "hits": [], "seconds": 0.1}, "QueryResult.n_tiles is missing"),
    (QueryResult, {"query": [], "hits": [], "n_tiles": 1, "seconds": 0.1},
     "QueryResult.query must be a JSON object"),
    (QueryResult, {"query": {}, "hits": [], "n_tiles": 1, "seconds": 0.1,
                   "ties": {"distance": 0, "count": True}}, "QueryResult.ties.count must be int"),
    (IndexResult, {"index": "/i", "n_tiles": 3, "skipped": [{"path": "/d/x.tif"}]},
     "IndexResult.skipped[0].error is missing"),
    (MapResult, {**RESULTS[9].to_result(), "threshold": "high"},
     "MapResult.threshold must be float"),
    (ScanResult, "done", "ScanResult must be a JSON object"),
])
def test_a_malformed_result_names_its_field(cls, answer, field):
    with pytest.raises(ResultError, match=re.escape(field)):
        cls.from_result(answer)
