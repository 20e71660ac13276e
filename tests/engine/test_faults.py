"""Bad input and faults, by group (docs/RELIABILITY.md): every case asserts the exit code, a
message that names the file and the problem, no traceback, and that nothing was written or
lost. Real commands (`python -m mrhash ...`) and the real worker on real EuroSAT rasters."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import rasterio
from mrhash.fileio import exclusive_lock
from mrhash.model.history import generation_path
from rasterio.transform import from_origin
from test_index_support import THREADS_ENV, raster_folder
from test_worker import Engine

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def mrhash(*args: str, cwd: Path | None = None, user: str | None = None,
           check_clean: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mrhash", *map(str, args)]
    if user:  # drop root: permissions only bind other users
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                   *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd,
                         env=THREADS_ENV)
    if check_clean:
        assert "Traceback" not in run.stderr, run.stderr
    return run


def index_rows(index: Path) -> list[tuple]:
    with closing(sqlite3.connect(index / "index.sqlite")) as db:
        return db.execute("SELECT t.id, f.path, t.ordinal, t.code FROM tiles t "
                          "JOIN files f ON f.id = t.file_id ORDER BY t.id").fetchall()


@pytest.fixture
def archive(tmp_path, eurosat_dir) -> Path:
    """Real rasters in two subfolders."""
    root = tmp_path / "archive"
    raster_folder(root / "a", eurosat_dir, ("Forest",), 2)
    raster_folder(root / "b", eurosat_dir, ("River",), 2)
    return root


def build(archive: Path, model: Path, index: Path, *extra, **kwargs):
    return mrhash("index", archive, "--model", model, "--index", index, "--tile-size", "32",
                  "--json", index.parent / "result.json", *extra, **kwargs)


def result_of(index: Path) -> dict:
    return json.loads((index.parent / "result.json").read_text())


# -- 1. nothing lost: deletion only on positive evidence -------------------------------------
@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"),
                    reason="needs root to run the command as another user")
def test_an_unreadable_subfolder_keeps_its_tiles(tiny_model, eurosat_dir):
    work = Path(tempfile.mkdtemp(prefix="mrhash-perm-"))
    try:
        work.chmod(0o777)
        archive = work / "archive"
        raster_folder(archive / "a", eurosat_dir, ("Forest",), 2)
        raster_folder(archive / "b", eurosat_dir, ("River",), 2)
        model = work / "model.safetensors"
        shutil.copy(tiny_model, model)
        for path in [work, *work.rglob("*")]:
            os.chown(path, 65534, 65534)
        index = work / "index"
        assert build(archive, model, index, user="65534").returncode == 0
        before = index_rows(index)
        (archive / "b").chmod(0)  # as for a share that went away for a moment
        run = build(archive, model, index, user="65534")
        assert run.returncode == 0, run.stderr
        result = result_of(index)
        assert result["removed"] == 0 and result["files_removed"] == 0
        assert index_rows(index) == before
        assert any("archive/b" in s["path"] and "cannot be read" in s["error"]
                   for s in result["skipped"])
        assert {Path(k["path"]).name for k in result["kept"]} == {
            p.name for p in sorted((eurosat_dir / "River").glob("*.tif"))[:2]}
        (archive / "b").chmod(0o755)
        assert build(archive, model, index, user="65534").returncode == 0
        assert result_of(index)["unchanged"] == 4 and index_rows(index) == before
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(0o755) if path.is_dir() else None
        shutil.rmtree(work, ignore_errors=True)


def test_a_vanished_or_empty_subfolder_keeps_its_tiles_and_a_moved_one_is_not_doubled(
        tiny_model, archive, tmp_path):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    before = index_rows(index)
    (archive / "b").rename(tmp_path / "b-away")  # an unmounted share: the folder is gone
    assert build(archive, tiny_model, index).returncode == 0
    assert index_rows(index) == before and len(result_of(index)["kept"]) == 2
    (archive / "b").mkdir()  # ... or its empty mount point
    run = build(archive, tiny_model, index)
    assert run.returncode == 0 and index_rows(index) == before
    assert "kept" in run.stderr and "tiles are kept" in run.stderr
    (archive / "b").rmdir()
    (tmp_path / "b-away").rename(archive / "c")  # moved within the archive
    assert build(archive, tiny_model, index).returncode == 0
    result = result_of(index)
    assert result["files_removed"] == 2 and result["files_indexed"] == 2 and not result["kept"]
    rows = index_rows(index)
    assert len(rows) == len(before)  # no tile twice
    assert sorted(r[3] for r in rows) == sorted(r[3] for r in before)  # same codes


def test_an_unreadable_root_folder_is_an_error_and_removes_nothing(tiny_model, archive,
                                                                   tmp_path):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    before = index_rows(index)
    run = build(tmp_path / "no-such-archive", tiny_model, index)
    assert run.returncode == 2 and "no-such-archive: does not exist" in run.stderr
    assert index_rows(index) == before


def test_symlinked_subfolders_are_followed_once(tiny_model, archive, tmp_path):
    outside = tmp_path / "elsewhere"
    (archive / "b").rename(outside)
    (archive / "linked").symlink_to(outside, target_is_directory=True)
    (outside / "loop").symlink_to(archive, target_is_directory=True)  # a cycle
    index = tmp_path / "index"
    run = build(archive, tiny_model, index)
    assert run.returncode == 0, run.stderr
    assert result_of(index)["files_indexed"] == 4  # a/ twice reachable, indexed once
    assert any("/linked/" in row[1] for row in index_rows(index))


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a file system here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_during_a_build_is_said_and_committed_tiles_are_kept(
        tiny_model, archive, small_disk):
    index = small_disk / "index"
    run = mrhash("index", archive, "--model", tiny_model, "--index", index, "--tile-size", "32")
    assert run.returncode == 2, run.stderr
    assert f"{index}: the disk is full" in run.stderr
    rows = index_rows(index)  # what was committed is readable and consistent
    assert len({(r[1], r[2]) for r in rows}) == len(rows)


# -- 2. one bad raster never stops a folder ----------------------------------------------------
def _off_domain_raster(path: Path) -> None:
    """13 bands like the others, but corners with no position in EPSG:4326."""
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=13,
                       dtype="uint16", crs="EPSG:32631",
                       transform=from_origin(5e7, 9e7, 10, 10)) as dataset:
        dataset.write(np.full((13, 64, 64), 500, dtype="uint16"))


def test_bad_names_and_off_domain_rasters_are_skipped_and_the_rest_indexed(
        tiny_model, archive, tmp_path):
    good = next((archive / "a").glob("*.tif"))
    bad_name = os.fsencode(archive / "a") + b"/bad\xff.tif"
    shutil.copy(good, bad_name)
    _off_domain_raster(archive / "a" / "00_off_domain.tif")  # sorted before the others
    index = tmp_path / "index"
    run = build(archive, tiny_model, index)
    assert run.returncode == 0, run.stderr
    result = result_of(index)
    assert result["files_indexed"] == 4  # every good raster, also those sorted after
    errors = {Path(s["path"]).name: s["error"] for s in result["skipped"]}
    assert "not valid UTF-8" in errors["bad\\xff.tif"]
    assert "no position in EPSG:4326" in errors["00_off_domain.tif"]
    scan = mrhash("scan", archive)
    assert scan.returncode == 0
    assert len(json.loads(scan.stdout)["errors"]) == 2
    assert mrhash("index", archive, "--model", tiny_model, "--index", index, "--tile-size",
                  "32").returncode == 0  # the re-run goes on as well


# -- 3. an index on read-only storage answers queries -------------------------------------------
@pytest.fixture
def read_only_copy(tiny_model, archive, tmp_path):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    mount = tmp_path / "dvd"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a file system here")
    shutil.copytree(index, mount / "index")
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount / "index"
    subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_index_answers_queries_with_thumbnails(read_only_copy, tmp_path):
    out = tmp_path / "hits.json"
    run = mrhash("query", "--index", read_only_copy, "--tile", "1", "-k", "3", "--thumbnails",
                 "--json", out)
    assert run.returncode == 0, run.stderr
    hits = json.loads(out.read_text())["hits"]
    assert hits[0]["distance"] == 0 and all(Path(h["thumbnail"]).is_file() for h in hits)
    assert not str(hits[0]["thumbnail"]).startswith(str(read_only_copy))
    assert "rebuild" not in run.stderr


# -- 4. the worker answers every request and never freezes -------------------------------------
def test_the_worker_survives_non_json_numbers_and_special_files(tmp_path, tiny_model):
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    engine = Engine()
    try:
        engine.read()  # ready
        engine.send('{"id": NaN, "method": "status"}')
        assert engine.read(30)["error"]["code"] == "bad_request"
        engine.send('{"id": 1e400, "method": "status"}')
        assert engine.read(30)["error"]["code"] == "bad_request"
        engine.send({"id": "q", "method": "query",
                     "params": {"index": str(tmp_path), "raster": str(fifo),
                                "footprint": "POLYGON((0 0,1 0,1 1,0 1,0 0))", "k": 3}})
        reply = engine.read(30)
        assert reply["error"]["code"] in ("bad_input", "bad_index"), reply
        engine.send({"id": "s", "method": "scan", "params": {"folder": str(fifo)}})
        reply = engine.read(30)
        assert reply["error"]["code"] == "bad_input" and "fifo.tif" in reply["error"]["message"]
        engine.send({"id": "t", "method": "train",
                     "params": {"primary": {"paths": [str(fifo)]}, "output":
                                str(tmp_path / "m.safetensors"), "clusters": 2}})
        reply = engine.until_done("t", 60)[0]
        assert reply["error"]["code"] == "bad_input"
        assert "not a regular file" in reply["error"]["message"]
        assert engine.request("z", "status")["result"]["version"]  # still serving
        engine.process.stdin.close()  # the client went away
        assert engine.process.wait(30) == 0
    finally:
        engine.close()
    for args in (("tiles", fifo), ("query", "--index", tmp_path, "--tile", "1", "--model", fifo)):
        run = mrhash(*args)
        assert run.returncode == 2 and "fifo.tif" in run.stderr and "regular file" in run.stderr


# -- 5. no silent wrong results ---------------------------------------------------------------
def test_a_codes_cache_from_another_index_is_not_used(tiny_model, eurosat_dir, tmp_path):
    first = raster_folder(tmp_path / "one", eurosat_dir, ("Forest",), 2)
    second = raster_folder(tmp_path / "two", eurosat_dir, ("SeaLake",), 2)
    index_one, index_two = tmp_path / "i1" / "index", tmp_path / "i2" / "index"
    index_one.parent.mkdir()
    index_two.parent.mkdir()
    assert build(first, tiny_model, index_one).returncode == 0
    assert build(second, tiny_model, index_two).returncode == 0
    shutil.copy(index_one / "codes.faiss", index_two / "codes.faiss")  # same size, generation
    out = tmp_path / "hits.json"
    run = mrhash("query", "--index", index_two, "--tile", "1", "-k", "8", "--json", out)
    assert run.returncode == 0 and "rebuilding it from the database" in run.stderr
    hits = json.loads(out.read_text())["hits"]
    assert hits[0]["id"] == 1 and hits[0]["distance"] == 0
    assert all("SeaLake" in h["path"] for h in hits)


def _uncompressed_copy(source: Path, target: Path) -> None:
    with rasterio.open(source) as src:
        profile = {**src.profile, "compress": None, "tiled": False}
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read())


def test_a_file_replaced_with_the_same_size_and_mtime_is_encoded_again(tiny_model, tmp_path,
                                                                       eurosat_dir):
    archive = tmp_path / "archive"
    archive.mkdir()
    forest = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    sea = sorted((eurosat_dir / "SeaLake").glob("*.tif"))[0]
    target = archive / "scene.tif"
    _uncompressed_copy(forest, target)
    _uncompressed_copy(sea, tmp_path / "other.tif")
    assert target.stat().st_size == (tmp_path / "other.tif").stat().st_size
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    before = index_rows(index)
    stamp = target.stat()
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # a touch
    assert build(archive, tiny_model, index).returncode == 0
    assert result_of(index)["unchanged"] == 1 and index_rows(index) == before
    stamp = target.stat()
    shutil.copy(tmp_path / "other.tif", target)  # replaced, then its mtime set back
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert target.stat().st_size == stamp.st_size
    assert target.stat().st_mtime_ns == stamp.st_mtime_ns
    assert build(archive, tiny_model, index).returncode == 0
    result = result_of(index)
    assert result["files_indexed"] == 1 and result["unchanged"] == 0
    assert [r[3] for r in index_rows(index)] != [r[3] for r in before]


def test_a_model_with_nan_weights_is_refused(tiny_model, archive, tmp_path):
    from mrhash.model.package import METADATA_KEY, _metadata
    from safetensors.torch import load_file, save_file

    tensors = load_file(tiny_model)
    name = next(n for n, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name][0] = float("nan")
    broken = tmp_path / "nan.safetensors"
    metadata = _metadata(Path(tiny_model).read_bytes())
    save_file(tensors, broken, metadata={METADATA_KEY: metadata[METADATA_KEY]})
    run = build(archive, broken, tmp_path / "index")
    assert run.returncode == 2 and "nan.safetensors" in run.stderr and "NaN" in run.stderr
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (("--batch-size", "-1"), "batch size must be between 1"),
    (("--batch-size", "0"), "batch size must be between 1"),
    (("--tile-size", "-3"), "tile size must be between"),
    (("--min-valid", "nan"), "min valid must be a fraction"),
    (("--stride", "-2"), "stride must be between"),
])
def test_invalid_index_settings_write_nothing(tiny_model, archive, tmp_path, args, fragment):
    run = mrhash("index", archive, "--model", tiny_model, "--index", tmp_path / "index", *args)
    assert run.returncode == 2 and fragment in run.stderr
    assert not (tmp_path / "index").exists()


# -- 6. recoverable states are recovered -------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_codes_cache_is_rebuilt_from_the_database(tiny_model, archive, tmp_path,
                                                            damage):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    cache = index / "codes.faiss"
    data = cache.read_bytes()
    cache.write_bytes({"empty": b"", "garbage": os.urandom(len(data)),
                       "truncated": data[: len(data) // 2]}[damage])
    out = tmp_path / "hits.json"
    run = mrhash("query", "--index", index, "--tile", "3", "-k", "2", "--json", out)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["hits"][0]["id"] == 3
    assert build(archive, tiny_model, index).returncode == 0  # and a build rewrites it
    assert cache.read_bytes()[:8] == data[:8]


# -- 7. messages, not tracebacks ---------------------------------------------------------------
def test_files_and_folders_in_the_wrong_place(tiny_model, archive, tmp_path, eurosat_dir):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    cases = [
        (("query", "--index", index, "--tile", "1", "--json", tmp_path), "is a folder"),
        (("query", "--index", tiny_model, "--tile", "1"), "is a file, not an index folder"),
        (("index", archive, "--model", tiny_model, "--index", tiny_model), "is a file"),
        (("train", "--primary", eurosat_dir / "Forest", "--primary-bands", "4,3,2", "-o",
          tmp_path), "is a folder; --output needs a file name"),
        (("train", "--primary", eurosat_dir / "Forest", "--primary-bands", "4,3,2", "-o",
          tmp_path / "no" / "such" / "m.safetensors"), "does not exist"),
        (("scan", archive, "--json", tmp_path), "is a folder"),
    ]
    for args, fragment in cases:
        run = mrhash(*args)
        assert run.returncode == 2 and fragment in run.stderr, (args, run.stderr)
    broken = tmp_path / "broken"
    (broken / "index.sqlite").mkdir(parents=True)
    run = mrhash("query", "--index", broken, "--tile", "1")
    assert run.returncode == 2 and "index.sqlite" in run.stderr


def test_float64_values_float32_cannot_hold_are_named(tmp_path):
    raster = tmp_path / "f64.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="float64", crs="EPSG:32631",
                       transform=from_origin(500000, 5000000, 10, 10)) as dataset:
        dataset.write(np.full((1, 64, 64), 1e300))
    run = mrhash("tiles", raster)
    assert run.returncode == 2 and "f64.tif: values beyond the float32 range" in run.stderr


def test_damaged_databases(tiny_model, archive, tmp_path):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    variants = {
        "blob": "UPDATE tiles SET code = x'00' WHERE id = 2",
        "rtree": "DROP TABLE tiles_rtree",
    }
    for name, sql in variants.items():
        copy = tmp_path / name
        shutil.copytree(index, copy)
        with sqlite3.connect(copy / "index.sqlite") as db:
            db.execute(sql)
        (copy / "codes.faiss").unlink()
        run = mrhash("query", "--index", copy, "--tile", "1", "--within",
                     "POLYGON((-180 -90,180 -90,180 90,-180 90,-180 -90))")
        assert run.returncode == 2 and "rebuild the index" in run.stderr, run.stderr
    pages = tmp_path / "pages"
    shutil.copytree(index, pages)
    data = (pages / "index.sqlite").read_bytes()
    (pages / "index.sqlite").write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    (pages / "codes.faiss").unlink()
    run = mrhash("query", "--index", pages, "--tile", "1")
    assert run.returncode == 2 and "damaged" in run.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (("-k", str(10**12)), "k must be between 1 and 100,000"),
    (("--exclude-radius", "nan"), "exclude radius must be"),
    (("--tile", str(2**63)), "tile ids are positive integers"),
])
def test_absurd_query_numbers(tiny_model, archive, tmp_path, args, fragment):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    base = () if "--tile" in args else ("--tile", "1")
    run = mrhash("query", "--index", index, *base, *args)
    assert run.returncode == 2 and fragment in run.stderr, run.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (("--lr", "nan"), "lr must be a positive number"),
    (("--rgb", "9,9,9"), "--rgb needs the positions"),
    (("--clusters", "1"), "clusters must be >= 2"),
])
def test_absurd_training_settings(eurosat_dir, tmp_path, args, fragment):
    model = tmp_path / "m.safetensors"
    run = mrhash("train", "--primary", eurosat_dir / "Forest", "--primary-bands", "4,3,2",
                 "--epochs", "1", "--ae-epochs", "1", "--clusters", "2", *args, "-o", model)
    assert run.returncode == 2 and fragment in run.stderr, run.stderr
    assert not model.exists()


def test_retraining_to_an_existing_model_keeps_the_one_it_replaces(eurosat_dir, tmp_path):
    model = tmp_path / "m.safetensors"
    args = ("train", "--primary", eurosat_dir / "Forest", "--primary-bands", "4,3,2",
            "--epochs", "1", "--ae-epochs", "1", "--clusters", "2", "-o", model)
    assert mrhash(*args).returncode == 0
    first = model.read_bytes()
    kept = generation_path(model, hashlib.sha256(first).hexdigest())
    run = mrhash(*args, "--seed", "1")
    assert run.returncode == 0 and f"kept as {kept}" in run.stderr, run.stderr
    assert kept.read_bytes() == first
    assert model.read_bytes() != first


def test_absurd_sizes_in_a_model_package_are_refused(tiny_model, tmp_path):
    from mrhash.model.package import METADATA_KEY, _metadata
    from safetensors.torch import load_file, save_file

    config = json.loads(_metadata(Path(tiny_model).read_bytes())[METADATA_KEY])
    config["input_size"] = 10**9
    broken = tmp_path / "huge.safetensors"
    save_file(load_file(tiny_model), broken, metadata={METADATA_KEY: json.dumps(config)})
    run = mrhash("encode", "--model", broken, tiny_model.parent, "--json", tmp_path / "c.json")
    assert run.returncode == 2 and "input_size=1000000000 is out of range" in run.stderr


def test_a_second_writer_is_told_the_index_is_in_use(tiny_model, archive, tmp_path):
    index = tmp_path / "index"
    assert build(archive, tiny_model, index).returncode == 0
    before = index_rows(index)
    with exclusive_lock(index / "index.lock", "index"):  # another build holds it
        run = build(archive, tiny_model, index, "--rebuild")
    assert run.returncode == 2 and "index in use by another process" in run.stderr
    assert index_rows(index) == before  # --rebuild did not touch it
    assert build(archive, tiny_model, index).returncode == 0  # free again


# -- 8. paths ---------------------------------------------------------------------------------
def test_relative_paths_are_stored_absolute(tiny_model, archive, tmp_path):
    index = tmp_path / "index"
    run = mrhash("index", "archive", "--model", tiny_model, "--index", "index", "--tile-size",
                 "32", cwd=tmp_path)
    assert run.returncode == 0
    paths = {row[1] for row in index_rows(index)}
    assert all(Path(p).is_absolute() for p in paths)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "hits.json"
    assert mrhash("query", "--index", index, "--tile", "1", "--thumbnails", "--json", out,
                  cwd=elsewhere).returncode == 0
    assert json.loads(out.read_text())["hits"][0]["thumbnail"]
    assert build(archive, tiny_model, index).returncode == 0  # the same folder, absolute
    assert result_of(index)["unchanged"] == 4 and result_of(index)["added"] == 0
