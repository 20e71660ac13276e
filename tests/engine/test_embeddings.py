"""Continuous embeddings: the table (code and latent parts) and its cache file, the indexer
storing them from the one encode it already runs, old indexes without them (migrated in place,
+-1 fallback), and models of format 1, without a latent."""

from __future__ import annotations

import json
import sqlite3
import struct

import numpy as np
import pytest
from mrhash.errors import IndexCorrupted
from mrhash.index.build import build_index
from mrhash.index.embeddings import LATENT_WEIGHT, EmbeddingTable, sign_values
from mrhash.index.folder import IndexFolder
from mrhash.model.package import pack_codes
from mrhash.search.searcher import Searcher, run_query
from mrhash_contract.index_layout import DB_FILE, EMBEDDINGS_FILE
from mrhash_contract.protocol import QueryRequest
from test_index_support import TILE


def _unit(values):
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def test_table_add_remove_lookup_and_score():
    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, (50, 64))
    table = EmbeddingTable(64)
    table.add(np.arange(10, 35), values[:25])
    table.add(np.arange(1, 10), values[25:34])  # a resumed file: lower ids arrive later
    table.remove([3, 12])
    assert len(table) == 32 and np.all(np.diff(table.ids) > 0)
    rows = table.rows(np.array([13, 3, 99, 1]))
    assert np.allclose(rows[0], _unit(values[3:4])[0], atol=2e-3)
    assert np.allclose(rows[3], _unit(values[25:26])[0], atol=2e-3)
    assert not rows[1].any() and not rows[2].any()  # not held: zero rows
    assert table.positions(np.array([13, 3])).tolist() == [10, -1]  # 1,2,4..9,10,11,13
    weights = rng.normal(size=64).astype(np.float32)
    expected = np.array([_unit(values[i:i + 1])[0] for i in range(25, 34) if i != 27]
                        + [_unit(values[i:i + 1])[0] for i in range(25) if i != 2]) @ weights
    assert np.allclose(table.scores(weights), expected, atol=1e-2)
    assert np.allclose(table.scores(weights, np.array([4, 0])), expected[[4, 0]], atol=1e-2)
    # float16 values (what the cache file keeps) in float32 (one BLAS pass to score)
    assert table.unit.dtype == np.float32
    assert np.array_equal(table.unit.astype(np.float16).astype(np.float32), table.unit)
    assert table.memory_bytes() == 32 * 8 + 32 * 64 * 4


def test_the_code_and_the_latent_are_scaled_apart():
    values = np.random.default_rng(3).normal(size=(4, 64 + 16)) * 5
    table = EmbeddingTable(64, 16)
    table.add(np.arange(4), values)
    rows = table.rows(np.arange(4))
    assert rows.shape == (4, 80) and table.dim == 80
    norm = (1 + LATENT_WEIGHT ** 2) ** 0.5
    assert np.allclose(rows[:, :64], _unit(values[:, :64]) / norm, atol=2e-3)
    assert np.allclose(rows[:, 64:], LATENT_WEIGHT * _unit(values[:, 64:]) / norm, atol=2e-3)
    # a tile's score against another's row: the two cosines, weighted; 1 with itself
    cosines = [(_unit(values[:, part]) @ _unit(values[:, part])[0]) for part in
               (slice(0, 64), slice(64, 80))]
    assert np.allclose(table.scores(rows[0]), (cosines[0] + LATENT_WEIGHT ** 2 * cosines[1])
                       / norm ** 2, atol=5e-3)
    assert table.scores(rows[0])[0] == pytest.approx(1, abs=2e-3)
    with pytest.raises(ValueError, match="80 expected"):
        table.add(np.arange(4, 6), values[:2, :64])


def test_table_file_roundtrip_and_damage(tmp_path):
    table = EmbeddingTable(64, 16)
    table.add(np.arange(1, 6), np.random.default_rng(2).uniform(-1, 1, (5, 80)))
    path = tmp_path / EMBEDDINGS_FILE
    table.save(path, generation=7, index_uid="abc")
    loaded, header = EmbeddingTable.load(path)
    assert header["generation"] == 7 and header["index_uid"] == "abc" and header["ntotal"] == 5
    assert header["bits"] == 64 and header["latent"] == 16 and loaded.dim == 80
    assert np.array_equal(loaded.ids, table.ids) and np.array_equal(loaded.unit, table.unit)
    data = path.read_bytes()
    newer = data.replace(b'"format_version": 2', b'"format_version": 3')
    for damaged, why in ((data[:-3], "truncated"), (b"garbage!" + data[8:], "bad magic"),
                         (data + b"\0\0", "padded"), (b"", "bad magic"),
                         (data[:-1] + bytes([data[-1] ^ 1]), "checksum"),
                         (newer, "unsupported format version 3")):
        path.write_bytes(damaged)
        with pytest.raises(IndexCorrupted, match=why):
            EmbeddingTable.load(path)


def test_a_cache_file_of_format_1_reads_as_codes_only(tmp_path):
    """Written before the latent (no "latent" in its header): read as latent 0, not rebuilt."""
    table = EmbeddingTable(64)
    table.add(np.arange(1, 6), np.random.default_rng(4).uniform(-1, 1, (5, 64)))
    path = tmp_path / EMBEDDINGS_FILE
    table.save(path, generation=3, index_uid="abc")
    data = path.read_bytes()
    (head_len,) = struct.unpack_from("<Q", data, 8)
    header = json.loads(data[16:16 + head_len])
    del header["latent"]
    head = json.dumps({**header, "format_version": 1}).encode()
    path.write_bytes(data[:8] + struct.pack("<Q", len(head)) + head + data[16 + head_len:])
    loaded, header = EmbeddingTable.load(path)
    assert loaded.latent == 0 and header["latent"] == 0 and loaded.dim == 64
    assert np.array_equal(loaded.unit, table.unit)


def test_codes_are_the_sign_of_the_embeddings():
    relaxed = np.array([[0.5, -0.1, 0.0, 1e-9, -0.7, 0.2, 0.3, -0.9]])
    assert pack_codes(relaxed).tolist() == [[0b10010110]]
    assert sign_values(pack_codes(relaxed), 8).tolist() == [[1, -1, -1, 1, -1, 1, 1, -1]]


def test_the_indexer_stores_each_tiles_embedding_from_one_encode(tiny_model, rasters,
                                                                 tmp_path, monkeypatch):
    from mrhash.index.encode import open_for_model
    from mrhash.model.package import HashModel, load_model
    from mrhash.raster.sources import SourceSpec

    calls = []
    real = HashModel.embed

    def counted(self, patches, valid=None):
        calls.append(len(patches))
        return real(self, patches, valid)

    def forbidden(self, *args):
        raise AssertionError("indexing must not encode a second time")

    monkeypatch.setattr(HashModel, "embed", counted)
    monkeypatch.setattr(HashModel, "encode", forbidden)
    monkeypatch.setattr(HashModel, "encode_float", forbidden)
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    assert sum(calls) == 36 and len(calls) == 9  # one forward pass per batch (a raster)
    monkeypatch.undo()
    db = sqlite3.connect(index_dir / DB_FILE)
    rows = db.execute("SELECT t.code, t.embedding, f.path FROM tiles t JOIN files f "
                      "ON f.id = t.file_id ORDER BY t.id").fetchall()
    db.close()
    stored = np.stack([np.frombuffer(r[1], np.float16) for r in rows]).astype(np.float32)
    model = load_model(tiny_model)
    assert model.latent_dim > 0 and stored.shape == (36, 64 + model.latent_dim)
    codes = np.stack([np.frombuffer(r[0], np.uint8) for r in rows])
    assert np.array_equal(pack_codes(stored[:, :64]), codes)
    # the first tile's embedding is the model's relaxed code and latent of its patch
    with open_for_model(SourceSpec("primary", (rows[0][2],), model.primary.bands),
                        model) as source:
        from mrhash.raster.tiling import tile_grid

        tile = tile_grid(source, TILE)[0]
        patch, valid = source.read(tile.footprint, (TILE, TILE))
    embedding = model.embed(patch[None], valid[None])[0]
    assert np.allclose(embedding, stored[0], atol=2e-3 * max(1, np.abs(embedding).max()))
    assert np.array_equal(model.encode_float(patch[None], valid[None])[0], embedding[:64])
    # the cache file was saved with the build and matches the store
    folder = IndexFolder(index_dir)
    cached, header = EmbeddingTable.load(folder.embeddings_path)
    assert header["generation"] == folder.store.generation
    assert header["index_uid"] == folder.store.get("uid")
    assert folder.latent == model.latent_dim
    rebuilt = folder.store.all_embeddings(64, folder.latent)
    assert np.array_equal(cached.ids, rebuilt.ids) and np.array_equal(cached.unit, rebuilt.unit)
    folder.close()


def test_an_old_index_without_embeddings_falls_back_to_its_bits_and_is_migrated(
        tiny_model, rasters, tmp_path):
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    db = sqlite3.connect(index_dir / DB_FILE)
    db.execute("ALTER TABLE tiles DROP COLUMN embedding")  # as an index made before them
    db.commit()
    db.close()
    (index_dir / EMBEDDINGS_FILE).unlink()
    # queries read it as it is (read-only): cosine of +-1 vectors = 1 - 2 d / bits
    hits = run_query(index_dir, QueryRequest(tile=5, k=36))["hits"]
    assert all(h["score"] == pytest.approx(1 - 2 * h["distance"] / 64, abs=2e-3) for h in hits)
    # the next build adds the column in place; new tiles get embeddings, old ones keep none
    new = sorted(rasters.glob("*.tif"))[0]
    new.rename(rasters / "renamed.tif")
    result = build_index(rasters, tiny_model, index_dir, TILE)
    assert result.added == 4 and result.n_tiles == 36
    db = sqlite3.connect(index_dir / DB_FILE)
    kept = db.execute("SELECT count(*) FROM tiles WHERE embedding IS NOT NULL").fetchone()[0]
    db.close()
    assert kept == 4
    searcher = Searcher(index_dir)
    try:
        assert len(searcher.embeddings) == 36
        hit = searcher.search(QueryRequest(tile=37, k=1))["hits"][0]
        assert hit["id"] == 37 and hit["score"] == pytest.approx(1, abs=2e-3)
    finally:
        searcher.close()


def test_a_stale_or_foreign_embeddings_cache_is_rebuilt(tiny_model, rasters, tmp_path,
                                                        capsys):
    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    good = (index_dir / EMBEDDINGS_FILE).read_bytes()
    expected = run_query(index_dir, QueryRequest(tile=4, k=10))["hits"]
    folder = IndexFolder(index_dir)
    table = folder.store.all_embeddings(64, folder.latent)
    table.unit = np.ascontiguousarray(table.unit[:, ::-1])  # wrong values...
    table.save(folder.embeddings_path, folder.store.generation, "another-index")  # ...foreign
    folder.close()
    assert run_query(index_dir, QueryRequest(tile=4, k=10))["hits"] == expected
    assert "another index's file" in capsys.readouterr().err
    (index_dir / EMBEDDINGS_FILE).write_bytes(good[:-100])
    assert run_query(index_dir, QueryRequest(tile=4, k=10))["hits"] == expected
    assert "truncated" in capsys.readouterr().err
    folder = IndexFolder(index_dir)  # a cache without the latent (as of another model)
    table = EmbeddingTable(64)
    table.add(*folder.store.all_codes(8)[:1], sign_values(folder.store.all_codes(8)[1], 64))
    table.save(folder.embeddings_path, folder.store.generation, folder.store.get("uid"))
    folder.close()
    assert run_query(index_dir, QueryRequest(tile=4, k=10))["hits"] == expected
    assert "or model" in capsys.readouterr().err


def test_the_benchmarks_grown_index_keeps_codes_and_embeddings_together(tiny_model, rasters,
                                                                        tmp_path, capsys):
    from mrhash_research.benchmarks.indexing import grow_index

    index_dir = tmp_path / "index"
    build_index(rasters, tiny_model, index_dir, TILE)
    assert grow_index(index_dir, 100) == 100
    db = sqlite3.connect(index_dir / DB_FILE)
    rows = db.execute("SELECT code, embedding FROM tiles ORDER BY id").fetchall()
    db.close()
    codes = np.stack([np.frombuffer(r[0], np.uint8) for r in rows])
    values = np.stack([np.frombuffer(r[1], np.float16) for r in rows]).astype(np.float32)
    assert np.array_equal(pack_codes(values[:, :64]), codes)  # signs flipped with the bits
    latent = _unit(values[:, 64:])  # real tiles store raw values, the copies scaled ones
    gaps = np.abs(latent[36:, None] - latent[None, :36]).max(axis=2).min(axis=1)
    assert gaps.max() < 1e-2  # each copy keeps the latent of the tile it copies
    assert len({r[0] for r in rows[36:]} - {r[0] for r in rows[:36]}) > 0  # noisy copies
    capsys.readouterr()
    searcher = Searcher(index_dir)
    try:
        assert len(searcher.embeddings) == 100 and searcher.index.ntotal == 100
    finally:
        searcher.close()
    assert "rebuilding" not in capsys.readouterr().err  # both caches saved with the growth


def test_a_model_of_format_1_without_a_latent_still_indexes_queries_and_refines(
        tiny_model, rasters, tmp_path):
    """A package written before the latent was kept: codes-only embeddings, same codes."""
    import json

    from mrhash.model.package import METADATA_KEY, load_model, read_package
    from mrhash.search.refine import refine
    from mrhash_contract.protocol import Example, RefineRequest
    from safetensors.torch import save_file

    config, tensors, _ = read_package(tiny_model)
    config = {k: v for k, v in config.items() if k != "latent"} | {"format_version": 1}
    old = tmp_path / "old.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("latent.")}, str(old),
              metadata={METADATA_KEY: json.dumps(config)})
    model = load_model(old)
    assert model.latent_dim == 0 and model._net.latent is None
    index_dir = tmp_path / "index"
    build_index(rasters, old, index_dir, TILE)
    folder = IndexFolder(index_dir)
    assert folder.latent == 0
    current = tmp_path / "current"
    build_index(rasters, tiny_model, current, TILE)
    same = IndexFolder(current)
    assert np.array_equal(folder.store.all_codes(8)[1], same.store.all_codes(8)[1])
    folder.close()
    same.close()
    searcher = Searcher(index_dir)
    try:
        assert searcher.embeddings.dim == 64
        assert searcher.search(QueryRequest(tile=3, k=1))["hits"][0]["id"] == 3
        refined = refine(searcher, RefineRequest([Example(relevant=True, tile=3),
                                                 Example(relevant=False, tile=9)], k=5))
        assert len(refined["hits"]) == 5
    finally:
        searcher.close()
