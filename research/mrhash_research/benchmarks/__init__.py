"""Benchmarks behind `mrhash bench`; their recorded output lives in docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def busy_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (/proc/stat; 0 where
    there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OthersCores:
    """How many cores other jobs kept busy while a timed block ran (0 on a quiet machine):
    the machine's busy CPU less this process's and its children's. A figure of a shared
    machine is kept or rerun by it."""

    def __enter__(self) -> OthersCores:
        self._start = (busy_cpu_s(), _own_cpu_s(), time.perf_counter())
        self.cores = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        busy, own, wall = (now - then for now, then in
                           zip((busy_cpu_s(), _own_cpu_s(), time.perf_counter()),
                               self._start, strict=True))
        self.cores = round(max(busy - own, 0.0) / wall, 2) if wall > 0 else 0.0


def _own_cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
