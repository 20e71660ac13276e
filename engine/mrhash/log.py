"""The engine's log: warnings about recovered faults (a cache rebuilt, a thumbnail skipped)
go to logger `mrhash`, printed on stderr as `mrhash: message`. stderr is free-form for the
CLI and the worker alike (the worker's protocol is its private stdout, worker.py); it is
looked up at each message, so a redirected or captured stderr gets them."""

from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is when a message is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def engine_logger() -> logging.Logger:
    logger = logging.getLogger("mrhash")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("mrhash: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # an application's root handlers would print it twice
    return logger


log = engine_logger()
