"""`mrhash serve`: the engine process QGIS talks to, one JSON object per line each way
(protocol in docs/ARCHITECTURE.md).

- stdout carries protocol lines only: at start the process's fd 1 is moved to a private handle
  and fd 1 (and `sys.stdout`) point to stderr, so a stray print, even from C code, cannot
  break the stream.
- Models and opened indexes stay warm between requests (models keyed by path + mtime + size,
  indexes reopened when their database changed).
- train, index and scan run in threads and report progress; status, cancel and queries are
  answered meanwhile. One train/index job at a time (another gets `busy`), and a query on an
  index being built gets `busy` too.
- A malformed line or unknown method gets `bad_request`, and so does a line over 1 MiB, nested
  deeper than 64 levels or not UTF-8 (read as bytes: a UTF-16 line never stops the loop); an
  unexpected exception gets `internal` (traceback on stderr); the worker keeps running.
- Each method imports its stage when first asked (torch, faiss, rasterio), not at the top: the
  worker answers `status` within about a second of its start, before any model is loaded.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from mrhash_contract import protocol
from mrhash_contract.protocol import (
    ANSWERED,
    JOB_METHODS,
    LONG_JOBS,
    ExportMapRequest,
    ExportRequest,
    IndexRequest,
    MapRequest,
    OpenRequest,
    OpenResult,
    QueryRequest,
    RefineRequest,
    ScanRequest,
    StacItemsRequest,
    TilesRequest,
    TrainRequest,
)

from mrhash import __version__
from mrhash.errors import BadInput, MrHashError, user_error
from mrhash.jobs import JobControl


class BadRequest(MrHashError):
    code = protocol.BAD_REQUEST


class Busy(MrHashError):
    code = protocol.BUSY


MAX_LINE = 1 << 20   # bytes of one request line (a refine of 1000 examples is ~100 KB)
MAX_DEPTH = 64       # JSON nesting of a request (the protocol's deepest is ~5)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def nesting_depth(text: str) -> int:
    """How deep JSON text nests its arrays and objects (strings skipped), without recursing:
    json.loads would meet a RecursionError on a line of 100,000 '['."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual line: nothing to count
        return 0
    depth = peak = 0
    for char in re.findall(r"[\[\]{}]", _STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        peak = max(peak, depth)
    return peak


_ID = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d{1,18})')


def line_id(text: str) -> str | int | None:
    """The id a line refused unparsed gives itself (within its first 4 KB), so that the
    client waiting for that id gets its error instead of waiting for ever."""
    match = _ID.search(text[:4096])
    try:
        return json.loads(match.group(1)) if match else None
    except ValueError:
        return None


def decoded_line(raw: bytes) -> str:
    """A request line's text; BadRequest for bytes that are not UTF-8 (UTF-16 says so). The
    NULs a UTF-16 line leaves after its newline are dropped, so the next line still reads."""
    raw = raw.strip(b"\x00")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise BadRequest("the line is UTF-16 (or holds NUL bytes): send UTF-8 JSON lines")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the line is not UTF-8 text ({error.reason} at byte "
                         f"{error.start}): send UTF-8 JSON lines") from None


def protocol_stdout() -> TextIO:
    """The real stdout for protocol lines; fd 1 and sys.stdout are redirected to stderr."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def error_payload(error: BaseException) -> dict:
    """The protocol's error object: code and message, plus the package a missing import names
    (so the plugin can give the exact fix); unexpected errors keep their traceback on stderr."""
    known = user_error(error)
    if known is None:
        traceback.print_exception(error, file=sys.stderr)
        return {"code": protocol.INTERNAL, "message": f"{type(error).__name__}: {error}"}
    payload = {"code": known.code, "message": known.message}
    payload.update({key: getattr(known, key) for key in ("module", "package", "needs", "band_count")
                    if hasattr(known, key)})
    if known.fix:  # the next step, for a client that words it its own way
        payload["fix"] = known.fix
    return payload


class Worker:
    def __init__(self, out: TextIO, device: str = "auto", encoder: str = "auto"):
        from mrhash.device import device_name, limit_threads, resolve_device
        from mrhash.index.hamming import query_threads

        limit_threads()
        query_threads()
        self.out = out
        self.device = resolve_device(device)
        self.device_name = device_name(self.device)
        self.encoder = encoder  # onnx_encoder.ENCODER_CHOICES, for every model loaded
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._jobs: dict[str, tuple[str, JobControl, threading.Thread, str | None]] = {}
        self._models: dict[str, tuple[tuple, Any]] = {}
        self._searchers: dict[str, Any] = {}
        self.model_path: str | None = None
        self.index_path: str | None = None

    # -- output --------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        try:
            line = json.dumps(message, default=str, allow_nan=False)
        except ValueError as error:  # a NaN in a result: an error line, never a dead worker
            line = json.dumps({"id": message.get("id") if isinstance(message.get("id"), (str, int))
                               else None, "error": {"code": protocol.INTERNAL,
                                                    "message": f"unencodable reply ({error})"}})
        with self._write_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def send_error(self, request_id: Any, error: BaseException) -> None:
        self.send({"id": request_id, "error": error_payload(error)})

    def ready(self) -> None:
        self.send({"id": None, "event": "ready", "version": __version__,
                   "device": self.device.type, "device_name": self.device_name})

    # -- warm state ----------------------------------------------------------------------
    def model(self, path: str):
        from mrhash.errors import ModelFormatError
        from mrhash.model.package import load_model

        resolved = str(Path(path).resolve())
        try:
            stat = Path(resolved).stat()
        except OSError as error:
            raise ModelFormatError(f"cannot read the model file ({error.strerror})",
                                   path=path) from None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._state_lock:
            cached = self._models.get(resolved)
        if cached and cached[0] == key:
            return cached[1]
        model = load_model(resolved).to(self.device).use_encoder(self.encoder)
        with self._state_lock:
            self._models[resolved] = (key, model)
            self.model_path = resolved
        return model

    def searcher(self, index_dir: str):
        from mrhash.search.searcher import Searcher

        resolved = str(Path(index_dir).resolve())
        with self._state_lock:
            searcher = self._searchers.get(resolved)
        if searcher is not None and searcher.stale():
            searcher.close()
            searcher = None
        if searcher is None:
            searcher = Searcher(resolved, model_loader=self.model)
            with self._state_lock:
                self._searchers[resolved] = searcher
        self.index_path = resolved
        return searcher

    def _drop_searcher(self, index_dir: str) -> None:
        with self._state_lock:
            searcher = self._searchers.pop(str(Path(index_dir).resolve()), None)
        if searcher is not None:
            searcher.close()

    # -- methods -------------------------------------------------------------------------
    def doctor(self, _params: dict) -> dict:
        from mrhash.app.doctor import check

        report = check()
        report.device, report.device_name = self.device.type, self.device_name
        return report.to_result()

    def status(self, _params: dict) -> dict:
        with self._state_lock:
            jobs = list(self._jobs)
        return {"version": __version__, "device": self.device.type,
                "device_name": self.device_name, "model": self.model_path,
                "index": self.index_path, "jobs": jobs}

    def cancel(self, params: dict) -> dict:
        job_id = params.get("job")
        if job_id is None:
            raise BadRequest("cancel needs params.job (the id of the job to cancel)")
        with self._state_lock:
            entry = self._jobs.get(str(job_id))
        if entry is None:
            return {"cancelled": False}
        entry[1].cancel()
        return {"cancelled": True}

    def open(self, params: dict) -> dict:
        """The index the analyst chose, opened and warmed (its model too): the first query
        then takes what the next ones take."""
        import time

        started = time.perf_counter()
        request = OpenRequest.from_params(params)
        searcher = self._query_searcher(request)
        searcher.warm()
        return OpenResult(str(searcher.folder.root), searcher.index.ntotal, searcher.model.path,
                          round(time.perf_counter() - started, 4)).to_result()

    def _query_searcher(self, request: QueryRequest | RefineRequest | TilesRequest
                       | OpenRequest):
        """The warm searcher of the request's index; busy while that index is being built."""
        if not request.index:
            raise BadInput(f"{request.METHOD} needs an index folder")
        index_dir = str(Path(request.index).resolve())
        with self._state_lock:
            building = any(kind == protocol.INDEX and target == index_dir
                           for kind, _, _, target in self._jobs.values())
        if building:
            raise Busy(f"index {index_dir} is being built; query it when the job ends")
        searcher = self.searcher(index_dir)
        if request.model:  # the index's model moved: this one must have its fingerprint
            searcher.use_model(self.model(request.model))
        return searcher

    def query(self, params: dict) -> dict:
        request = QueryRequest.from_params(params)
        return self._query_searcher(request).search(request)

    def refine(self, params: dict) -> dict:
        request = RefineRequest.from_params(params)
        from mrhash.search.refine import refine

        return refine(self._query_searcher(request), request)

    def tiles(self, params: dict) -> dict:
        request = TilesRequest.from_params(params)
        return self._query_searcher(request).tiles(request)

    def _run_scan(self, params: dict, job: JobControl) -> dict:
        from mrhash.raster.catalog import scan

        return scan(ScanRequest.from_params(params).folder, job)

    def _run_train(self, params: dict, job: JobControl) -> dict:
        from mrhash.model.train import train_request

        request = TrainRequest.from_params(params)
        if request.options.device == "auto":  # `mrhash serve --device` chose for its jobs
            request.options.device = self.device.type
        result, _pulled = train_request(request, job)
        return result.to_result()

    def _run_stac_items(self, params: dict, job: JobControl) -> dict:
        from mrhash.remote.stac import find_items

        return find_items(StacItemsRequest.from_params(params).to_params(), job.check)

    def _run_export(self, params: dict, job: JobControl) -> dict:
        from mrhash.index.export import export_index

        request = ExportRequest.from_params(params)
        return export_index(request.index, request.format, request.output, job)

    def _run_index(self, params: dict, job: JobControl) -> dict:
        from mrhash.index.build import index_request

        request = IndexRequest.from_params(params)
        model = self.model(request.model)
        try:
            result = index_request(request, job, model=model)
        finally:
            self._drop_searcher(request.index)
        return result.to_result()

    def _run_map(self, params: dict, job: JobControl) -> dict:
        from mrhash.search.mapping import run_map

        request = MapRequest.from_params(params)
        # a searcher of its own: the job's thread must not share the warm searcher's SQLite
        # connection with the queries answered meanwhile
        return run_map(request, self.model(request.model) if request.model else None, job)

    def _run_export_map(self, params: dict, job: JobControl) -> dict:
        from mrhash.search.mapping import export_map

        request = ExportMapRequest.from_params(params)
        return export_map(request.map, request.output, request.threshold, job)

    def start_job(self, request_id: Any, method: str, params: dict) -> None:
        # typed before the job starts: a wrong field is answered at once, never in a thread
        request = protocol.REQUESTS[method].from_params(params)
        target = str(Path(request.index).resolve()) if isinstance(request, IndexRequest) \
            else None
        runner: Callable[[dict, JobControl], dict] = getattr(self, f"_run_{method}")
        job = JobControl(lambda event: self.send({"id": request_id, "progress": event}))
        key = str(request_id)

        def work() -> None:
            # the job leaves the list before its last line, so a client that reacts to that
            # line never gets `busy` from it
            try:
                result = runner(params, job)
            except BaseException as error:  # reported on the protocol, never raised
                self._end_job(key)
                self.send_error(request_id, error)
            else:
                self._end_job(key)
                self.send({"id": request_id, "result": result})

        with self._state_lock:
            if key in self._jobs:
                raise BadRequest(f"a job with id {request_id} is already running")
            if method in LONG_JOBS:
                running = [i for i, (kind, *_) in self._jobs.items() if kind in LONG_JOBS]
                if running:
                    raise Busy(f"job {running[0]} is running; cancel it or wait for it")
            thread = threading.Thread(target=work, daemon=True, name=f"mrhash-{method}")
            self._jobs[key] = (method, job, thread, target)
        thread.start()

    def _end_job(self, key: str) -> None:
        with self._state_lock:
            self._jobs.pop(key, None)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        with self._state_lock:
            jobs = list(self._jobs.values())
        for _, job, _, _ in jobs:
            job.cancel()
        for _, _, thread, _ in jobs:
            thread.join(timeout_s)
        with self._state_lock:
            searchers = list(self._searchers.values())
            self._searchers.clear()
        for searcher in searchers:
            searcher.close()

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Answer one request line; False after `shutdown`."""
        request_id = None
        try:
            if len(line) > MAX_LINE or nesting_depth(line) > MAX_DEPTH:
                request_id = line_id(line)  # refused unparsed: the id it names, if any
                raise BadRequest(f"the request line is longer than {MAX_LINE:,} characters"
                                 if len(line) > MAX_LINE else
                                 f"the request nests deeper than {MAX_DEPTH} levels")
            try:
                request = json.loads(line, parse_constant=_reject_constant,
                                     parse_float=_finite_float)
            except (ValueError, RecursionError) as error:
                raise BadRequest(f"not a JSON line ({error})") from None
            if not isinstance(request, dict):
                raise BadRequest("a request must be a JSON object")
            request_id = request.get("id")  # echoed as given; jobs are keyed by str(id)
            method, params = request.get("method"), request.get("params") or {}
            if not isinstance(params, dict):
                raise BadRequest("params must be a JSON object")
            if method == protocol.SHUTDOWN:
                self.shutdown()
                self.send({"id": request_id, "result": {}})
                return False
            if method in JOB_METHODS:
                if request_id is None:
                    raise BadRequest(f"{method} needs a request id (it names the job)")
                self.start_job(request_id, method, params)
            elif method in ANSWERED:
                self.send({"id": request_id, "result": getattr(self, method)(params)})
            else:
                raise BadRequest(f"unknown method {method!r}")
        except Exception as error:  # every failure becomes an error line; the loop goes on
            self.send_error(request_id, error)
        return True

    def serve(self, stream: BinaryIO) -> None:
        """Answer the request lines of `stream` (bytes: a line that is not UTF-8 or longer
        than MAX_LINE is answered bad_request and the next one is read) until shutdown."""
        self.ready()
        while raw := stream.readline(MAX_LINE + 1):
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass  # the rest of the line, dropped unread
                self.send_error(line_id(raw[:4096].decode("utf-8", "replace")), BadRequest(
                    f"the request line is longer than {MAX_LINE:,} bytes"))
                continue
            try:
                line = decoded_line(raw)
            except BadRequest as error:
                self.send_error(line_id(raw[:4096].decode("utf-8", "replace")), error)
                continue
            if line.strip() and not self.handle(line):
                return
        self.shutdown()  # stdin closed: the client went away


def serve(device: str = "auto", encoder: str = "auto") -> int:
    out = protocol_stdout()
    try:
        worker = Worker(out, device, encoder)
    except (ModuleNotFoundError, MrHashError) as error:
        # said on the protocol, so the plugin can name the missing package and the fix
        out.write(json.dumps({"id": None, "event": "failed", "error": error_payload(error)})
                  + "\n")
        out.flush()
        return 1
    worker.serve(sys.stdin.buffer)
    return 0
