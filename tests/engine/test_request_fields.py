"""Every field of every request, sent values of the wrong type: the worker answers
`bad_input` / `bad_request` (or a result, or another expected error), never `internal`, and
keeps serving (a `status` after each batch). The Worker runs in-process, as in
test_protocol.py; jobs run in its threads and are awaited."""

from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mrhash.app.worker import Worker

# every request field, with a valid-looking base request of its method (nothing exists
# at these paths, and nothing listens on port 9: a request that passes the types fails on
# the missing files or the refused connection)
BASES = {
    "query": {"index": "/nowhere/index", "tile": 1},
    "refine": {"index": "/nowhere/index", "examples": [{"relevant": True, "tile": 1}]},
    "scan": {"folder": "/nowhere/rasters"},
    "index": {"folder": "/nowhere/rasters", "model": "/nowhere/m.safetensors",
              "index": "/nowhere/index"},
    "export": {"index": "/nowhere/index", "output": "/nowhere/out.gpkg"},
    "train": {"output": "/nowhere/m.safetensors", "primary": {"paths": ["/nowhere/a.tif"]}},
    "stac_items": {"url": "http://127.0.0.1:9/catalog.json", "bbox": [0, 0, 1, 1]},
}
FIELDS = {
    "query": ["point", "crs", "raster", "footprint", "footprint_crs", "tile", "bands", "index",
              "model", "k", "within", "exclude_radius", "thumbnails"],
    "refine": ["examples", "index", "model", "k", "exclude_examples", "within", "thumbnails",
               "examples.0.relevant", "examples.0.tile", "examples.0.point",
               "examples.0.bands"],
    "scan": ["folder"],
    "index": ["folder", "model", "index", "tile_size", "stride", "min_valid", "rebuild",
              "bands", "dask"],
    "export": ["index", "output", "format"],
    "train": ["output", "primary", "auxiliary", "aux_bands", "aux_date", "aux_max_cloud",
              "pull_cache", "primary.paths", "primary.folder", "primary.bands",
              "primary.max_cloud", "epochs", "clusters", "bits", "rgb", "lr", "seed",
              "augment_ae", "device", "max_samples"],
    "stac_items": ["url", "bbox", "collection", "date", "max_cloud", "limit"],
}
CASES = [(method, name) for method, names in FIELDS.items() for name in names]

# values of every JSON type, the wrong one for each field somewhere among them
WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["false", "1", "1.5", "abc", "", "EPSG:4326"]),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _with(params: dict, name: str, value) -> dict:
    """params with the (dotted) field `name` set to value."""
    params = json.loads(json.dumps(params))
    *path, last = name.split(".")
    target = params
    for key in path:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[last] = value
    return params


class Replies:
    """A worker writing into a buffer, and its replies by id."""

    def __init__(self):
        self.out = io.StringIO()
        self.worker = Worker(self.out, "cpu")
        self.read = 0

    def ask(self, request_id: str, method: str, params: dict, timeout: float = 30) -> dict:
        self.worker.handle(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.getvalue().splitlines():
                reply = json.loads(line)
                if reply.get("id") == request_id and "progress" not in reply:
                    return reply
            time.sleep(0.01)
        raise AssertionError(f"no reply to {request_id}")


@pytest.fixture(scope="module")
def replies():
    engine = Replies()
    yield engine
    engine.worker.shutdown()


@pytest.mark.parametrize(("method", "name"), CASES)
def test_wrong_types_get_bad_input_never_internal(replies, method, name):
    counter = iter(range(10**9))

    @settings(max_examples=8, deadline=5000, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=WRONG)
    def check(value) -> None:
        request_id = f"{method}-{name}-{next(counter)}"
        reply = replies.ask(request_id, method, _with(BASES[method], name, value))
        if "error" in reply:
            assert reply["error"]["code"] != "internal", (name, value, reply)
            assert reply["error"]["message"]

    check()
    # the worker keeps serving after the batch
    status = replies.ask(f"status-{method}-{name}", "status", {})
    assert status["result"]["jobs"] == []


@pytest.mark.parametrize(("method", "name", "value", "fragment"), [
    ("query", "thumbnails", "false", "thumbnails must be true or false"),
    ("query", "k", 1.5, "k must be a whole number"),
    ("query", "k", "1", "k must be a whole number"),
    ("query", "k", True, "k must be a whole number"),
    ("query", "exclude_radius", "abc", "exclude_radius must be a finite number"),
    ("query", "footprint", ["POINT (1 2)"], "footprint must be a string"),
    ("index", "rebuild", "false", "rebuild must be true or false"),
    ("index", "tile_size", 0, "tile_size must be a whole number from 4"),
    ("index", "bands", [1, True], "bands must be a list"),
    ("train", "epochs", "1", "train option epochs must be a whole number"),
    ("train", "clusters", "4", "train option clusters must be a whole number"),
    ("train", "aux_max_cloud", "abc", "aux_max_cloud must be a finite number"),
    ("train", "bits", 16.0, "train option bits must be a whole number"),
    ("train", "aux_date", "2020-01-01/2020-12-31", "STAC auxiliary source"),
    ("stac_items", "limit", 0, "limit must be a whole number"),
    ("stac_items", "bbox", [1, 1, 0, 0], "bbox must be"),
])
def test_the_message_names_the_field(replies, method, name, value, fragment):
    reply = replies.ask(f"named-{method}-{name}-{value!r}", method,
                        _with(BASES[method], name, value))
    assert reply["error"]["code"] == "bad_input", reply
    assert fragment in reply["error"]["message"], reply


def test_what_the_plugin_sends_still_reads():
    from mrhash_contract.protocol import Place, QueryRequest

    place = Place.place_params({"point": [10.5, 50], "crs": "EPSG:4326", "indexed_tile": 7,
                                "bands": [3, "B02"]})
    assert place["point"] == (10.5, 50.0) and place["bands"] == [3, "B02"]
    request = QueryRequest.from_params({"index": "i", "tile": 3, "k": 5, "thumbnails": True})
    assert QueryRequest.from_params(request.to_params()) == request
