"""CPU/CUDA choice and thread count, in one place so the CLI, the worker and training agree."""

from __future__ import annotations

import os

from mrhash_contract.choices import DEVICES

from mrhash.errors import BadInput

DEVICE_CHOICES = DEVICES


def resolve_device(name: str = "auto"):
    """`auto` -> CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is a user error."""
    # torch takes ~1 s to import: only where a network runs
    import torch

    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise BadInput(f"unknown device {name!r}: use one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} requested but torch sees no CUDA GPU "
                       f"(torch {torch.__version__}); use --device cpu")
    return torch.device(name)


def device_name(device) -> str:
    # torch takes ~1 s to import: only where a network runs
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def cpu_threads() -> int:
    """Threads the engine's CPU work may use (the CPU is often shared with QGIS or other
    jobs): MRHASH_THREADS, else all cores but at most 4."""
    env = os.environ.get("MRHASH_THREADS")
    return max(1, int(env) if env else min(4, os.cpu_count() or 1))


def limit_threads(max_threads: int | None = None) -> int:
    """Cap torch's intra-op threads (`cpu_threads` unless given)."""
    # torch takes ~1 s to import: only where a network runs
    import torch

    torch.set_num_threads(max(1, cpu_threads() if max_threads is None else max_threads))
    return torch.get_num_threads()
