"""Client of the engine worker (`mrhash serve`, JSON lines over stdin/stdout).

The worker is a subprocess read by two daemon threads (stdout: protocol, stderr: log). Replies
are matched to requests by id. Each request is an `EngineRequest`: Qt signals for the GUI
(queued to the receiver's thread) and a blocking `wait()` for Processing algorithms and
tasks, which run outside the main thread. One client is shared by the whole plugin
(`shared_client()`), so the model and index stay warm in one worker.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtCore import QObject, pyqtSignal

from mrhash_qgis.contract import protocol
from mrhash_qgis.core.environment import PLUGIN_DIR, plugin_version
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.settings import EngineSettings

LOG_TAG = "MrHash"
# how long a worker that exited may take to hand over the rest of its stderr (its reason)
STDERR_DRAIN_S = 2.0
STATE_STOPPED, STATE_STARTING, STATE_READY, STATE_FAILED = "stopped", "starting", "ready", "failed"
# What fixes a failed engine, for the buttons the dock and Settings show.
FIX_SETUP, FIX_REPAIR, FIX_SETTINGS = "setup", "repair", "settings"
# What fixes a failed request (EngineError.fix, the protocol error's `fix`): build the index
# again from scratch, which a dialog offers as its own control rather than a CLI flag; say
# which bands of a query layer to read.
FIX_REBUILD, FIX_BANDS = protocol.FIX_REBUILD, protocol.FIX_BANDS


def log(message: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class EngineError(Exception):
    """An error answered by the worker (`code` from the protocol) or a dead/unstartable worker.
    `fix`: the protocol's machine-readable remedy (FIX_REBUILD), '' when it names none (or an
    older engine does not say)."""

    def __init__(self, code: str, message: str, fix: str = "", needs: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fix = fix
        self.needs = needs or []  # fix "bands": the roles the model reads, in its order


class EngineRequest(QObject):
    """One request in flight. Signals are emitted from the reader thread."""

    progress = pyqtSignal(dict)
    finished = pyqtSignal(dict)
    failed = pyqtSignal(str, str)  # code, message

    def __init__(self, client: EngineClient, request_id: str, method: str):
        super().__init__()
        self.client = client
        self.id = request_id
        self.method = method
        self.result: dict | None = None
        self.error: EngineError | None = None
        self._done = threading.Event()
        self._progress_callbacks: list[Callable[[dict], None]] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        if not self.done:
            self.client.send("cancel", {"job": self.id})

    def wait(self, timeout: float | None = None,
             on_progress: Callable[[dict], None] | None = None,
             is_cancelled: Callable[[], bool] | None = None) -> dict:
        """Block until the reply; return the result or raise EngineError. `is_cancelled` is
        polled (e.g. a Processing feedback or a QgsTask) and cancels the job on the worker."""
        if on_progress:
            self._progress_callbacks.append(on_progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        cancel_sent = False
        while not self._done.wait(0.1):
            if is_cancelled and not cancel_sent and is_cancelled():
                self.cancel()
                cancel_sent = True
            if deadline is not None and time.monotonic() > deadline:
                raise EngineError("timeout", tr(
                    "the engine did not answer '{method}' within {seconds} s").format(
                        method=self.method, seconds=f"{timeout:.0f}"))
        if self.error:
            raise self.error
        return self.result or {}

    # called by the client's reader thread
    def _on_progress(self, event: dict) -> None:
        for callback in list(self._progress_callbacks):
            callback(event)
        self.progress.emit(event)

    def _finish(self, result: dict | None, error: EngineError | None) -> None:
        self.result, self.error = result, error
        self._done.set()
        if error:
            self.failed.emit(error.code, error.message)
        else:
            self.finished.emit(result or {})


class EngineClient(QObject):
    """Starts, restarts and stops the worker, and carries requests to it."""

    stateChanged = pyqtSignal(str)  # noqa: N815 (Qt signal naming)
    ready = pyqtSignal(dict)        # the worker's ready event: version, device
    logLine = pyqtSignal(str)       # noqa: N815

    def __init__(self, settings: EngineSettings | None = None):
        super().__init__()
        self.settings = settings
        self.state = STATE_STOPPED
        self.info: dict[str, Any] = {}
        self.last_error = ""
        self.fix = ""  # FIX_* when the engine failed
        self.kind = ""  # EngineSettings.kind of the running worker
        self.recent_errors: deque[str] = deque(maxlen=10)  # for the diagnostics report
        self._process: subprocess.Popen | None = None
        self._pending: dict[str, EngineRequest] = {}
        self._lock = threading.Lock()
        # Processing algorithms and tasks send from their own threads: one line must reach the
        # worker whole, never interleaved with another thread's
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._stderr_tail: deque[str] = deque(maxlen=30)

    # lifecycle
    def _set_state(self, state: str) -> None:
        if state != STATE_FAILED:
            self.fix = ""
        self.state = state
        self.stateChanged.emit(state)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the worker unless it runs. A start failure sets state `failed` and
        `last_error` (what went wrong and what to do) instead of raising."""
        if self.running:
            return
        settings = self.settings or EngineSettings.load()
        self.kind = settings.kind
        problem = settings.problem()
        if problem:
            self._fail(problem, FIX_SETUP if settings.kind == "none" else FIX_SETTINGS)
            return
        self._ready.clear()
        self._stderr_tail.clear()
        self._set_state(STATE_STARTING)
        log(f"starting engine ({settings.kind}): {' '.join(settings.command())}")
        try:
            # a fixed working directory: a `mrhash` folder where QGIS was started from must
            # never shadow the engine (`python -m` puts the working directory on sys.path)
            self._process = subprocess.Popen(
                settings.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=settings.environment(), text=True, bufsize=1,
                encoding="utf-8", cwd=str(PLUGIN_DIR),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except OSError as error:
            self._fail(tr("Cannot run the engine interpreter {python}: {error}. Choose another "
                          "one in MrHash › Settings.").format(python=settings.python, error=error),
                       FIX_SETTINGS)
            return
        process = self._process
        stderr_reader = threading.Thread(target=self._read_stderr, args=(process,), daemon=True,
                                         name="mrhash-stderr")
        stderr_reader.start()
        threading.Thread(target=self._read_stdout, args=(process, stderr_reader), daemon=True,
                         name="mrhash-stdout").start()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Start if needed and block until the worker said it is ready; raise EngineError."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.state == STATE_FAILED:
                raise EngineError("engine_failed", self.last_error)
            if time.monotonic() > deadline:
                raise EngineError("timeout", tr("the engine did not start within {seconds} s")
                                  .format(seconds=f"{timeout:.0f}"))
        return self.info

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                self._write(process, json.dumps({"id": "shutdown", "method": "shutdown"}))
                process.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout)
        self._fail_pending("engine_stopped", tr("the engine was stopped"))
        self._ready.clear()
        self._set_state(STATE_STOPPED)

    def restart(self) -> None:
        self.stop()
        self.start()

    # requests
    def request(self, method: str, params: dict | None = None, *,
                progress: Callable | None = None, finished: Callable | None = None,
                failed: Callable | None = None) -> EngineRequest:
        """Send a request (starting the worker if needed) and return it; errors, including
        a worker that cannot start, arrive through `failed` / `wait()`. Slots given here are
        connected before the request is sent, so a fast reply is never missed."""
        request = EngineRequest(self, str(next(self._ids)), method)
        for signal, slot in ((request.progress, progress), (request.finished, finished),
                             (request.failed, failed)):
            if slot is not None:
                signal.connect(slot)
        with self._lock:
            self._pending[request.id] = request
        self.start()
        if self.state == STATE_FAILED:
            self._resolve(request.id, None, EngineError("engine_failed", self.last_error))
        else:
            self.send(method, params or {}, request.id)
        return request

    def submit(self, request: Any, **slots: Callable | None) -> EngineRequest:
        """`request` for a typed request of the protocol (mrhash_qgis.contract.protocol)."""
        return self.request(request.METHOD, request.to_params(), **slots)

    def call(self, method: str, params: dict | None = None, timeout: float | None = None,
             **wait_kwargs: Any) -> dict:
        return self.request(method, params).wait(timeout, **wait_kwargs)

    def send(self, method: str, params: dict, request_id: str | None = None) -> None:
        """Write one protocol line (fire and forget when `request_id` is None)."""
        line = json.dumps({"id": request_id or f"x{next(self._ids)}", "method": method,
                           "params": params})
        try:
            self._write(self._process, line)
        except (AttributeError, OSError, ValueError) as error:
            if request_id:
                self._resolve(request_id, None, EngineError(
                    "engine_failed", tr("the engine is not running: {error}").format(error=error)))

    def _write(self, process: subprocess.Popen | None, line: str) -> None:
        with self._write_lock:
            process.stdin.write(line + "\n")
            process.stdin.flush()

    # reader threads
    def _read_stdout(self, process: subprocess.Popen, stderr_reader: threading.Thread) -> None:
        for line in process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                log(f"engine stdout (not JSON): {line}", Qgis.MessageLevel.Warning)
                continue
            self._dispatch(message)
        code = process.wait()
        # the last words on stderr (why it died) may still be in the pipe: read them first
        stderr_reader.join(timeout=STDERR_DRAIN_S)
        if process is self._process:  # died on its own, not stopped by us
            self._process = None
            tail = "\n".join(self._stderr_tail)
            if self.state != STATE_FAILED:  # a `failed` event already said why
                message, fix = self._explain(tail)
                exited = tr("The engine exited (code {code}).").format(code=code)
                self._fail(f"{exited} {message}\n{tail}".strip(), fix)
            self._fail_pending("engine_failed", self.last_error)

    def _read_stderr(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            line = line.rstrip()
            self._stderr_tail.append(line)
            log(line)
            self.logLine.emit(line)

    def _dispatch(self, message: dict) -> None:
        request_id = message.get("id")
        if message.get("event") == "failed":
            error = message.get("error") or {}
            self._fail(*self._advice(error.get("code", ""), error.get("message", ""),
                                     error.get("package")))
            return
        if message.get("event") == "ready":
            self.info = {k: v for k, v in message.items() if k not in ("id", "event")}
            wanted = plugin_version()
            if self.info.get("version") != wanted:
                self._fail(tr("The engine (mrhash {engine}) does not match this plugin "
                              "({plugin}): press Repair in MrHash › Settings to update it.")
                           .format(engine=self.info.get("version"), plugin=wanted), FIX_REPAIR)
                self.stop_process()
                self._fail_pending("engine_failed", self.last_error)
                return
            self.last_error = ""
            self._ready.set()
            self._set_state(STATE_READY)
            self.ready.emit(self.info)
            log(f"engine ready: {self.info}")
            return
        request = self._pending.get(str(request_id))
        if request is None:
            return
        if "progress" in message:
            request._on_progress(message["progress"])
        elif "error" in message:
            error = message["error"] or {}
            code, text = error.get("code", protocol.INTERNAL), error.get("message", "unknown error")
            if code == protocol.MISSING_DEPENDENCY:
                text = self._advice(code, text, error.get("package"))[0]
            needs = error.get("needs")
            self._resolve(request.id, None, EngineError(
                code, text, str(error.get("fix") or ""),
                [str(n) for n in needs] if isinstance(needs, list) else None))
        elif "result" in message:
            self._resolve(request.id, message["result"] or {}, None)

    def _resolve(self, request_id: str, result: dict | None, error: EngineError | None) -> None:
        with self._lock:
            request = self._pending.pop(request_id, None)
        if request is not None:
            if error and error.code != protocol.CANCELLED:
                log(f"{request.method} failed [{error.code}]: {error.message}",
                    Qgis.MessageLevel.Warning)
                self.recent_errors.append(f"{request.method} [{error.code}]: {error.message}")
            request._finish(result, error)

    def _fail_pending(self, code: str, message: str) -> None:
        for request_id in list(self._pending):
            self._resolve(request_id, None, EngineError(code, message))

    def _fail(self, message: str, fix: str = FIX_SETTINGS) -> None:
        self.last_error = message
        self.recent_errors.append(message.splitlines()[0] if message else "")
        log(message, Qgis.MessageLevel.Critical)
        self.fix = fix
        self._set_state(STATE_FAILED)

    def stop_process(self) -> None:
        """Stop the worker but keep the failed state (and its advice) on show."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def _advice(self, code: str, message: str, package: str | None) -> tuple[str, str]:
        """The user's next step for an engine failure: (message, FIX_*)."""
        if code == protocol.MISSING_DEPENDENCY and package:
            if self.kind == "custom":
                return (tr("The engine's Python lacks the package {package}: install it there "
                           "(python -m pip install {package}), or clear Engine Python in "
                           "MrHash › Settings to use the private engine environment.")
                        .format(package=package), FIX_SETTINGS)
            return (tr("The engine environment lacks the package {package}: press Repair in "
                       "MrHash › Settings.").format(package=package), FIX_REPAIR)
        return message or tr("The engine failed to start."), FIX_SETTINGS

    def _explain(self, stderr_tail: str) -> tuple[str, str]:
        """Advice from the stderr of a worker that died before it could say why itself."""
        missing = re.findall(r"No module named '?([\w.]+)", stderr_tail)
        if missing and missing[-1].split(".")[0] == "mrhash":
            return (tr("This Python has no MrHash engine. Clear Engine Python in MrHash › "
                       "Settings to use the private engine environment (Set up the engine), or "
                       "choose a Python that has it."), FIX_SETTINGS)
        if missing:
            return self._advice(protocol.MISSING_DEPENDENCY, "", missing[-1].split(".")[0])
        if "cannot import name" in stderr_tail and "mrhash" in stderr_tail:
            return (tr("Another `mrhash` module hides the engine: press Repair in "
                       "MrHash › Settings."), FIX_REPAIR)
        return tr("See the MrHash tab of the log panel for details."), FIX_SETTINGS


_shared: EngineClient | None = None


def shared_client() -> EngineClient:
    """The plugin-wide client (created on first use, worker started on first request)."""
    global _shared
    if _shared is None:
        _shared = EngineClient()
    return _shared


def shutdown_shared_client() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None

