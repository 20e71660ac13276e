"""Where the engine lives and the user's choices, kept in QgsSettings under `mrhash/`.

The engine runs in its own Python interpreter. By default the plugin uses, in order: the
interpreter set by the user, the `.venv` of the repository checkout the plugin sits in (a
developer install), or the system `python3` with the engine bundled in the plugin zip
(`mrhash_qgis/engine/mrhash`) put on its PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsSettings

PLUGIN_DIR = Path(__file__).resolve().parents[1]
BUNDLED_ENGINE_DIR = PLUGIN_DIR / "engine"
_PREFIX = "mrhash/"

# Variables QGIS may set for its own GDAL/PROJ/Python; the engine brings its own.
ENV_NOT_INHERITED = ("PYTHONHOME", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA", "GDAL_DRIVER_PATH")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def default_interpreter() -> str:
    """The interpreter used when the user has not chosen one ('' when none is found)."""
    checkout_venv = _venv_python(PLUGIN_DIR.parent / ".venv")
    if checkout_venv.exists():
        return str(checkout_venv)
    return shutil.which("python3") or shutil.which("python") or ""


def get(key: str, default: str = "") -> str:
    return str(QgsSettings().value(_PREFIX + key, default) or default)


def put(key: str, value: str) -> None:
    QgsSettings().setValue(_PREFIX + key, value)


@dataclass(frozen=True)
class EngineSettings:
    """How to start the worker (`<python> -m mrhash serve`) and the device jobs ask for."""

    python: str
    device: str = "auto"

    @classmethod
    def load(cls) -> EngineSettings:
        return cls(python=get("engine/python") or default_interpreter(),
                   device=get("engine/device", "auto"))

    def save(self) -> None:
        # An empty value means "use the default", so a moved checkout keeps working.
        put("engine/python", "" if self.python == default_interpreter() else self.python)
        put("engine/device", self.device)

    def command(self) -> list[str]:
        return [self.python, "-m", "mrhash", "serve"]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ENV_NOT_INHERITED}
        if (BUNDLED_ENGINE_DIR / "mrhash" / "__init__.py").exists():
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(BUNDLED_ENGINE_DIR), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def problem(self) -> str | None:
        """Why the worker cannot start with these settings, in words for the user, or None."""
        if not self.python:
            return ("No Python interpreter found for the MrHash engine. Set one in "
                    "MrHash > Settings (a Python with the engine's requirements installed).")
        if not Path(self.python).is_file():
            return (f"The engine interpreter {self.python} does not exist. Set an existing one "
                    "in MrHash > Settings.")
        return None
