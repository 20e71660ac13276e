"""Thumbnails stored at index time (thumbnail_store.py) on real EuroSAT rasters: one picture per
committed tile, the picture a render gives, read by queries without the rasters, never one
of another tile, model or band selection, and none with --no-thumbnails."""

from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
from mrhash.index.build import build_index
from mrhash.index.folder import IndexFolder
from mrhash.index.thumbnail_store import ThumbnailReader
from mrhash.index.thumbnails import THUMBNAIL_PX, render
from mrhash.search.searcher import Searcher
from mrhash_contract.index_layout import DB_FILE, THUMBNAILS_FILE, meta
from mrhash_contract.protocol import QueryRequest
from PIL import Image
from test_index_support import THREADS_ENV, TILE


def _ids(path: Path, table: str) -> set[int]:
    """The ids of a table, read only (a missing file is an error, never created)."""
    with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
        return {row[0] for row in db.execute(f"SELECT id FROM {table}")}


def pictures(index_dir: Path) -> set[int]:
    return _ids(index_dir / THUMBNAILS_FILE, "pictures")


def tile_ids(index_dir: Path) -> set[int]:
    return _ids(index_dir / DB_FILE, "tiles")


def test_every_tile_has_its_rendered_picture_and_queries_need_no_raster(tiny_model, rasters,
                                                                        tmp_path):
    index = tmp_path / "index"
    build_index(rasters, tiny_model, index, TILE)
    assert pictures(index) == tile_ids(index) and len(pictures(index)) == 36
    searcher = Searcher(index)
    try:
        records = searcher.folder.store.tiles(sorted(tile_ids(index)))
        stored = searcher.stored_thumbnails()
        model = searcher.card
        for record in list(records.values())[::5]:  # the stored picture is the rendered one
            got = np.asarray(Image.open(io.BytesIO(stored(record.id, THUMBNAIL_PX))), float)
            want = np.asarray(Image.open(io.BytesIO(render(
                record, model.primary.bands, model.config.get("rgb"), THUMBNAIL_PX,
                model.stats))), float)
            assert got.shape == want.shape == (THUMBNAIL_PX, THUMBNAIL_PX, 3)
            assert np.abs(got - want).mean() < 3  # JPEG at quality 95: ~1-2 of 255
        assert stored(next(iter(records)), 64) is None  # another size: rendered
    finally:
        searcher.close()
    shutil.rmtree(rasters)  # the rasters gone: the hits still have their pictures
    searcher = Searcher(index)
    try:
        result = searcher.search(QueryRequest(tile=3, k=5, thumbnails=True))
    finally:
        searcher.close()
    assert result["query"]["thumbnail"].endswith("3_128.png")
    assert all(Path(h["thumbnail"]).is_file() for h in result["hits"])


def test_a_local_build_never_reads_a_tile_twice_for_its_picture(tiny_model, rasters, tmp_path,
                                                               monkeypatch):
    """Issue 26: the pictures come from the patches the build encoded, so the thumbnails never
    open a raster; tiles bigger than the model's input (patches resampled) read their own
    window for the picture instead, and still get one each."""
    from mrhash.index import thumbnail_store

    opened: list[tuple[str, ...]] = []
    original = thumbnail_store.open_for_thumbnails

    def spy(paths, bands):
        opened.append(paths)
        return original(paths, bands)

    monkeypatch.setattr(thumbnail_store, "open_for_thumbnails", spy)
    index = tmp_path / "index"
    build_index(rasters, tiny_model, index, TILE)
    assert pictures(index) == tile_ids(index) and len(pictures(index)) == 36
    assert opened == []
    build_index(rasters, tiny_model, tmp_path / "index64", 2 * TILE)
    assert pictures(tmp_path / "index64") == tile_ids(tmp_path / "index64")
    assert len(opened) == 9  # one open per raster, for its windows


def test_without_thumbnails_none_are_stored_and_queries_render_them(tiny_model, rasters,
                                                                    tmp_path):
    index = tmp_path / "index"
    build_index(rasters, tiny_model, index, TILE, thumbnails=False)
    assert not (index / THUMBNAILS_FILE).exists()
    searcher = Searcher(index)
    try:
        assert searcher.stored_thumbnails() is None
        hits = searcher.search(QueryRequest(tile=3, k=5, thumbnails=True))["hits"]
    finally:
        searcher.close()
    assert all(Path(h["thumbnail"]).is_file() for h in hits)
    # a later build with thumbnails stores those of the tiles it commits; the rest render
    build_index(rasters, tiny_model, index, TILE, rebuild=True)
    assert pictures(index) == tile_ids(index)


def test_removed_tiles_lose_their_pictures_and_another_index_store_is_not_read(
        tiny_model, rasters, tmp_path):
    index = tmp_path / "index"
    build_index(rasters, tiny_model, index, TILE)
    gone = sorted(rasters.glob("*.tif"))[0]
    gone.unlink()
    build_index(rasters, tiny_model, index, TILE)
    assert pictures(index) == tile_ids(index) and len(pictures(index)) == 32
    # pictures a kill left behind (tiles removed, pictures not yet): dropped by the next build
    folder = IndexFolder(index)
    folder.store.remove_file(str(sorted(rasters.glob("*.tif"))[0].resolve()))
    folder.close()
    assert len(pictures(index) - tile_ids(index)) == 4
    build_index(rasters, tiny_model, index, TILE)
    assert pictures(index) == tile_ids(index)
    with closing(sqlite3.connect(index / DB_FILE)) as db:
        recorded = meta(db)
    for key, other in (("uid", "0123456789abcdef"), ("fingerprint", "f" * 64),
                       ("bands", "[1, 2, 3]")):
        assert ThumbnailReader.open(index, {**recorded, key: other}) is None
    assert ThumbnailReader.open(index, recorded) is not None


def test_kill_9_leaves_no_picture_of_an_uncommitted_tile_and_resume_fills_in(tiny_model,
                                                                            rasters, tmp_path):
    index = tmp_path / "killed"
    command = [sys.executable, "-m", "mrhash", "index", str(rasters), "--model", str(tiny_model),
               "--index", str(index), "--tile-size", str(TILE), "--stride", "8",
               "--batch-size", "3"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=THREADS_ENV)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(pictures(index)) >= 40:
                break
        except sqlite3.OperationalError:  # not created yet, or being written
            pass
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    committed = tile_ids(index)
    assert 0 < len(committed) < 9 * 25, "the run was not interrupted midway"
    assert pictures(index) <= committed  # never a picture of a tile the index lacks
    assert len(committed - pictures(index)) <= 3  # at most the batch killed between commits
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env=THREADS_ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert len(tile_ids(index)) == 9 * 25
    assert pictures(index) <= tile_ids(index)
    assert len(tile_ids(index) - pictures(index)) <= 3
