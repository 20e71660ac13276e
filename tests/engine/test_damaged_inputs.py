"""Damaged and absurd inputs on real files (docs/RELIABILITY.md): request lines the worker
must bound (length, nesting, encoding), model packages and index metadata damaged on disk,
and CLI numbers out of range. Each case asserts the error code, a message naming the field or
the file, no traceback, and a bounded time."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import test_index_support as support
from mrhash.app.cli import main
from mrhash.app.worker import Worker
from mrhash.errors import user_error
from test_worker import Engine

TRAIN = ("train", "--epochs", "1", "--ae-epochs", "1", "--clusters", "2")


# -- 2. request lines: bounded before they are parsed ---------------------------------------
def test_long_deep_and_non_utf8_lines_get_bad_request_and_the_worker_goes_on():
    engine = Engine()
    try:
        assert engine.read()["event"] == "ready"
        raw = engine.process.stdin.buffer
        lines = [
            (b'{"id": "x", "method": "status", "params": {"p": "' + b"a" * (2 << 20) + b'"}}',
             "longer than"),
            (b"[" * 200_000 + b"]" * 200_000, "nests deeper than 64"),
            (b'{"id": 1, "params": ' + b'{"a": ' * 100 + b"1" + b"}" * 101, "nests deeper"),
            ('{"id": "u", "method": "status"}'.encode("utf-16"), "UTF-16"),
            ('{"id": "l", "method": "status", "params": {"p": "café"}}'.encode("latin-1"),
             "not UTF-8"),
        ]
        for line, fragment in lines:
            started = time.monotonic()
            engine.process.stdin.flush()
            raw.write(line + b"\n")
            raw.flush()
            reply = engine.read(timeout=30)
            assert reply["error"]["code"] == "bad_request", reply
            if line.startswith(b'{"id": "'):  # named by its id, though never parsed
                assert reply["id"] == line[8:9].decode(), reply
            assert fragment in reply["error"]["message"], reply
            assert time.monotonic() - started < 20
            status = engine.request(f"s{len(line)}", "status")  # still serving
            assert status["result"]["jobs"] == []
        assert "Traceback" not in "".join(engine.stderr)
    finally:
        engine.close()


def _answer(method: str, params: dict, timeout: float = 60) -> dict:
    """The final reply of an in-process worker to one request (a job's too), within
    `timeout` seconds."""
    out = io.StringIO()
    worker = Worker(out, "cpu")
    worker.handle(json.dumps({"id": "r", "method": method, "params": params}))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for line in out.getvalue().splitlines():
                reply = json.loads(line)
                if reply.get("id") == "r" and "progress" not in reply:
                    return reply
            time.sleep(0.05)
    finally:
        worker.shutdown()
    raise AssertionError(f"no reply to {method} in {timeout} s")


# -- 3. model packages: bounded before anything is allocated -------------------------------
def _package(tiny_model: Path, path: Path, change) -> Path:
    """A copy of the tiny model whose config (or raw metadata) `change` rewrote."""
    from mrhash.model.package import METADATA_KEY, _metadata
    from safetensors.torch import load_file, save_file

    config = json.loads(_metadata(tiny_model.read_bytes())[METADATA_KEY])
    text = change(config)
    save_file(load_file(tiny_model), path,
              metadata={METADATA_KEY: text if isinstance(text, str) else json.dumps(config)})
    return path


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda c: c.update(latent={"dim": 65536, "hidden": 24}), "latent.dim=65536 is out of range"),
    (lambda c: c.update(bits=48), "bits=48 is not one of"),
    (lambda c: c.update(bits=64.0), "bits=64.0 is not one of"),
    (lambda c: c.update(patch_size=100_000), "patch_size=100000 is out of range"),
    (lambda c: c.update(bands=5000), "bands=5000 is out of range"),
    (lambda c: '{"bits": 64, "patch_size": ', "header is not JSON"),
])
def test_damaged_model_headers_are_bad_model(tiny_model, tmp_path, change, fragment):
    from mrhash.model.package import load_model

    broken = _package(tiny_model, tmp_path / "broken.safetensors", change)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        load_model(broken)
    known = user_error(raised.value)
    assert known is not None and known.code == "bad_model"
    assert fragment in known.message and str(broken) in known.message
    assert time.monotonic() - started < 10


def test_a_damaged_model_through_the_worker(tiny_model, tmp_path):
    broken = _package(tiny_model, tmp_path / "huge.safetensors",
                      lambda c: c.update(latent={"dim": 65536, "hidden": 65536}))
    reply = _answer("index", {"folder": str(tmp_path), "model": str(broken),
                              "index": str(tmp_path / "idx")})
    assert reply["error"]["code"] == "bad_model" and "huge.safetensors" in \
        reply["error"]["message"]


# -- 3. index metadata damaged on disk ------------------------------------------------------
@pytest.fixture(scope="module")
def built_index(tmp_path_factory, eurosat_dir) -> Path:
    return support.indexed_folder(tmp_path_factory, eurosat_dir, "damaged")


def _damaged(built_index: Path, tmp_path: Path, sql: str) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built_index, copy)
    with closing(sqlite3.connect(copy / "index.sqlite")) as db, db:
        db.execute(sql)
    (copy / "codes.faiss").unlink(missing_ok=True)
    (copy / "embeddings.bin").unlink(missing_ok=True)
    return copy


def _query(index: Path, **params) -> dict:
    return _answer("query", {"index": str(index), "tile": 1, **params})


@pytest.mark.parametrize(("sql", "fragment"), [
    ("UPDATE meta SET value = 'abc' WHERE key = 'bits'", "bits is 'abc', not a number"),
    ("UPDATE meta SET value = '7' WHERE key = 'bits'", "bits must be between 8"),
    ("UPDATE meta SET value = '48' WHERE key = 'bits'", "bits is 48, not one of"),
    ("UPDATE meta SET value = '1e999' WHERE key = 'tile_size'", "tile_size is '1e999'"),
    ("UPDATE meta SET value = 'x' WHERE key = 'generation'", "generation is 'x'"),
    ("UPDATE meta SET value = '{oops' WHERE key = 'bands'", "bands is '{oops', not JSON"),
    ("DELETE FROM meta WHERE key = 'fingerprint'", "without its fingerprint"),
    ("UPDATE tiles SET code = x'00' WHERE id = 2", "is not 8 bytes"),
    ("UPDATE tiles SET width = 1000000000 WHERE id = 3", "which no tile grid makes"),
])
def test_damaged_index_metadata_is_bad_index(built_index, tmp_path, sql, fragment):
    index = _damaged(built_index, tmp_path, sql)
    reply = _query(index, k=36)
    assert reply["error"]["code"] == "bad_index", reply
    assert fragment in reply["error"]["message"], reply
    assert "index.sqlite" in reply["error"]["message"]


def test_a_codes_cache_with_bits_7_is_named_and_rebuilt(built_index, tmp_path):
    from mrhash.index.hamming import _HEADER_LEN, MAGIC, BinaryIndex

    index = tmp_path / "index"
    shutil.copytree(built_index, index)
    cache = index / "codes.faiss"
    data = cache.read_bytes()
    start = len(MAGIC) + _HEADER_LEN.size
    (head_len,) = struct.unpack_from("<Q", data, len(MAGIC))
    header = json.loads(data[start:start + head_len])
    head = json.dumps({**header, "bits": 7}).encode()
    cache.write_bytes(MAGIC + _HEADER_LEN.pack(len(head)) + head + data[start + head_len:])
    with pytest.raises(Exception) as raised:
        BinaryIndex.load(cache)
    known = user_error(raised.value)
    assert known.code == "bad_index" and "bits 7" in known.message
    assert str(cache) in known.message
    reply = _query(index, k=2)  # a cache: rebuilt from the database, the query answered
    assert reply["result"]["hits"][0]["id"] == 1


# -- 4. CLI numbers out of range: exit 2, the option named, no traceback --------------------
def _cli(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's refusal
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(("args", "fragment"), [
    (("--tile-size", "0"), "tile size must be between 4 and 8192, got 0"),
    (("--stride", "0"), "stride must be between 1 and 8192, got 0"),
    (("--batch-size", "0"), "batch size must be between 1 and 4096, got 0"),
    (("--tile-size", "1.5"), "tile size must be a whole number"),
])
def test_index_numbers_out_of_range(capsys, tmp_path, args, fragment):
    code, err = _cli(capsys, "index", tmp_path, "--model", tmp_path / "m.safetensors",
                     "--index", tmp_path / "index", *args)
    assert code == 2 and fragment in err, err
    assert not (tmp_path / "index").exists()


def test_bands_no_raster_has_are_an_error(tiny_model, rasters, tmp_path):
    index = tmp_path / "index"
    run = subprocess.run([sys.executable, "-m", "mrhash", "index", str(rasters), "--model",
                          str(tiny_model), "--index", str(index), "--tile-size",
                          str(support.TILE), "--bands", "99,98,97"], capture_output=True,
                         text=True, timeout=120, env=support.THREADS_ENV)
    code, err = run.returncode, run.stderr
    assert code == 2 and "a band does not exist in any raster" in err, err
    assert "Traceback" not in err
    assert "band 99 does not exist" in err and not (index / "index.sqlite").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (("--trainable-blocks", "-1"), "trainable_blocks must be between 0 and 64, got -1"),
    (("--trainable-blocks", "1000"), "trainable_blocks must be between 0 and 64, got 1000"),
    (("--stride", "-5"), "stride must be between 1 and 8192, got -5"),
    (("--stride", "0"), "stride must be between 1 and 8192, got 0"),
    (("--seed", "-1"), "seed must be between 0"),
    (("--patch-size", "100000"), "patch_size must be between 4 and 4096, got 100000"),
    (("--latent-dim", "1000000000"), "latent_dim must be between 1 and 4096"),
    (("--aux-date", "2020-01-01/2020-12-31"), "none is given"),
    (("--aux-max-cloud", "101"), "aux max cloud must be between"),
])
def test_training_numbers_out_of_range(capsys, eurosat_dir, tmp_path, args, fragment):
    model = tmp_path / "m.safetensors"
    started = time.monotonic()
    code, err = _cli(capsys, *TRAIN, "--primary", eurosat_dir / "Forest", "--primary-bands",
                     "4,3,2", *args, "-o", model)
    assert code == 2 and fragment in err, err
    assert not model.exists() and time.monotonic() - started < 30


def test_the_worker_refuses_the_same_training_numbers(eurosat_dir, tmp_path):
    files = [str(p) for p in sorted((eurosat_dir / "Forest").glob("*.tif"))[:2]]
    reply = _answer("train", {"primary": {"paths": files}, "clusters": 2,
                              "output": str(tmp_path / "m.safetensors"),
                              "trainable_blocks": 1000})
    assert reply["error"]["code"] == "bad_input"
    assert "trainable_blocks must be between 0 and 64, got 1000" in reply["error"]["message"]
