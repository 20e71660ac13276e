"""`make plugin-files`: copy the files the plugin shares with the rest of the repository into
mrhash_qgis/, so that a checkout's plugin folder is complete without links (a Windows
checkout has none, and static tools do not follow them).

Each shared file has ONE source, listed in SHARED: the contract (engine/mrhash_contract/,
also the engine's `mrhash_contract`), the plugin metadata (metadata.txt) and the icons and
sample model (resources/). The copies in mrhash_qgis/ are ignored by git and refreshed by every
`make install`; `make package` (package_plugin.py) reads the sources, not the copies. A copy
edited by hand (newer than its source and different) is never overwritten, and a file in a
copied folder that its source lacks is never deleted: both stop the copy with a message, so
no work is lost and no stale file is imported. tests/checks/test_plugin_files.py asserts the
copies equal their sources. Standard library only."""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "mrhash_qgis"
# (source, relative to the repository; its place, relative to the plugin folder)
SHARED = (("engine/mrhash_contract", "contract"), ("metadata.txt", "metadata.txt"),
          ("resources", "resources"))
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


class CopyRefused(Exception):
    """A copy holds work of its own (edited by hand, or a file its source lacks)."""


def plain_files(root: Path) -> Iterator[Path]:
    """Every file below `root` (or `root` itself when a file), caches left out."""
    paths = [root] if root.is_file() else sorted(root.rglob("*"))
    for path in paths:
        if (path.is_file() and not SKIP_PARTS & set(path.parts)
                and path.suffix not in SKIP_SUFFIXES):
            yield path


def shared_files(repo: Path = REPO) -> Iterator[tuple[Path, str]]:
    """(source file, its path inside the plugin folder, POSIX) for every shared file."""
    for source, inside in SHARED:
        root = repo / source
        for path in plain_files(root):
            relative = path.relative_to(root).as_posix()
            yield path, inside if relative == "." else f"{inside}/{relative}"


def leftovers(repo: Path = REPO) -> list[Path]:
    """Files in the plugin's copied folders that no source has (a module since deleted or
    renamed at its source, or one created in the copy by mistake)."""
    plugin = repo / PLUGIN_NAME
    expected = {plugin / inside for _, inside in shared_files(repo)}
    found = [path for _, inside in SHARED if (plugin / inside).is_dir()
             for path in plain_files(plugin / inside)]
    return [path for path in found if path not in expected]


def differences(repo: Path = REPO) -> list[str]:
    """What differs between the plugin's copies and their sources, one line each (empty when
    every copy is identical)."""
    plugin = repo / PLUGIN_NAME
    found = [f"{PLUGIN_NAME}/{inside}: a link, not a copy" for _, inside in SHARED
             if (plugin / inside).is_symlink()]
    for source, inside in shared_files(repo):
        copy = plugin / inside
        if not copy.is_file():
            found.append(f"{PLUGIN_NAME}/{inside}: missing (source {source.relative_to(repo)})")
        elif not filecmp.cmp(source, copy, shallow=False):
            found.append(f"{PLUGIN_NAME}/{inside}: differs from {source.relative_to(repo)}")
    found += [f"{path.relative_to(repo).as_posix()}: no source has it" for path in leftovers(repo)]
    return found


def sync(repo: Path = REPO) -> list[str]:
    """Bring every copy up to date with its source; returns the plugin paths written. Raises
    CopyRefused, writing nothing, when a copy holds work of its own."""
    plugin = repo / PLUGIN_NAME
    for _, inside in SHARED:  # the links of an older checkout hold no work: files replace them
        if (plugin / inside).is_symlink():
            (plugin / inside).unlink()
    stale, refused = [], []
    for source, inside in shared_files(repo):
        copy = plugin / inside
        if not copy.is_file():
            stale.append((source, copy))
        elif not filecmp.cmp(source, copy, shallow=False):
            # copy2 gives a copy its source's time: a later time is a hand edit
            if copy.stat().st_mtime > source.stat().st_mtime:
                refused.append(f"{copy.relative_to(repo)} was edited: make the change in "
                               f"{source.relative_to(repo)}, then delete the copy")
            else:
                stale.append((source, copy))
    refused += [f"{path.relative_to(repo)}: no source has it; move it to the source or delete it"
                for path in leftovers(repo)]
    if refused:
        raise CopyRefused("\n".join(refused))
    for source, copy in stale:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    return [copy.relative_to(plugin).as_posix() for _, copy in stale]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report copies that differ from their sources (exit 1 if any)")
    if parser.parse_args(argv).check:
        found = differences()
        print("\n".join(found) or "plugin copies identical to their sources")
        return 1 if found else 0
    try:
        written = sync()
    except CopyRefused as refusal:
        print(f"plugin files not copied:\n{refusal}", file=sys.stderr)
        return 1
    if written:
        print(f"copied into {PLUGIN_NAME}/: {len(written)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
