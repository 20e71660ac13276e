"""Progress and cancellation for long work (train, index), shared by the CLI and the worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mrhash.errors import Cancelled

ProgressSink = Callable[[dict[str, Any]], None]


class JobControl:
    """Passed to long-running functions: they call `report()` as they go and `check()` between
    batches. Cancellation is cooperative, so a job always stops at a consistent point."""

    def __init__(self, on_progress: ProgressSink | None = None, min_interval_s: float = 0.2):
        self._on_progress = on_progress
        self._cancel = threading.Event()
        self._started = time.monotonic()
        self._last_report = 0.0
        self._min_interval_s = min_interval_s

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def report(self, done: float, total: float | None, message: str = "", *,
               force: bool = False, eta_s: float | None = None, **metrics: Any) -> None:
        """Emit a progress event ({done, total, fraction, eta_s, message, ...metrics}); rate
        limited unless `force` or metrics are given (metrics, e.g. a loss, are never dropped).
        `eta_s`: the caller's own estimate of the time left (default: elapsed time scaled by
        the fraction left)."""
        now = time.monotonic()
        if not (force or metrics) and now - self._last_report < self._min_interval_s:
            return
        self._last_report = now
        if self._on_progress is None:
            return
        elapsed = now - self._started
        event: dict[str, Any] = {"done": done, "total": total, "message": message,
                                 "elapsed_s": round(elapsed, 2)}
        if total:
            fraction = min(max(done / total, 0.0), 1.0)
            event["fraction"] = round(fraction, 4)
            event["eta_s"] = (eta_s if eta_s is not None else round(
                elapsed * (1 - fraction) / fraction, 1) if fraction > 0 else None)
        event.update(metrics)
        self._on_progress(event)
