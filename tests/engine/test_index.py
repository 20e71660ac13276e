"""BinaryIndex: exact search against a brute-force Hamming scan, id runs, removal, the IVF
layout's calibrated recall, and the file format's corruption checks."""

from __future__ import annotations

import numpy as np
import pytest
from mrhash.errors import IndexCorrupted
from mrhash.index.hamming import BinaryIndex, IndexPolicy, recall_lower_bound, tie_aware_recall
from mrhash_research.benchmarks.search import numpy_scan


def _brute(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes ^ query, axis=1).sum(1)


def _codes(n: int, rng, nbytes: int = 8) -> np.ndarray:
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)


def test_flat_search_is_exact_and_maps_ids_across_gaps():
    rng = np.random.default_rng(1)
    codes = _codes(3000, rng)
    ids = np.concatenate([np.arange(10, 1010), np.arange(5000, 6500), np.arange(9000, 9500)])
    index = BinaryIndex(64)
    index.add(ids[:700], codes[:700])       # batches cut inside runs and across gaps
    index.add(ids[700:1600], codes[700:1600])
    index.add(ids[1600:], codes[1600:])
    assert index.ntotal == 3000 and index.kind == "flat"
    assert np.array_equal(index.all_ids(), ids)
    queries = _codes(5, rng)
    dist, found = index.search(queries, 20)
    for q, d_row, id_row in zip(queries, dist, found, strict=True):
        brute = _brute(codes, q)
        assert np.array_equal(d_row, np.sort(brute)[:20])
        # each returned id carries the distance of its own code
        positions = np.searchsorted(ids, id_row)
        assert np.array_equal(brute[positions], d_row)


def test_ids_must_grow():
    index = BinaryIndex(64)
    codes = _codes(4, np.random.default_rng(0))
    index.add(np.array([5, 6]), codes[:2])
    with pytest.raises(ValueError):
        index.add(np.array([6, 7]), codes[2:])


def test_remove_keeps_the_rest_searchable():
    rng = np.random.default_rng(2)
    codes = _codes(500, rng)
    ids = np.arange(1, 501)
    index = BinaryIndex(64)
    index.add(ids, codes)
    gone = np.arange(100, 200)
    assert index.remove(gone) == 100
    assert index.remove(gone) == 0
    kept = ~np.isin(ids, gone)
    assert np.array_equal(index.all_ids(), ids[kept])
    dist, found = index.search(codes[150:151], 1)
    assert found[0, 0] not in gone
    assert dist[0, 0] == np.sort(_brute(codes[kept], codes[150]))[0]
    # a removed tile's own code is found again once re-added under a new id
    index.add(np.array([600]), codes[150:151])
    assert index.search(codes[150:151], 1)[1][0, 0] == 600


def test_empty_index_and_k_beyond_size():
    index = BinaryIndex(64)
    dist, found = index.search(np.zeros((1, 8), np.uint8), 5)
    assert (found == -1).all()
    index.add(np.array([1, 2]), _codes(2, np.random.default_rng(3)))
    dist, found = index.search(np.zeros((1, 8), np.uint8), 5)
    assert sorted(found[0, :2]) == [1, 2] and (found[0, 2:] == -1).all()


def test_file_roundtrip_and_corruption(tmp_path):
    rng = np.random.default_rng(4)
    codes = _codes(1000, rng)
    index = BinaryIndex(64)
    index.add(np.arange(1, 1001), codes)
    path = tmp_path / "codes.faiss"
    index.save(path, generation=7)
    loaded, header = BinaryIndex.load(path)
    assert header["generation"] == 7
    assert np.array_equal(loaded.search(codes[:3], 10)[1], index.search(codes[:3], 10)[1])

    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(IndexCorrupted, match="truncated"):
        BinaryIndex.load(path)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexCorrupted, match="checksum"):
        BinaryIndex.load(path)
    path.write_bytes(b"not an index at all")
    with pytest.raises(IndexCorrupted, match="magic"):
        BinaryIndex.load(path)


def _clustered(n: int, rng, centres: int = 64, noise: float = 0.04) -> np.ndarray:
    """Codes around a few centres, like a trained model's (similar scenes share bits)."""
    base = _codes(centres, rng)
    bits = np.unpackbits(base[rng.integers(0, centres, n)], axis=1)
    bits ^= (rng.random(bits.shape) < noise).astype(np.uint8)
    return np.packbits(bits, axis=1)


def test_ivf_layout_above_exact_max_reaches_target_recall():
    rng = np.random.default_rng(5)
    codes = _clustered(20000, rng)
    policy = IndexPolicy(exact_max_bytes=5000 * 8, target_recall=0.95, recall_k=20)
    index = BinaryIndex(64, policy)
    index.add(np.arange(1, 20001), codes)
    index.optimize()
    assert index.kind == "ivf" and index.nprobe >= 1
    assert index.calibrated_recall >= 0.95
    # new codes near the indexed ones (what a query patch of a similar scene gives): the
    # calibration covered codes it had not seen, up to 1/8 of the bits away
    for noise in (0.04, 0.125):
        bits = np.unpackbits(codes[rng.integers(0, len(codes), 50)], axis=1)
        bits ^= (rng.random(bits.shape) < noise).astype(np.uint8)
        queries = np.packbits(bits, axis=1)
        dist, found = index.search(queries, 20)
        exact = np.stack([numpy_scan(codes, q, 20)[0] for q in queries])
        assert tie_aware_recall(dist, exact) >= 0.95, noise
    assert index.memory_bytes() <= 1.5 * codes.nbytes + 2 * 2**16  # uint32 ids, centroids
    # every hit's id is the id its code was added with (ids mapped from the probed cells)
    dist, found = index.search(codes[:40], 20)
    hits = found >= 0
    assert (dist[:, 0] == 0).all()
    from_ids = codes[found[hits] - 1]  # ids are 1..20000 in code order
    recomputed = np.unpackbits(from_ids ^ np.repeat(codes[:40], hits.sum(axis=1), axis=0),
                               axis=1).sum(axis=1)
    assert np.array_equal(recomputed, dist[hits])
    # new codes wait in a tail that searches cover, then join their cells
    extra = _clustered(300, np.random.default_rng(7))
    index.add(np.arange(30001, 30301), extra)
    dist, found = index.search(extra[:3], 1)
    assert (dist[:, 0] == 0).all() and (found[:, 0] == [30001, 30002, 30003]).all()
    index.optimize()
    dist, found = index.search(extra[:3], 1)
    assert (dist[:, 0] == 0).all() and (found[:, 0] == [30001, 30002, 30003]).all()
    assert index.ntotal == 20300
    index.remove(np.arange(30001, 30301))
    # the layout survives a save/load with its calibrated nprobe
    loaded, header = BinaryIndex.from_bytes(index.to_bytes(3))
    assert loaded.kind == "ivf" and loaded.nprobe == index.nprobe
    assert np.array_equal(loaded.search(queries, 20)[1], index.search(queries, 20)[1])
    # ids are the tile ids, and removal works on this layout too
    assert index.remove(np.arange(1, 101)) == 100
    assert not np.isin(index.search(codes[:5], 20)[1], np.arange(1, 101)).any()
    # shrinking far below the threshold goes back to the exact layout
    index.remove(np.arange(101, 18001))
    index.optimize()
    assert index.kind == "flat" and index.ntotal == 2000
    assert np.array_equal(index.all_ids(), np.arange(18001, 20001))


def test_tie_aware_recall():
    exact = np.array([[0, 1, 2, 2]])
    assert tie_aware_recall(np.array([[0, 1, 2, 2]]), exact) == 1.0
    assert tie_aware_recall(np.array([[0, 2, 2, 3]]), exact) == 0.75


def test_recall_lower_bound_is_cautious_about_uneven_queries():
    exact = np.array([[0, 1, 2, 2]] * 4)
    even = np.array([[0, 2, 2, 3]] * 4)  # every query 0.75: no spread, no margin
    assert recall_lower_bound(even, exact) == pytest.approx(0.75)
    uneven = np.array([[0, 1, 2, 2], [0, 1, 2, 2], [0, 1, 2, 2], [3, 3, 3, 3]])  # 1, 1, 1, 0
    assert tie_aware_recall(uneven, exact) == 0.75
    assert recall_lower_bound(uneven, exact) == pytest.approx(0.75 - 2 * np.sqrt(3) / 4 / 2)
