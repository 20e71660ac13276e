"""A throw-away QGIS profile with the MrHash plugin (symlinked from this checkout) enabled."""

from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_profile(root: Path, mrhash_settings: dict[str, str] | None = None,
                 plugin_zip: Path | None = None) -> Path:
    """Create <root>/profiles/default with the plugin enabled (and MrHash settings such as
    {"last/index": ...}); returns `root` for `qgis --profiles-path`. The plugin is this
    checkout's (symlinked) or, with `plugin_zip`, unpacked from that zip as QGIS's "Install
    from ZIP" does (then no checkout, and no .venv, is reachable from it)."""
    profile = root / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "mrhash_qgis"
    if plugin_zip is not None:
        zipfile.ZipFile(plugin_zip).extractall(plugins)
    elif not link.exists():
        link.symlink_to(REPO / "mrhash_qgis", target_is_directory=True)
    ini_path = profile / "QGIS" / "QGIS3.ini"
    ini_path.parent.mkdir(parents=True, exist_ok=True)
    ini = configparser.RawConfigParser()
    ini.optionxform = str  # QGIS keys are case-sensitive
    ini.read(ini_path)
    for section, values in {
        "PythonPlugins": {"mrhash_qgis": "true"},
        "qgis": {"checkVersion": "false", "showTips322": "false", "showTips": "false"},
        "core": {"NewsFeed\\httpsfeedqgisorg\\disabled": "true"},
        "mrhash": {key.replace("/", "\\"): value
                   for key, value in (mrhash_settings or {}).items()},
    }.items():
        if not ini.has_section(section):
            ini.add_section(section)
        for key, value in values.items():
            ini.set(section, key, value)
    with ini_path.open("w") as handle:
        ini.write(handle, space_around_delimiters=False)
    return root
