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
    PullSummary,
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
    TrainOptions,
    TrainRequest,
    TrainResult,
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
                  SourceEntry(name="web", url="https://tiles.x.org/{z}/{x}/{y}.png", bands=[1]),
                  SourceEntry(name="swir", paths=["/d/b11.tif", "/d/b12.tif"], stacked=True)],
                 [("nir", [8])], "2021-01-01/2021-12-31", 30.0, "/cache",
                 TrainOptions(bits=32, clusters=10, rgb=(0, 1, 2))),
    TrainRequest("/m/model.safetensors", SourceEntry(folder="/d/scenes")),
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


# every option set to a value other than its default (each of its own type)
ALL_OPTIONS = TrainOptions(
    rgb=(3, 2, 1), bits=128, clusters=9, latent_dim=32, patch_size=48, stride=24,
    input_size=96, trainable_blocks=2, epochs=3, ae_epochs=0, max_steps=50, max_samples=500,
    batch_size=16, lr=0.01, backbone_lr=0.002, lr_step=2, lr_gamma=0.9, recon_weight=0.5,
    stats_weight=2.0, alpha=0.5, views=4, augment_ae=False, consistency_weight=0.0,
    contrastive_weight=0.1, similarity_weight=0.0, kmeans_restarts=2, kmeans_select="agreement",
    heads=3, head_step=0, seed=7, device="cpu", backbone="other-net",
    backbone_weights="/w/lite0.pt")


def test_train_options_are_flat_in_the_params_and_come_back_typed():
    assert ALL_OPTIONS.values().keys() == ALL_OPTIONS.to_params().keys()  # all not default
    request = TrainRequest("/m/m.safetensors", SourceEntry(folder="/d"), options=ALL_OPTIONS)
    params = json.loads(json.dumps(request.to_params()))
    assert params["epochs"] == 3 and params["rgb"] == [3, 2, 1] and "options" not in params
    assert TrainRequest.from_params(params) == request
    # what clients sent before: options beside the sources, defaults left out, None = default
    read = TrainRequest.from_params({"output": "m", "primary": {"folder": "p"}, "bits": 32,
                                     "lr": 1, "stride": None, "rgb": [0, 1, 2]})
    assert read.options == TrainOptions(bits=32, lr=1.0, rgb=(0, 1, 2))
    assert isinstance(read.options.lr, float) and TrainOptions().to_params() == {}
    ALL_OPTIONS.check()


@pytest.mark.parametrize("options, message", [
    ({"epochs": "1"}, "train option epochs must be a whole number, got '1'"),
    ({"bits": 16.0}, "train option bits must be a whole number"),
    ({"bits": 24}, r"train option bits must be one of \(16, 32, 64, 128\), got 24"),
    ({"augment_ae": "false"}, "train option augment_ae must be true or false"),
    ({"rgb": [0, 1]}, "train option rgb must be three whole numbers"),
    ({"device": ["cpu"]}, "train option device must be a string"),
    ({"stride": 0}, "train option stride must be between 1 and 8192, got 0"),
    ({"trainable_blocks": 1000}, "trainable_blocks must be between 0 and 64, got 1000"),
    ({"clusters": 1}, "train option clusters must be >= 2"),
    ({"views": 9}, "train option views must be 1..8"),
    ({"input_size": 100}, "train option input_size must be a multiple of 32"),
    ({"lr": 0}, "train option lr must be a positive number, got 0.0"),
    ({"alpha": -1}, "train option alpha must be a number >= 0"),
    ({"lr_gamma": 2}, r"train option lr_gamma must be a number in \(0, 1\]"),
    ({"kmeans_select": "labels"}, "train option kmeans_select must be one of inertia"),
    ({"colour": 1, "epochs": 2}, "unknown train options: colour"),
    ({"options": {"epochs": 2}}, "unknown train options: options"),
])
def test_a_wrong_train_option_is_named(options, message):
    with pytest.raises(RequestError, match=message) as raised:
        TrainRequest.from_params({"output": "m", "primary": {"folder": "p"}, **options})
    assert isinstance(user_error(raised.value), BadInput)
    if "unknown" not in message:  # the same check for options built in-process
        with pytest.raises(RequestError, match=message):
            TrainOptions(**options).check()


def test_a_stacked_source_entry_needs_paths():
    with pytest.raises(RequestError, match="stacked says how paths are read"):
        SourceEntry.from_params({"folder": "/d", "stacked": True}, "auxiliary[0]")
    with pytest.raises(RequestError, match="stacked must be true or false"):
        SourceEntry.from_params({"paths": ["/d/a.tif"], "stacked": "yes"}, "auxiliary[0]")


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
    TrainResult("/m/x.safetensors", "ab12", 12.5, 400, "cpu",
                [{"epoch": 1, "loss": 0.5}], [{"path": "/d/bad.tif", "error": "unreadable"}],
                {"features_s": 2.0}, None, {"verdict": "ok"}, [],
                PullSummary(6, 6, 0, 0, 1024, 1.5, "/m/x.safetensors.pull-cache", 1024, 6)),
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
