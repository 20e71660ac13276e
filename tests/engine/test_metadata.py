"""MetadataStore: per-batch transactions, ids never reused, R-tree lookups, file states and
corruption of the database."""

from __future__ import annotations

import os

import numpy as np
import pytest
from mrhash.errors import IndexCorrupted
from mrhash.index.store import FileState, MetadataStore, TileRow


def _rows(n: int, start: int = 0, lon0: float = 10.0) -> list[TileRow]:
    return [TileRow(start + i, (32 * (start + i), 0, 32, 32),
                    (100.0 * i, 0.0, 100.0 * i + 100, 100.0),
                    (lon0 + i * 0.01, 50.0, lon0 + i * 0.01 + 0.005, 50.005), 1.0)
            for i in range(n)]


def _file(tmp_path, name: str, content: bytes = b"x" * 100) -> FileState:
    path = tmp_path / name
    path.write_bytes(content)
    return FileState.of([str(path)])


@pytest.fixture
def store(tmp_path):
    store = MetadataStore(tmp_path / "index.sqlite", create=True)
    yield store
    store.close()


def _start(store, state, n_grid=4):
    return store.start_file(state, state.content_hash(), "EPSG:32632",
                            (10.0, 50.0, 10.1, 50.1), n_grid, "fp")


def test_batches_commit_and_mark_done(store, tmp_path):
    state = _file(tmp_path, "a.tif")
    file_id, removed = _start(store, state)
    assert removed == []
    codes = np.arange(32, dtype=np.uint8).reshape(4, 8)
    g0 = store.generation
    ids1 = store.add_tiles(file_id, _rows(2), codes[:2], done=False)
    assert store.files()[str(state.paths[0])].status == "partial"
    assert store.next_ordinal(file_id) == 2
    ids2 = store.add_tiles(file_id, _rows(2, start=2), codes[2:], done=True)
    record = store.files()[state.paths[0]]
    assert record.status == "done" and record.n_tiles == 4
    assert store.generation == g0 + 2
    ids, stored = store.all_codes(8)
    assert np.array_equal(ids, np.concatenate([ids1, ids2]))
    assert np.array_equal(stored, codes)
    tile = store.tiles([ids2[0]])[ids2[0]]
    assert tile.window == (64, 0, 32, 32) and tile.path == state.paths[0]
    assert tile.crs == "EPSG:32632" and tile.code == codes[2].tobytes()


def test_ids_are_never_reused(store, tmp_path):
    a, b = _file(tmp_path, "a.tif"), _file(tmp_path, "b.tif")
    fa, _ = _start(store, a)
    ids_a = store.add_tiles(fa, _rows(3), np.zeros((3, 8), np.uint8), done=True)
    assert sorted(store.remove_file(a.paths[0])) == sorted(ids_a.tolist())
    fb, _ = _start(store, b)
    ids_b = store.add_tiles(fb, _rows(3), np.ones((3, 8), np.uint8), done=True)
    assert ids_b.min() > ids_a.max()
    assert store.count() == 3


def test_restarting_a_file_replaces_its_tiles(store, tmp_path):
    state = _file(tmp_path, "a.tif")
    file_id, _ = _start(store, state)
    old = store.add_tiles(file_id, _rows(2), np.zeros((2, 8), np.uint8), done=False)
    _, removed = _start(store, state)
    assert sorted(removed) == sorted(old.tolist())
    assert store.count() == 0


def test_failed_batch_leaves_no_trace(store, tmp_path):
    state = _file(tmp_path, "a.tif")
    file_id, _ = _start(store, state)
    store.add_tiles(file_id, _rows(2), np.zeros((2, 8), np.uint8), done=False)
    generation = store.generation
    # ordinal 1 again violates UNIQUE(file_id, ordinal): the whole batch is rolled back
    with pytest.raises(Exception, match="UNIQUE"):
        store.add_tiles(file_id, _rows(2, start=1), np.zeros((2, 8), np.uint8), done=True)
    assert store.count() == 2 and store.generation == generation
    assert store.files()[state.paths[0]].status == "partial"


def test_rtree_finds_tiles_in_a_box(store, tmp_path):
    state = _file(tmp_path, "a.tif")
    file_id, _ = _start(store, state, n_grid=10)
    ids = store.add_tiles(file_id, _rows(10), np.arange(80, dtype=np.uint8).reshape(10, 8),
                          done=True)
    found, codes = store.codes_within((10.0, 50.0, 10.031, 50.01), 8)
    assert found.tolist() == ids[:4].tolist()
    assert np.array_equal(codes[1], np.arange(8, 16))
    assert len(store.codes_within((20.0, 10.0, 21.0, 11.0), 8)[0]) == 0


def test_file_state_and_hash(tmp_path):
    state = _file(tmp_path, "a.tif", b"abc")
    first_hash = state.content_hash()
    assert FileState.of(list(state.paths)) == state
    os.utime(state.paths[0], ns=(0, state.mtime_ns + 10**9))
    touched = FileState.of(list(state.paths))
    assert touched.mtime_ns != state.mtime_ns and touched.content_hash() == first_hash
    (tmp_path / "a.tif").write_bytes(b"abd")
    assert FileState.of(list(state.paths)).content_hash() != first_hash


def test_missing_and_corrupted_database(tmp_path):
    with pytest.raises(IndexCorrupted, match="no index database"):
        MetadataStore(tmp_path / "nothing.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(IndexCorrupted, match="unreadable index database.*--rebuild"):
        MetadataStore(bad)


def test_schema_version_is_checked(tmp_path):
    store = MetadataStore(tmp_path / "index.sqlite", create=True)
    store.set_meta({"schema_version": 99})
    store.close()
    with pytest.raises(IndexCorrupted, match="schema version 99"):
        MetadataStore(tmp_path / "index.sqlite")
