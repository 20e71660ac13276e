"""Where the engine lives and the user's choices, kept in QgsSettings under `mrhash/`.

The engine runs in its own Python. The plugin uses, in order:
1. `custom`: the interpreter the user chose (Settings › Use another Python); the engine bundled
   with the plugin (`mrhash_qgis/engine/`) is put first on its PYTHONPATH;
2. `managed`: the private environment built by *Set up the engine* in the profile's data
   folder (`<profile>/mrhash/engine`, core/environment.py), once its set-up has finished;
3. `checkout`: the `.venv` of the repository checkout the plugin sits in (developers);
otherwise `none`: the dock and Settings offer *Set up the engine*.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from mrhash_qgis.core.environment import (
    PLUGIN_DIR,
    STAMP_NAME,
    EnvState,
    SetupOptions,
    clean_environment,
    default_target,
    env_python,
    inspect_env,
)
from mrhash_qgis.core.i18n import tr

BUNDLED_ENGINE_DIR = PLUGIN_DIR / "engine"
_PREFIX = "mrhash/"


def get(key: str, default: str = "") -> str:
    return str(QgsSettings().value(_PREFIX + key, default) or default)


def put(key: str, value: str) -> None:
    QgsSettings().setValue(_PREFIX + key, value)


def managed_target() -> Path:
    """The profile's private engine environment (it may not exist yet)."""
    return default_target(Path(QgsApplication.qgisSettingsDirPath()))


def managed_state() -> EnvState:
    return inspect_env(managed_target())


def checkout_interpreter() -> str:
    """A developer checkout's `.venv` python beside the plugin folder, or ''."""
    venv = PLUGIN_DIR.parent / ".venv"
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return str(python) if python.exists() else ""


def setup_options(fresh: bool) -> SetupOptions:
    """The set-up the user configured in Settings (torch build, wheel folder, index, Python)."""
    return SetupOptions(target=managed_target(), python=get("setup/python"),
                        device=get("setup/device", "auto"), find_links=get("setup/find_links"),
                        index_url=get("setup/index_url"), fresh=fresh)


@dataclass(frozen=True)
class EngineSettings:
    """How to start the worker (`<python> -m mrhash serve`) and the device jobs ask for.
    `kind`: custom | managed | checkout | none (see the module docstring)."""

    python: str
    device: str = "auto"
    kind: str = "custom"

    @classmethod
    def load(cls) -> EngineSettings:
        device = get("engine/device", "auto")
        custom = get("engine/python")
        if custom:
            return cls(custom, device, "managed" if _is_managed(custom) else "custom")
        if managed_state().usable:
            return cls(str(env_python(managed_target())), device, "managed")
        checkout = checkout_interpreter()
        if checkout:
            return cls(checkout, device, "checkout")
        return cls("", device, "none")

    def save(self) -> None:
        # Only another Python is stored: an empty value means "the default", so a moved
        # checkout or a rebuilt environment keeps working.
        put("engine/python", self.python if self.kind == "custom" else "")
        put("engine/device", self.device)

    def command(self) -> list[str]:
        return [self.python, "-m", "mrhash", "serve"]

    def environment(self) -> dict[str, str]:
        """The worker's environment: QGIS's Python/GDAL/PROJ variables left out; another
        Python gets the bundled engine first on its path (a managed environment has the
        engine installed, so its version is checked instead)."""
        env = clean_environment()
        if self.kind == "custom" and (BUNDLED_ENGINE_DIR / "mrhash" / "__init__.py").exists():
            env["PYTHONPATH"] = str(BUNDLED_ENGINE_DIR)
        return env

    def problem(self) -> str | None:
        """Why the worker cannot start with these settings, in words for the user, or None."""
        if self.kind == "none":
            state = managed_state()
            return (tr("The MrHash engine is not set up yet: press Set up the engine (in the "
                       "MrHash panel or MrHash › Settings). It installs PyTorch and the engine "
                       "in a private folder of your QGIS profile.") if state.state == "missing"
                    else state.message)
        if not Path(self.python).is_file():
            return tr("The engine interpreter {python} does not exist. Choose another one in "
                      "MrHash › Settings, or clear it to use the private engine environment."
                      ).format(python=self.python)
        return None


@dataclass
class TrainSettings:
    """The training wizard's parameters, remembered between runs (`mrhash/train/<field>`);
    the device defaults to the one chosen for jobs in Settings."""

    bits: int = 64
    clusters: int = 16
    epochs: int = 10
    ae_epochs: int = 30
    patch_size: int = 64
    device: str = "auto"
    output_dir: str = ""  # where the last model was saved

    @classmethod
    def load(cls) -> TrainSettings:
        defaults = cls(device=get("engine/device", "auto"))
        stored: dict = {}
        for item in fields(cls):
            raw = get(f"train/{item.name}")
            if isinstance(getattr(defaults, item.name), int):
                if raw.isdigit():  # a hand-edited or damaged value falls back to the default
                    stored[item.name] = int(raw)
            elif raw:
                stored[item.name] = raw
        return replace(defaults, **stored)

    def save(self) -> None:
        for item in fields(self):
            put(f"train/{item.name}", str(getattr(self, item.name)))


def _is_managed(python: str) -> bool:
    """An interpreter inside an environment that *Set up the engine* built (anywhere)."""
    folder = Path(python).parent.parent
    return (folder / STAMP_NAME).exists()
