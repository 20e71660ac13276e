"""The plugin's copies of the contract, metadata.txt and resources/ (scripts/plugin_files.py):
identical to their sources in this checkout; refreshed when a source changes; never
overwritten when edited by hand; and no link left in the plugin folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from plugin_files import SHARED, CopyRefused, differences, shared_files, sync  # noqa: E402


def test_the_plugin_copies_are_identical_to_their_sources():
    assert len(list(shared_files())) > 10  # the contract, the metadata, the icons, ...
    assert differences() == [], "run `make plugin-files`"


def test_no_link_in_the_plugin_folder():
    links = [p for p in (REPO / "mrhash_qgis").rglob("*") if p.is_symlink()]
    assert links == []


@pytest.fixture
def repo(tmp_path) -> Path:
    """A checkout's shared sources, and a plugin folder with no copies yet."""
    for source, _ in SHARED:
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, tmp_path / source,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, tmp_path / source)
    (tmp_path / "mrhash_qgis").mkdir()
    return tmp_path


def test_sync_copies_then_refreshes_a_stale_copy(repo):
    assert any("contract/protocol.py: missing" in d for d in differences(repo))
    written = sync(repo)
    assert "contract/protocol.py" in written and "metadata.txt" in written
    assert differences(repo) == [] and sync(repo) == []
    source = repo / "engine/mrhash_contract/choices.py"
    source.write_text(source.read_text() + "\nNEW = 1\n")
    os.utime(source, (source.stat().st_atime, source.stat().st_mtime + 5))
    assert differences(repo) == ["mrhash_qgis/contract/choices.py: differs from "
                                 "engine/mrhash_contract/choices.py"]
    assert sync(repo) == ["contract/choices.py"]
    assert (repo / "mrhash_qgis/contract/choices.py").read_text().endswith("NEW = 1\n")


def test_a_hand_edited_copy_or_an_orphan_stops_the_copy(repo):
    sync(repo)
    copy = repo / "mrhash_qgis/contract/bands.py"
    copy.write_text(copy.read_text() + "\n# my fix\n")
    os.utime(copy, (copy.stat().st_atime, copy.stat().st_mtime + 5))
    orphan = repo / "mrhash_qgis/resources/icons/new.svg"
    orphan.write_text("<svg/>")
    with pytest.raises(CopyRefused, match="bands.py was edited") as refused:
        sync(repo)
    assert "new.svg: no source has it" in str(refused.value)
    assert copy.read_text().endswith("# my fix\n") and orphan.exists()
    assert len(differences(repo)) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="links are what Windows checkouts lack")
def test_the_links_of_an_older_checkout_are_replaced_by_copies(repo):
    (repo / "mrhash_qgis/contract").symlink_to("../engine/mrhash_contract")
    (repo / "mrhash_qgis/metadata.txt").symlink_to("../metadata.txt")
    assert differences(repo)[:2] == ["mrhash_qgis/contract: a link, not a copy",
                                     "mrhash_qgis/metadata.txt: a link, not a copy"]
    sync(repo)
    assert differences(repo) == []
    assert not (repo / "mrhash_qgis/contract").is_symlink()
    assert (repo / "engine/mrhash_contract/protocol.py").is_file()  # the source untouched
