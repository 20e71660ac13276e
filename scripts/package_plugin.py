"""`make package`: dist/mrhash_qgis-<version>.zip, installable from QGIS ("Install from ZIP").

The zip holds the plugin (mrhash_qgis/, LICENSE, its translations in i18n/: the .ts
sources and the compiled .qm QGIS loads), the files it shares with the repository
(plugin_files.SHARED: the contract, metadata.txt, resources/), taken from their sources, not
from the checkout's copies in mrhash_qgis/, and the engine source
bundled at mrhash_qgis/engine/mrhash plus its requirements, from which *Set up the engine*
builds the engine's private environment (mrhash_qgis/core/environment.py, docs/PLUGIN.md).
Standard library only, so it runs without `make install`."""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import zipfile
from pathlib import Path

from plugin_files import SHARED, plain_files, shared_files

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "mrhash_qgis"
ENGINE = REPO / "engine"
# taken from elsewhere: the shared files from their sources, the engine from engine/
NOT_FROM_PLUGIN = {inside.split("/")[0] for _, inside in SHARED} | {"engine"}


def version() -> str:
    """The plugin's version, which the bundled engine must carry too (the plugin refuses an
    engine of another version and offers Repair)."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(REPO / "metadata.txt")
    plugin = metadata["general"]["version"]
    engine = re.search(r'^__version__ = "([^"]+)"',
                       (ENGINE / "mrhash" / "__init__.py").read_text(), re.MULTILINE)
    if not engine or engine.group(1) != plugin:
        raise SystemExit(f"metadata.txt says version {plugin} but engine/mrhash/__init__.py "
                         f"says {engine.group(1) if engine else 'nothing'}: make them equal")
    return plugin


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"mrhash_qgis-{version()}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in plain_files(PLUGIN):
            if path.relative_to(PLUGIN).parts[0] not in NOT_FROM_PLUGIN:
                archive.write(path, "mrhash_qgis/" + path.relative_to(PLUGIN).as_posix())
        for path, inside in shared_files(REPO):
            archive.write(path, "mrhash_qgis/" + inside)
        # the engine with its own `mrhash_contract`: the same files as the plugin's `contract`
        for package in ("mrhash", "mrhash_contract"):
            for path in plain_files(ENGINE / package):
                archive.write(path, "mrhash_qgis/engine/" + path.relative_to(ENGINE).as_posix())
        for name in ("requirements.txt", "pyproject.toml"):
            archive.write(ENGINE / name, f"mrhash_qgis/engine/{name}")
    names = set(zipfile.ZipFile(partial).namelist())
    for required in ("mrhash_qgis/__init__.py", "mrhash_qgis/metadata.txt", "mrhash_qgis/LICENSE",
                     "mrhash_qgis/resources/icons/mrhash.svg",
                     "mrhash_qgis/i18n/mrhash_qgis_de.qm",
                     "mrhash_qgis/engine/mrhash/__init__.py",
                     "mrhash_qgis/engine/mrhash/app/worker.py",
                     "mrhash_qgis/contract/index_layout.py",
                     "mrhash_qgis/engine/mrhash_contract/index_layout.py"):
        if required not in names:
            partial.unlink()
            raise SystemExit(f"package incomplete: {required} missing")
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    target = build(parser.parse_args(argv).out)
    print(f"{target} ({target.stat().st_size / 1024:.0f} KiB, "
          f"{len(zipfile.ZipFile(target).namelist())} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
