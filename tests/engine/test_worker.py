"""`mrhash serve` driven over its pipes exactly as the QGIS plugin does: ready event, status,
malformed requests, index/train/scan jobs with progress, busy, cancel, queries, shutdown; and
stdout carrying nothing but protocol lines."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import pytest
from mrhash_contract.protocol import (
    ExportMapResult,
    ExportResult,
    IndexResult,
    MapResult,
    OpenResult,
    QueryResult,
    ScanResult,
)
from test_index_support import THREADS_ENV, TILE


class Engine:
    """A `mrhash serve` process: send requests, read reply lines with a timeout."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "mrhash", "serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1,
                                        env=THREADS_ENV)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line)

    def send(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def read(self, timeout: float = 60) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply; stderr: {''.join(self.stderr)[-2000:]}") from None
        return json.loads(line)  # every stdout line must be JSON

    def until_done(self, request_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
        """Read until `request_id` ends (result or error); -> (final line, its progress)."""
        progress = []
        while True:
            message = self.read(timeout)
            if message.get("id") != request_id:
                raise AssertionError(f"unexpected line {message}")
            if "progress" in message:
                progress.append(message["progress"])
            else:
                return message, progress

    def request(self, request_id: str, method: str, **params) -> dict:
        self.send({"id": request_id, "method": method, "params": params})
        return self.until_done(request_id)[0]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def engine():
    process = Engine()
    yield process
    process.close()


def test_ready_status_and_malformed_requests(engine):
    ready = engine.read()
    assert ready["id"] is None and ready["event"] == "ready"
    assert ready["device"] == "cpu" and ready["device_name"].startswith("cpu")
    assert ready["version"]
    for line, fragment in (("this is not json", "not a JSON line"),
                           ("[1, 2]", "JSON object"),
                           ('{"id": "a", "method": "fly"}', "unknown method"),
                           ('{"id": "b", "method": "query", "params": [1]}', "params must be"),
                           ('{"method": "index", "params": {}}', "needs a request id"),
                           ('{"id": "c", "method": "cancel", "params": {}}', "params.job")):
        engine.send(line)
        reply = engine.read()
        assert reply["error"]["code"] == "bad_request", reply
        assert fragment in reply["error"]["message"]
    status = engine.request("s", "status")["result"]
    assert status == {"version": ready["version"], "device": "cpu",
                      "device_name": ready["device_name"], "model": None, "index": None,
                      "jobs": []}
    engine.send({"id": 5, "method": "status"})
    assert engine.read()["id"] == 5  # ids are echoed as given
    assert engine.request("x", "cancel", job="nope")["result"] == {"cancelled": False}
    assert engine.request("q", "query", index="/nonexistent/index", tile=1)["error"][
        "code"] == "bad_index"
    engine.send({"id": "end", "method": "shutdown"})
    assert engine.read() == {"id": "end", "result": {}}
    assert engine.process.wait(30) == 0


def test_index_jobs_progress_busy_cancel_and_queries(engine, tiny_model, rasters, tmp_path):
    engine.read()  # ready
    index = str(tmp_path / "index")
    params = {"folder": str(rasters), "model": str(tiny_model), "index": index,
              "tile_size": TILE, "stride": 8}
    # the job is registered before the next line is read: these two are answered while it runs
    engine.send({"id": "1", "method": "index", "params": params})
    engine.send({"id": "2", "method": "query", "params": {"index": index, "tile": 1}})
    engine.send({"id": "3", "method": "index", "params": params})
    engine.send({"id": "4", "method": "status"})
    engine.send({"id": "5", "method": "cancel", "params": {"job": "1"}})
    replies = {}
    while "1" not in replies or "progress" in replies["1"]:
        message = engine.read()
        replies[message["id"]] = message
    assert replies["2"]["error"]["code"] == "busy"
    assert replies["3"]["error"]["code"] == "busy"
    assert replies["4"]["result"]["jobs"] == ["1"]
    assert replies["5"]["result"] == {"cancelled": True}
    assert replies["1"]["error"]["code"] == "cancelled"

    engine.send({"id": "6", "method": "index", "params": params})
    final, progress = engine.until_done("6")
    result = final["result"]
    assert result["n_tiles"] == 9 * 25 and result["skipped"] == []
    assert IndexResult.from_result(result).added == 9 * 25
    assert set(result) >= {"index", "n_tiles", "added", "removed", "unchanged", "skipped"}
    assert progress and all({"done", "total", "fraction", "eta_s", "message"} <= set(p)
                            for p in progress)
    assert progress[-1]["fraction"] == 1.0

    hits = engine.request("7", "query", index=index, tile=3, k=5, thumbnails=True)["result"]
    assert [h["rank"] for h in hits["hits"]] == [1, 2, 3, 4, 5]
    assert all(h["thumbnail"].endswith(".png") for h in hits["hits"])
    first = hits["hits"][0]
    for key in ("id", "distance", "path", "window", "crs", "footprint"):
        assert key in first
    outside = engine.request("8", "query", index=index, point=[-120.0, -45.0], crs="EPSG:4326")
    assert outside["error"]["code"] == "outside_index"
    bad_k = engine.request("9", "query", index=index, tile=3, k="many")
    assert bad_k["error"]["code"] == "bad_input"
    status = engine.request("10", "status")["result"]
    assert status["model"] == str(tiny_model) and status["index"] == index
    engine.send({"id": "end", "method": "shutdown"})
    assert engine.read()["result"] == {}
    assert engine.process.wait(30) == 0


def test_refine_export_and_fix_hints(engine, tiny_model, rasters, tmp_path):
    engine.read()  # ready
    index = str(tmp_path / "index")
    params = {"folder": str(rasters), "model": str(tiny_model), "index": index,
              "tile_size": TILE}
    assert engine.request("1", "index", **params)["result"]["n_tiles"] == 36
    # choosing the index opens it and loads its model: the next query finds both warm
    opened = engine.request("o", "open", index=index)["result"]
    assert opened["index"] == index and opened["n_tiles"] == 36
    assert opened["model"] == str(tiny_model) and opened["seconds"] > 0
    assert engine.request("s", "status")["result"]["model"] == str(tiny_model)
    gone = engine.request("g", "open", index=str(tmp_path / "nowhere"))["error"]
    assert gone["code"] == "bad_index"
    refined = engine.request("2", "refine", index=index, k=5, thumbnails=True, examples=[
        {"relevant": True, "tile": 3}, {"relevant": False, "tile": 4}])["result"]
    hits = refined["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and refined["ties"] is None
    assert not {3, 4} & {h["id"] for h in hits}
    assert all(h["thumbnail"].endswith(".png") for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    queried = engine.request("3", "query", index=index, tile=3, k=2)["result"]
    assert queried["ties"]["distance"] == 0 and queried["hits"][0]["score"] > 0.99
    bad = engine.request("4", "refine", index=index, examples=[{"relevant": False, "tile": 3}])
    assert bad["error"]["code"] == "bad_input" and "relevant" in bad["error"]["message"]
    # export is a job: progress, then the result
    output = tmp_path / "tiles.gpkg"
    engine.send({"id": "5", "method": "export",
                 "params": {"index": index, "format": "gpkg", "output": str(output)}})
    final, progress = engine.until_done("5")
    assert final["result"]["n_tiles"] == 36 and final["result"]["output"] == str(output)
    assert final["result"]["format"] == "gpkg" and output.is_file()
    assert progress and progress[-1]["fraction"] == 1.0
    missing = engine.request("6", "export", index=index, output=str(tmp_path / "no" / "t.gpkg"))
    assert missing["error"]["code"] == "bad_input"
    # an error whose message names a CLI flag also says the fix, for the plugin's wording
    other = engine.request("7", "index", **params, stride=16)["error"]
    assert other["code"] == "bad_input" and other["fix"] == "rebuild"
    assert "--rebuild" in other["message"]
    assert "fix" not in missing["error"]
    # a map's detections shown as hits (tiles), then the map as GeoParquet (a job)
    shown = engine.request("8", "tiles", index=index, ids=[7, 3, 12])["result"]
    assert [h["id"] for h in shown["hits"]] == [7, 3, 12]
    assert all(h["thumbnail"].endswith(".png") and h["footprint"] for h in shown["hits"])
    unknown = engine.request("9", "tiles", index=index, ids=[3, 999999])["error"]
    assert unknown["code"] == "bad_input" and "999999" in unknown["message"]
    mapped = engine.request("10", "map", index=index, output=str(tmp_path / "map.gpkg"),
                            examples=[{"relevant": True, "tile": 3}])["result"]
    exported = engine.request("11", "export_map", map=mapped["output"], threshold=0.5,
                              output=str(tmp_path / "map.parquet"))["result"]
    assert exported["n_tiles"] == mapped["n_detected"] and exported["n_marked"] == 1
    assert (tmp_path / "map_areas.parquet").is_file()
    # every answer of a real index is its typed result, read back as the plugin reads it
    assert QueryResult.from_result(refined).query.n_relevant == 1
    assert QueryResult.from_result(refined).hits[0].thumbnail.endswith(".png")
    queried = QueryResult.from_result(queried)
    assert queried.ties.distance == 0 and queried.hits[0].rank == 1 and queried.layout
    assert [h.id for h in QueryResult.from_result(shown).hits] == [7, 3, 12]
    assert OpenResult.from_result(opened).n_tiles == 36
    assert ExportResult.from_result(final["result"]).format == "gpkg"
    assert MapResult.from_result(mapped).detections[0].index is None
    assert ExportMapResult.from_result(exported).outputs.areas.endswith("map_areas.parquet")


def test_train_and_scan_jobs(engine, eurosat_dir, rasters, tmp_path):
    engine.read()  # ready
    files = [str(p) for p in sorted((eurosat_dir / "Forest").glob("*.tif"))[:4]]
    output = tmp_path / "model.safetensors"
    engine.send({"id": "t", "method": "train", "params": {
        "primary": {"paths": files, "bands": [4, 3, 2]}, "bits": 16, "clusters": 2,
        "epochs": 1, "ae_epochs": 1, "patch_size": 32, "input_size": 32, "seed": 0,
        "output": str(output)}})
    final, progress = engine.until_done("t", timeout=300)
    assert final["result"]["model"] == str(output) and output.is_file()
    assert len(final["result"]["fingerprint"]) == 64 and final["result"]["history"]
    assert progress
    bad = engine.request("t2", "train", primary={"paths": files}, output=str(output),
                         wings=2)
    assert bad["error"]["code"] == "bad_input" and "wings" in bad["error"]["message"]
    scan = engine.request("s", "scan", folder=str(rasters))["result"]
    assert len(scan["sources"]) == 9
    assert all(s.band_layout() for s in ScanResult.from_result(scan).sources)


def test_stray_prints_go_to_stderr():
    code = ("import os\n"
            "from mrhash.app.worker import protocol_stdout\n"
            "out = protocol_stdout()\n"
            "print('stray python print')\n"
            "os.write(1, b'stray C-level write\\n')\n"
            "out.write('{\"id\": null}\\n'); out.flush()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"id": null}\n'
    assert "stray python print" in done.stderr and "stray C-level write" in done.stderr
