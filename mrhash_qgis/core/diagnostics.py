"""The diagnostics report a user pastes into an issue: QGIS and OS, the engine environment,
base Python, engine and package versions, torch device and CUDA, GDAL/PROJ on both sides,
and the last engine errors. Not translated (no tr()): it is pasted into issues, read by the
maintainers."""

from __future__ import annotations

import platform
import sys

from qgis.core import Qgis, QgsProjUtils
from qgis.PyQt.QtCore import QT_VERSION_STR

from mrhash_qgis.contract.protocol import DoctorResult
from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import EngineClient
from mrhash_qgis.core.environment import (
    LOG_NAME,
    PLUGIN_DIR,
    SetupError,
    find_base_python,
    nvidia_gpu,
    plugin_version,
)


def _qgis_gdal() -> str:
    try:
        from osgeo import gdal

        return gdal.__version__
    except ImportError:
        return "unknown"


def _log_tail(lines: int = 15) -> list[str]:
    try:
        text = (settings.managed_target() / LOG_NAME).read_text(encoding="utf-8",
                                                                 errors="replace")
    except OSError:
        return ["(no set-up log)"]
    return text.splitlines()[-lines:]


def report(client: EngineClient, doctor: DoctorResult | None = None) -> str:
    """Plain text (Markdown); `doctor`: the engine's `doctor` answer, when it could give one."""
    engine = settings.EngineSettings.load()
    state = settings.managed_state()
    try:
        base = find_base_python(settings.SETUP_PYTHON.get())
        base_text = f"{base.path} (Python {base.version})"
    except SetupError as error:
        base_text = f"none usable: {error.message}"
    lines = [
        "## MrHash diagnostics",
        f"- Plugin: {plugin_version()} at {PLUGIN_DIR}",
        f"- QGIS: {Qgis.version()} · Qt {QT_VERSION_STR} · Python {sys.version.split()[0]} "
        f"({sys.executable})",
        f"- QGIS GDAL {_qgis_gdal()} · PROJ {QgsProjUtils.projVersionMajor()}."
        f"{QgsProjUtils.projVersionMinor()}",
        f"- OS: {platform.platform()} ({platform.machine()})",
        f"- NVIDIA GPU: {nvidia_gpu() or 'none found'}",
        f"- Base Python for set-up: {base_text}",
        f"- Engine in use: {engine.kind} · {engine.python or '(none)'} · device setting "
        f"{engine.device}",
        f"- Private environment: {state.state} · {state.target} · {state.message}",
    ]
    if state.stamp:
        stamp = state.stamp
        lines.append(f"  - made {stamp.get('created')} for mrhash {stamp.get('engine')}, torch "
                     f"{stamp.get('torch')} ({stamp.get('device')}), base {stamp.get('python')}")
    lines.append(f"- Engine state: {client.state}"
                 + (f" · {client.last_error.splitlines()[0]}" if client.last_error else ""))
    if client.info:
        lines.append(f"- Engine: mrhash {client.info.get('version')} on "
                     f"{client.info.get('device_name') or client.info.get('device')}")
    if doctor:
        lines.append(f"- Engine Python {doctor.python} ({doctor.executable}) · "
                     f"GDAL {doctor.gdal} · PROJ {doctor.proj} · torch CUDA "
                     f"build {doctor.torch_cuda_build} · CUDA available "
                     f"{doctor.cuda_available}")
        lines.append("- Packages: " + ", ".join(f"{name} {version or 'MISSING'}" for name, version
                                                 in doctor.packages.items()))
        for problem in doctor.problems:
            lines.append(f"  - problem: {problem.package or problem.module}: {problem.message}")
    lines.append("- Recent engine errors:" if client.recent_errors else "- Recent engine "
                 "errors: none")
    lines += [f"  - {error}" for error in client.recent_errors]
    lines.append("- Set-up log (last lines):")
    lines += [f"      {line}" for line in _log_tail()]
    return "\n".join(lines) + "\n"
