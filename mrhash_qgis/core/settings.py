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

from mrhash_qgis.contract.choices import (
    DEFAULT_AE_EPOCHS,
    DEFAULT_BITS,
    DEFAULT_CLUSTERS,
    DEFAULT_EPOCHS,
    DEFAULT_PATCH_SIZE,
)
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


def _get(key: str, default: str = "") -> str:
    return str(QgsSettings().value(_PREFIX + key, default) or default)


def _put(key: str, value: str) -> None:
    QgsSettings().setValue(_PREFIX + key, value)


@dataclass(frozen=True)
class Setting:
    """One remembered value, `mrhash/<key>` in QgsSettings, read back as the type of its
    default (str, int or bool; a hand-edited or damaged value reads as the default)."""

    key: str
    default: str | int | bool = ""

    def get(self):
        raw = _get(self.key)
        if isinstance(self.default, bool):
            return raw in ("true", "1") if raw else self.default
        if isinstance(self.default, int):
            return int(raw) if raw.lstrip("-").isdigit() else self.default
        return raw or self.default

    def put(self, value: str | int | bool) -> None:
        if isinstance(self.default, bool):
            _put(self.key, "true" if value else "false")
        else:
            _put(self.key, str(value))


# every value the plugin remembers (the training wizard's parameters: TrainSettings below)
LAST_FOLDER = Setting("last/folder")            # the index dialog's rasters folder
LAST_MODEL = Setting("last/model")              # the model last trained, indexed or queried
LAST_INDEX = Setting("last/index")              # the index last built or queried
DASK_ADDRESS = Setting("last/dask")             # the index dialog's Dask scheduler
DASK_ON = Setting("last/dask_on", False)        # … and whether to use it
QUICK_START = Setting("quick_start/plan")       # the guided start under way (JSON), for resume
QUICK_START_MINUTES = Setting("quick_start/minutes", 5)
QUERY_K = Setting("query/k", 12)
QUERY_EXCLUDE_M = Setting("query/exclude_m", 0)
QUERY_SNAP = Setting("query/snap", True)
QUERY_APPEND = Setting("query/append", False)
ENGINE_PYTHON = Setting("engine/python")        # another Python the user chose ("" = default)
ENGINE_DEVICE = Setting("engine/device", "auto")
SETUP_PYTHON = Setting("setup/python")          # the base Python of *Set up the engine*
SETUP_DEVICE = Setting("setup/device", "auto")  # the PyTorch build to install
SETUP_FIND_LINKS = Setting("setup/find_links")  # a wheel folder (offline set-up)
SETUP_INDEX_URL = Setting("setup/index_url")    # an organisation's package index


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
    return SetupOptions(target=managed_target(), python=SETUP_PYTHON.get(),
                        device=SETUP_DEVICE.get(), find_links=SETUP_FIND_LINKS.get(),
                        index_url=SETUP_INDEX_URL.get(), fresh=fresh)


@dataclass(frozen=True)
class EngineSettings:
    """How to start the worker (`<python> -m mrhash serve`) and the device jobs ask for.
    `kind`: custom | managed | checkout | none (see the module docstring)."""

    python: str
    device: str = "auto"
    kind: str = "custom"

    @classmethod
    def load(cls) -> EngineSettings:
        device = ENGINE_DEVICE.get()
        custom = ENGINE_PYTHON.get()
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
        ENGINE_PYTHON.put(self.python if self.kind == "custom" else "")
        ENGINE_DEVICE.put(self.device)

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

    bits: int = DEFAULT_BITS
    clusters: int = DEFAULT_CLUSTERS
    epochs: int = DEFAULT_EPOCHS
    ae_epochs: int = DEFAULT_AE_EPOCHS
    patch_size: int = DEFAULT_PATCH_SIZE
    device: str = "auto"
    output_dir: str = ""  # where the last model was saved

    @classmethod
    def load(cls) -> TrainSettings:
        defaults = cls(device=ENGINE_DEVICE.get())
        stored: dict = {}
        for item in fields(cls):
            raw = _get(f"train/{item.name}")
            if isinstance(getattr(defaults, item.name), int):
                if raw.isdigit():  # a hand-edited or damaged value falls back to the default
                    stored[item.name] = int(raw)
            elif raw:
                stored[item.name] = raw
        return replace(defaults, **stored)

    def save(self) -> None:
        for item in fields(self):
            _put(f"train/{item.name}", str(getattr(self, item.name)))


def _is_managed(python: str) -> bool:
    """An interpreter inside an environment that *Set up the engine* built (anywhere)."""
    folder = Path(python).parent.parent
    return (folder / STAMP_NAME).exists()
