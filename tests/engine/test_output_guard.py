"""Outputs never clobber inputs (docs/RELIABILITY.md): `export` and the CLI's JSON outputs
refuse the index's own files, the model and any existing file that is not an earlier output
of the same kind; `cache --clear` deletes only what the pull cache wrote; an `index.lock`
that is a symbolic or hard link is not written through; a remote VRT naming local files is
refused. Real commands, the real worker, a real index
and a real HTTP server on 127.0.0.1. Each case asserts the exit code or error, the message
naming the file, no traceback, bounded time, and that every other file is unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import loopback_http as lh
import pytest
from mrhash.app.cli import main
from mrhash.errors import BadInput
from mrhash.fileio import exclusive_lock
from mrhash.index.export import export_index
from mrhash.model.datasets import remote_entry, remote_spec, specs_from_paths
from mrhash.raster.pull_cache import MARKER, cache_report, prefetch
from mrhash.remote.access import HttpSettings, RemoteOptions
from test_index_support import THREADS_ENV, indexed_folder, tiny_model_path
from test_worker import Engine

FAST = HttpSettings(timeout_s=2.0, retries=0, retry_delay_s=0.1)
LIMIT_S = 120  # every command here answers in seconds; a hang fails instead of waiting


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (files or folders), by path; not SQLite's -wal and
    -shm files, which any reader of an index makes (empty of changes)."""
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*"))
             if p.is_file() and not p.is_symlink() and not p.name.endswith(("-wal", "-shm"))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def mrhash(*args: object) -> subprocess.CompletedProcess:
    """The real command, bounded in time, with no traceback whatever it answers."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mrhash", *map(str, args)], capture_output=True,
                         text=True, timeout=LIMIT_S, env=THREADS_ENV)
    assert "Traceback" not in run.stderr, run.stderr
    assert time.monotonic() - started < LIMIT_S
    return run


def cli(capsys, *args: object) -> tuple[int, str]:
    """`mrhash ARGS` in this process: (exit code, stderr), no traceback."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def index(tmp_path_factory, eurosat_dir) -> Path:
    return indexed_folder(tmp_path_factory, eurosat_dir, "guard")


@pytest.fixture(scope="module")
def model(tmp_path_factory, eurosat_dir) -> Path:
    return tiny_model_path(tmp_path_factory, eurosat_dir)


@pytest.fixture
def untouched(index, model):
    """Asserts after the test that the index, its rasters and the model are as before."""
    before = checksums(index.parent, model)
    yield
    assert checksums(index.parent, model) == before


# -- 1. outputs never clobber inputs ---------------------------------------------------------
def test_export_into_the_index_folder_is_refused(index, untouched):
    for output in (index / "index.sqlite", index / "tiles.gpkg"):
        run = mrhash("export", "--index", index, "--format", "gpkg", "--output", output)
        assert run.returncode == 2, run.stderr
        assert f"{output}: is inside the index folder" in run.stderr
    assert not (index / "tiles.gpkg").exists()


def test_query_json_over_the_index_database_or_a_raster_is_refused(index, model, untouched,
                                                                   capsys):
    raster = next((index.parent / "rasters").glob("*.tif"))
    cases = [
        (("--json", index / "index.sqlite"), "is inside the index folder"),
        (("--json", model, "--model", model), "is the model file"),
        (("--json", raster), "exists and is a TIFF/GeoTIFF raster, not a JSON file"),
    ]
    for extra, fragment in cases:
        code, err = cli(capsys, "query", "--index", index, "--tile", "1", *extra)
        assert code == 2 and f"{extra[1]}: {fragment}" in err, err
    run = mrhash("query", "--index", index, "--tile", "1", "--json", index / "index.sqlite")
    assert run.returncode == 2 and "index.sqlite: is inside the index folder" in run.stderr


def test_an_earlier_json_output_is_replaced_and_other_files_are_not(index, untouched, capsys,
                                                                    tmp_path):
    hits = tmp_path / "hits.json"
    hits.write_text('{"hits": []}\n')
    assert cli(capsys, "query", "--index", index, "--tile", "1", "--json", hits)[0] == 0
    assert '"distance": 0' in hits.read_text()  # replaced by the new answer
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for output, fragment in ((notes, "exists and is a text file, not a JSON file"),
                             (fifo, "exists and is not a regular file")):
        started = time.monotonic()
        code, err = cli(capsys, "info", "--index", index, "--json", output)
        assert code == 2 and f"{output}: {fragment}" in err, err
        assert time.monotonic() - started < 30  # a FIFO is never opened: nothing blocks
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hits.json", "notes.txt", "pipe.json"]


def test_encode_json_and_npy_cannot_be_one_file(model, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "codes"
    before = checksums(model)
    code, err = cli(capsys, "encode", "--model", model, eurosat_dir / "Forest", "--json", out,
                    "--npy", out)
    assert code == 2 and f"{out}: is the --json output" in err, err
    assert list(tmp_path.iterdir()) == [] and checksums(model) == before


def test_export_replaces_an_earlier_export_only(index, untouched, tmp_path):
    for fmt, name in (("gpkg", "t.gpkg"), ("geoparquet", "t.parquet")):
        out = tmp_path / name
        export_index(index, fmt, out)
        first = out.stat().st_mtime_ns
        export_index(index, fmt, out)  # an earlier export: replaced
        assert out.stat().st_mtime_ns >= first
    foreign = tmp_path / "other.gpkg"  # a GeoPackage, but not one mrhash export wrote
    with closing(sqlite3.connect(foreign)) as db:
        db.executescript("PRAGMA application_id = 1196444487; CREATE TABLE gpkg_contents "
                         "(table_name TEXT, description TEXT); CREATE TABLE roads (id INT);")
    shutil.copy(index / "index.sqlite", tmp_path / "copy.gpkg")
    kept = checksums(tmp_path)
    for path, what in ((foreign, "a GeoPackage"), (tmp_path / "copy.gpkg", "an SQLite database")):
        with pytest.raises(BadInput, match=f"exists and is {what}, not a GeoPackage written"):
            export_index(index, "gpkg", path)
    assert checksums(tmp_path) == kept


def test_the_worker_never_exports_over_a_raster(index, untouched):
    raster = next((index.parent / "rasters").glob("*.tif"))
    engine = Engine()
    try:
        engine.read()  # ready
        started = time.monotonic()
        reply = engine.request("x", "export", index=str(index), format="gpkg",
                               output=str(raster))
        assert time.monotonic() - started < LIMIT_S
        error = reply["error"]
        assert error["code"] == "bad_input", reply
        assert error["message"].startswith(f"{raster}: exists and is a TIFF/GeoTIFF raster")
        assert engine.request("s", "status")["result"]["version"]  # still serving
    finally:
        engine.close()
    assert "Traceback" not in "".join(engine.stderr)


# -- 2. `cache --clear` deletes only what the cache wrote ----------------------------------------
@pytest.fixture
def pulled(tmp_path, eurosat_dir):
    """A folder of the user's (precious.txt) given as the pull cache of a real pull over HTTP
    (a EuroSAT raster served on 127.0.0.1), and a cache folder the cache made itself."""
    raster = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(raster, served / "aux.tif")
    server = lh.LoopbackServer(served)
    try:
        mine, made = tmp_path / "my-data", tmp_path / "made" / "cache"
        mine.mkdir()
        (mine / "precious.txt").write_text("years of work\n")
        for cache in (mine, made):
            spec = remote_spec(remote_entry("aux", f"{server.url}/aux.tif@1,2"),
                                   RemoteOptions("raster", cache_dir=str(cache), http=FAST))
            stats = prefetch(specs_from_paths([str(raster)]), [spec])
            assert stats.pulled == 1 and stats.bytes > 0
        yield mine, made
    finally:
        server.stop()


def test_clearing_a_users_folder_keeps_every_file_the_cache_did_not_write(pulled, capsys):
    mine, made = pulled
    source = next(p for p in mine.iterdir() if p.is_dir())
    (source / "readme.md").write_text("a note the user left in the cache's folder\n")
    report = cache_report(mine)
    assert report["files"] == 3  # the marker, one record, one pulled window
    keep = {p: h for p, h in checksums(mine).items()
            if not p.endswith((MARKER, ".json", ".tif"))}
    started = time.monotonic()
    code, err = cli(capsys, "cache", mine, "--clear")
    assert code == 0 and time.monotonic() - started < 30
    assert f"{mine} cleared 3 files" in err and "kept 2 entries" in err
    assert checksums(mine) == keep  # precious.txt and readme.md, unchanged
    assert mine.is_dir() and source.is_dir()  # not made by the cache / not empty: kept
    code, err = cli(capsys, "cache", mine, "--clear")  # no marker left: not a cache any more
    assert code == 2 and "not a MrHash pull cache" in err and checksums(mine) == keep
    assert cli(capsys, "cache", made, "--clear")[0] == 0
    assert not made.exists() and made.parent.is_dir()  # the folder it made, and no more


def test_clear_never_follows_links_nor_takes_look_alike_names(pulled, tmp_path, capsys):
    mine, _ = pulled
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0123456789abcdef.json").write_text("{}")  # named like a record
    (mine / "linked-0123456789ab").symlink_to(outside, target_is_directory=True)
    (mine / "other-0123456789ab").mkdir()  # named like a source folder, made by the user
    (mine / "other-0123456789ab" / "fedcba9876543210-0.tif").write_bytes(b"II*\0user's")
    before = checksums(outside, mine / "other-0123456789ab")
    assert cli(capsys, "cache", mine, "--clear")[0] == 0
    assert checksums(outside, mine / "other-0123456789ab") == before
    assert (mine / "precious.txt").read_text() == "years of work\n"


# -- 3. a lock file that is a symbolic link ------------------------------------------------------
@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_index_lock_is_not_written_through(index, model, tmp_path, dangling):
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    precious = tmp_path / "precious.txt"
    if not dangling:
        precious.write_text("not a lock\n")
    (copy / "index.lock").unlink(missing_ok=True)
    (copy / "index.lock").symlink_to(precious)
    before = checksums(tmp_path)
    with pytest.raises(BadInput, match="index.lock: is a symbolic link, not the index's lock"):
        with exclusive_lock(copy / "index.lock", "index"):
            pass
    run = mrhash("index", index.parent / "rasters", "--model", model, "--index", copy,
                 "--tile-size", "32")
    assert run.returncode == 2 and f"{copy / 'index.lock'}: is a symbolic link" in run.stderr
    assert checksums(tmp_path) == before
    assert precious.exists() != dangling  # a dangling link's target is not created


def test_a_hard_linked_index_lock_is_not_written_through(index, model, tmp_path):
    """A lock that is a hard link to a file of the user's (O_NOFOLLOW does not see it) is
    refused: the pid is not written over the user's file."""
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    precious = tmp_path / "precious.txt"
    precious.write_text("years of work\n")
    (copy / "index.lock").unlink(missing_ok=True)
    os.link(precious, copy / "index.lock")
    before = checksums(tmp_path)
    with pytest.raises(BadInput, match=r"index.lock: is a hard link to another file \(2 names"):
        with exclusive_lock(copy / "index.lock", "index"):
            pass
    run = mrhash("index", index.parent / "rasters", "--model", model, "--index", copy,
                 "--tile-size", "32")
    assert run.returncode == 2, run.stderr
    assert f"{copy / 'index.lock'}: is a hard link to another file" in run.stderr
    assert checksums(tmp_path) == before
    assert precious.read_text() == "years of work\n"



def test_the_index_results_folder_takes_outputs(tmp_path):
    """results/ of an index folder is where clients keep what its searches give (the plugin's
    results and maps): an output there is allowed, anywhere else in the index it is not."""
    from mrhash.outputs import INDEX_FOLDER, JSON, check_output
    from mrhash_contract.index_layout import RESULTS_DIR

    index = tmp_path / "index"
    (index / RESULTS_DIR).mkdir(parents=True)
    inside = index / RESULTS_DIR / "map.json"
    assert check_output(inside, JSON, [(index, INDEX_FOLDER)]) == inside
    with pytest.raises(BadInput, match="inside the index folder"):
        check_output(index / "map.json", JSON, [(index, INDEX_FOLDER)])
