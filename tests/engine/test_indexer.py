"""build_index on real EuroSAT rasters with a real (tiny) model: incremental updates, bad files,
another model, corrupted and stale index files, cancel and kill -9 with resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mrhash.errors import BadInput, Cancelled, IndexCorrupted
from mrhash.index.build import build_index
from mrhash.index.folder import IndexFolder
from mrhash.jobs import JobControl
from mrhash.search.searcher import run_query
from mrhash_contract.index_layout import CODES_FILE, DB_FILE
from mrhash_contract.protocol import QueryRequest
from test_index_support import THREADS_ENV, TILE


def rows(index_dir: Path) -> list[tuple]:
    """Every stored tile (id, raster, ordinal, window, code), in id order."""
    db = sqlite3.connect(index_dir / DB_FILE)
    try:
        return db.execute("SELECT t.id, f.path, t.ordinal, t.col, t.row, t.code FROM tiles t "
                          "JOIN files f ON f.id = t.file_id ORDER BY t.id").fetchall()
    finally:
        db.close()


def assert_consistent(index_dir: Path) -> None:
    """The FAISS file holds exactly the database's tiles, saved at its generation."""
    folder = IndexFolder(index_dir)
    try:
        from mrhash.index.hamming import BinaryIndex

        index, header = BinaryIndex.load(index_dir / CODES_FILE)
        assert header["generation"] == folder.store.generation
        ids, codes = index.contents()
        db_ids, db_codes = folder.store.all_codes(8)
        assert np.array_equal(ids, db_ids) and np.array_equal(codes, db_codes)
    finally:
        folder.close()


def test_build_and_incremental_updates(tiny_model, rasters, tmp_path, eurosat_dir):
    index_dir = tmp_path / "index"
    first = build_index(rasters, tiny_model, index_dir, TILE)
    assert first.n_tiles == 36 and first.added == 36 and first.files_indexed == 9
    assert first.skipped == []
    assert_consistent(index_dir)
    before = rows(index_dir)

    again = build_index(rasters, tiny_model, index_dir, TILE)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 9)
    assert rows(index_dir) == before

    files = sorted(rasters.glob("*.tif"))
    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))  # touch only
    shutil.copyfile(sorted((eurosat_dir / "SeaLake").glob("*.tif"))[0], files[1])  # changed
    files[2].unlink()                                                              # removed
    shutil.copy(sorted((eurosat_dir / "Pasture").glob("*.tif"))[0], rasters / "new.tif")
    update = build_index(rasters, tiny_model, index_dir, TILE)
    assert update.unchanged == 7 and update.files_indexed == 2 and update.files_removed == 1
    assert (update.added, update.removed, update.n_tiles) == (8, 8, 36)
    after = rows(index_dir)
    assert {r[1] for r in after} == {str(p) for p in rasters.glob("*.tif")}
    assert max(r[0] for r in after) > max(r[0] for r in before)  # new ids, none reused
    kept = [r for r in before if r[1] not in (str(files[1]), str(files[2]))]
    assert [r for r in after if r[0] in {k[0] for k in kept}] == kept
    assert_consistent(index_dir)


def test_unreadable_files_are_skipped_and_listed(tiny_model, rasters, tmp_path):
    (rasters / "garbage.tif").write_bytes(b"this is no raster")
    good = sorted(rasters.glob("*.tif"))[0].read_bytes()
    (rasters / "truncated.tif").write_bytes(good[: len(good) // 2])
    result = build_index(rasters, tiny_model, tmp_path / "index", TILE)
    skipped = {Path(s.path).name: s.error for s in result.skipped}
    assert set(skipped) == {"garbage.tif", "truncated.tif"}
    assert all(name in error for name, error in skipped.items())
    assert result.n_tiles == 36
    assert {Path(r[1]).name for r in rows(tmp_path / "index")} == \
        {p.name for p in rasters.glob("*.tif")} - set(skipped)


def test_another_model_is_refused_and_rebuild_accepts_it(tiny_model, rasters, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    # a genuinely different package: same weights, another recorded config
    with safe_open(tiny_model, "pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["mrhash"])
    config["params"]["seed"] = 12345
    other = tmp_path / "other.safetensors"
    save_file(tensors, other, metadata={"mrhash": json.dumps(config)})
    with pytest.raises(IndexCorrupted, match="another model") as caught:
        build_index(rasters, other, index_dir, TILE)
    assert caught.value.fix == "rebuild" and "--rebuild" in caught.value.message
    with pytest.raises(IndexCorrupted, match="built with model"):
        from mrhash.model.package import load_model

        run_query(index_dir, QueryRequest(tile=1, k=3), model=load_model(other))
    rebuilt = build_index(rasters, other, index_dir, TILE, rebuild=True)
    assert rebuilt.n_tiles == 36


def test_other_tile_grid_is_refused(tiny_model, rasters, tmp_path):
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    with pytest.raises(BadInput, match="tile size 32, stride 32") as caught:
        build_index(rasters, tiny_model, tmp_path / "index", TILE, 16)
    assert caught.value.fix == "rebuild"


def test_a_folder_without_rasters_is_an_error(tiny_model, tmp_path):
    folder = tmp_path / "no_rasters"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a raster")
    with pytest.raises(BadInput) as caught:
        build_index(folder, tiny_model, tmp_path / "index", TILE)
    message = caught.value.message
    assert message.startswith(str(folder)) and "no raster in this folder" in message
    assert all(ext in message for ext in (".tif", ".tiff", ".jp2", ".img", ".vrt"))
    assert not (tmp_path / "index").exists()


def test_a_first_build_that_indexes_nothing_leaves_no_index(tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "index"
    job = JobControl()
    job.cancel()  # at once: before the first tile
    with pytest.raises(Cancelled):
        build_index(rasters, tiny_model, index_dir, TILE, job=job)
    assert not (index_dir / DB_FILE).exists() and not (index_dir / CODES_FILE).exists()
    # so nothing recorded refuses another tile grid next time
    assert build_index(rasters, tiny_model, index_dir, TILE, 16).n_tiles == 9 * 9


def test_corrupted_codes_file_is_rebuilt_from_the_database(tiny_model, rasters, tmp_path,
                                                            capsys):
    """The codes file is a cache: SQLite holds every code, so a damaged file costs nothing."""
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    expected = run_query(index_dir, QueryRequest(tile=5, k=5))["hits"]
    codes = index_dir / CODES_FILE
    good = codes.read_bytes()
    codes.write_bytes(good[:-50])
    assert run_query(index_dir, QueryRequest(tile=5, k=5))["hits"] == expected
    assert "truncated" in capsys.readouterr().err
    build_index(rasters, tiny_model, index_dir, TILE)  # the build saves a sound one again
    assert codes.read_bytes() == good


def test_stale_codes_file_is_rebuilt_from_the_database(tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    old = (index_dir / CODES_FILE).read_bytes()
    (sorted(rasters.glob("*.tif"))[0]).unlink()
    build_index(rasters, tiny_model, index_dir, TILE)
    # as if killed between the last commit and the FAISS save
    (index_dir / CODES_FILE).write_bytes(old)
    result = run_query(index_dir, QueryRequest(tile=20, k=40))
    assert result["n_tiles"] == 32
    assert all(hit["id"] > 4 for hit in result["hits"])


def test_cancel_keeps_committed_batches_and_resumes(tiny_model, rasters, tmp_path):
    clean = tmp_path / "clean"
    build_index(rasters, tiny_model, clean, TILE, batch_size=2)
    events = []

    def on_progress(event):
        events.append(event)
        if len(events) == 3:
            job.cancel()

    job = JobControl(on_progress, min_interval_s=0)
    with pytest.raises(Cancelled):
        build_index(rasters, tiny_model, tmp_path / "index", TILE, job=job, batch_size=2)
    partial = rows(tmp_path / "index")
    assert 0 < len(partial) < 36
    assert_consistent(tmp_path / "index")
    result = build_index(rasters, tiny_model, tmp_path / "index", TILE, batch_size=2)
    assert result.added == 36 - len(partial)
    assert rows(tmp_path / "index") == rows(clean)


def test_kill_9_then_resume_equals_a_clean_run(tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "mrhash", "index", str(rasters), "--model", str(tiny_model),
               "--index", str(index_dir), "--tile-size", str(TILE), "--stride", "8",
               "--batch-size", "3", "--json", str(tmp_path / "out.json")]
    total = 9 * 25  # 5 x 5 tiles of 32 px every 8 px on each 64 px raster
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=THREADS_ENV)
    committed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (index_dir / DB_FILE).exists():
            try:
                db = sqlite3.connect(index_dir / DB_FILE, timeout=1)
                committed = db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:  # schema not created yet
                committed = 0
            if committed >= 40:
                break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    at_kill = len(rows(index_dir))
    assert 0 < at_kill < total, "the run was not interrupted midway"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env=THREADS_ENV)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["n_tiles"] == total and result["added"] == total - at_kill

    clean_dir = tmp_path / "clean"
    clean = subprocess.run(command[:8] + [str(clean_dir)] + command[9:-2], capture_output=True,
                           text=True, timeout=300, env=THREADS_ENV)
    assert clean.returncode == 0, clean.stderr
    assert rows(index_dir) == rows(clean_dir)  # same ids, windows and codes
    assert_consistent(index_dir)
    for tile in (1, 77, 150):
        a = run_query(index_dir, QueryRequest(tile=tile, k=10))
        b = run_query(clean_dir, QueryRequest(tile=tile, k=10))
        assert a["hits"] == b["hits"]


def test_partial_raster_changed_before_resume_is_restarted(tiny_model, rasters, tmp_path,
                                                           eurosat_dir):
    job = JobControl(lambda event: job.cancel(), min_interval_s=0)
    with pytest.raises(Cancelled):
        build_index(rasters, tiny_model, tmp_path / "index", TILE, job=job, batch_size=2)
    folder = IndexFolder(tmp_path / "index")
    partial = [r.path for r in folder.store.files().values() if r.status == "partial"]
    folder.close()
    assert len(partial) == 1
    shutil.copyfile(sorted((eurosat_dir / "SeaLake").glob("*.tif"))[0], partial[0])
    build_index(rasters, tiny_model, tmp_path / "index", TILE, batch_size=2)
    build_index(rasters, tiny_model, tmp_path / "clean", TILE, batch_size=2)

    def by_place(index_dir):
        return sorted((path, ordinal, code) for _, path, ordinal, _, _, code in rows(index_dir))

    assert by_place(tmp_path / "index") == by_place(tmp_path / "clean")


def test_ctrl_c_cancels_cleanly_and_a_rerun_finishes(tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "index"
    command = [sys.executable, "-m", "mrhash", "index", str(rasters), "--model", str(tiny_model),
               "--index", str(index_dir), "--tile-size", str(TILE), "--stride", "8",
               "--batch-size", "3"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=THREADS_ENV)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            db = sqlite3.connect(index_dir / DB_FILE, timeout=1)
            committed = db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
            db.close()
        except sqlite3.Error:
            committed = 0
        if committed >= 20:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "cancelled" in stderr and "resume" in stderr
    kept = len(rows(index_dir))
    assert 0 < kept < 225
    assert_consistent(index_dir)  # the FAISS file was saved at the cancel
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=THREADS_ENV)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 225 - kept


def test_index_rasters_of_another_band_layout(tiny_model, rasters, tmp_path):
    """A model trained on bands 4,3,2 of 13-band EuroSAT files indexes RGB-only copies of the
    same places with --bands 1,2,3: the same pixels give the same codes, and queries,
    thumbnails and updates read those files with the index's band selection."""
    import rasterio

    rgb_dir = tmp_path / "rgb"
    rgb_dir.mkdir()
    for src in sorted(rasters.glob("*.tif")):
        with rasterio.open(src) as ds:
            profile = ds.profile | {"count": 3}
            data = ds.read([4, 3, 2])
        with rasterio.open(rgb_dir / src.name, "w", **profile) as out:
            out.write(data)
    # without a band selection the model's 4,3,2 do not exist in 3-band files
    plain = build_index(rgb_dir, tiny_model, tmp_path / "plain", TILE)
    assert plain.n_tiles == 0 and len(plain.skipped) == 9
    assert "band 4" in plain.skipped[0].error
    # nothing indexed: no index left behind, so the same folder takes the right bands next
    assert not (tmp_path / "plain" / DB_FILE).exists()
    assert build_index(rgb_dir, tiny_model, tmp_path / "plain", TILE,
                       bands=(1, 2, 3)).n_tiles == 36

    mapped = build_index(rgb_dir, tiny_model, tmp_path / "mapped", TILE, bands=(1, 2, 3))
    original = build_index(rasters, tiny_model, tmp_path / "original", TILE)
    assert mapped.n_tiles == original.n_tiles == 36 and not mapped.skipped
    codes = {Path(r[1]).name + str(r[2]): r[5] for r in rows(tmp_path / "mapped")}
    assert codes == {Path(r[1]).name + str(r[2]): r[5] for r in rows(tmp_path / "original")}

    some = sorted(rgb_dir.glob("*.tif"))[0]
    with rasterio.open(some) as ds:
        x, y = ds.xy(16, 16, offset="ul")  # the centre of the first 32 px tile
        crs = ds.crs.to_string()
    result = run_query(tmp_path / "mapped",
                       QueryRequest(point=(x, y), crs=crs, k=3, thumbnails=True))
    assert result["hits"][0]["distance"] == 0 and all(h["thumbnail"] for h in result["hits"])
    # re-runs must keep the selection: another one is refused with the reason
    assert build_index(rgb_dir, tiny_model, tmp_path / "mapped", TILE,
                       bands=(1, 2, 3)).unchanged == 9
    with pytest.raises(BadInput, match=r"built with bands 1,2,3, not 4,3,2"):
        build_index(rgb_dir, tiny_model, tmp_path / "mapped", TILE)
