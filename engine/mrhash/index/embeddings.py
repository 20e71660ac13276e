"""Continuous embeddings of the indexed tiles: the relaxed (pre-sign) code in (-1, 1), from
which the tile's binary code is the sign, then the multisource autoencoder's latent of the same
patch (`HashModel.embed`; none for packages older than format 2).

Hamming distances of 64-bit codes tie a lot (many tiles at the same distance); the embedding
orders the tiles inside a tie (their similarity, search.py) and scores the whole index for
relevance feedback (refine.py). The latent was trained to reconstruct every source's features
from the primary's: it carries what the auxiliary sources saw, and joined to the code it lifts
refine on the EuroSAT-MS dev set (docs/BENCHMARKS.md, *Refine*). SQLite keeps each tile's
embedding as float16 bytes (the truth, `tiles.embedding`); tiles indexed before embeddings were
kept have none and fall back to the +-1 values of their code bits (and a zero latent).
`EmbeddingTable` holds every tile's embedding in memory with ids ascending, its two parts
weighted and the row at length 1 (`unit_parts`): float16 values (what the cache file holds,
160 bytes a tile at 64 bits + 16) kept as float32 (320 bytes), because scoring the whole table
is one BLAS pass then (about 60 ms at 1M tiles on 2 busy cores) where numpy's float16
arithmetic took 0.8 s. The cache file beside codes.faiss is saved atomically with the store's
generation and uid like the codes cache and rebuilt from SQLite when missing, stale, damaged,
another index's or of another embedding length.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mrhash.errors import IndexCorrupted
from mrhash.fileio import atomic_output

MAGIC = b"MRHASHEM"
FORMAT_VERSION = 2  # 2: the latent part ("latent" in the header); 1 is read as latent 0
FLOAT16_MAX = 65504.0
# length of the latent part (the code part has length 1): 0.7 scored best for refine over 14
# models on the dev set, 1.0 and 1.4 lower (docs/BENCHMARKS.md, *Refine*)
LATENT_WEIGHT = 0.7
_HEADER_LEN = struct.Struct("<Q")
CHUNK_ROWS = 1 << 16  # rows converted at once when the table is saved or loaded


def to_blobs(relaxed: np.ndarray) -> list[bytes]:
    """Embeddings [N, bits + latent] -> one float16 byte string a tile (what SQLite
    stores)."""
    half = _half(relaxed)
    return [row.tobytes() for row in half]


def sign_values(codes: np.ndarray, bits: int) -> np.ndarray:
    """The +-1 embedding of packed codes [N, bits // 8]: what a tile without a stored
    embedding is compared with."""
    return np.unpackbits(np.asarray(codes, np.uint8), axis=1)[:, :bits].astype(np.float32) * 2 - 1


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (cosine similarity is then a dot product), float32."""
    values = np.asarray(values, dtype=np.float32)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def unit_parts(values: np.ndarray, bits: int) -> np.ndarray:
    """Embeddings [N, bits + latent] -> float32 rows of length 1 made of the code part at
    length 1 and the latent part at LATENT_WEIGHT: the dot product of two rows is then
    (code cosine + LATENT_WEIGHT² x latent cosine) / (1 + LATENT_WEIGHT²), 1 for a tile with
    itself. A zero latent (a tile stored without one) leaves the unit code, whose dot product
    with a full row is the code cosine / sqrt(1 + LATENT_WEIGHT²)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape[1] == bits:
        return unit_rows(values)
    return unit_rows(np.hstack([unit_rows(values[:, :bits]),
                                LATENT_WEIGHT * unit_rows(values[:, bits:])]))


def _half(values: np.ndarray) -> np.ndarray:
    """float16 values, clipped to its range (the latent is unbounded: never an inf)."""
    return np.ascontiguousarray(np.clip(values, -FLOAT16_MAX, FLOAT16_MAX), dtype=np.float16)


def _parts16(values: np.ndarray, bits: int) -> np.ndarray:
    """`unit_parts` of float16 values, rounded to float16 (the file keeps them losslessly), as
    float32 for arithmetic."""
    return unit_parts(_half(values), bits).astype(np.float16).astype(np.float32)


class EmbeddingTable:
    """Tile id -> embedding scaled by `unit_parts` (float16 values in float32), ids ascending.
    Changes are queued and applied in one pass (`compact`), so a build adding batch after
    batch never copies the whole table."""

    def __init__(self, bits: int, latent: int = 0):
        self.bits, self.latent = bits, latent
        self.dim = bits + latent
        self.ids = np.zeros(0, np.int64)
        self.unit = np.zeros((0, self.dim), np.float32)
        self._added: list[tuple[np.ndarray, np.ndarray]] = []
        self._removed: list[np.ndarray] = []

    def __len__(self) -> int:
        self.compact()
        return len(self.ids)

    def memory_bytes(self) -> int:
        self.compact()
        return self.ids.nbytes + self.unit.nbytes

    def add(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Tiles and their embeddings [n, bits + latent], rounded to float16 first as SQLite
        keeps them, so a table built during indexing equals one rebuilt from the store."""
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(values):
            raise ValueError("ids and embeddings differ in length")
        if np.shape(values)[1:] != (self.dim,):
            raise ValueError(f"embeddings of {np.shape(values)[1:]} values, {self.dim} expected")
        if len(ids):
            self._added.append((ids, _parts16(values, self.bits)))

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.asarray(list(ids), np.int64)
        if len(ids):
            self._removed.append(ids)

    def compact(self) -> None:
        if not self._added and not self._removed:
            return
        ids = np.concatenate([self.ids] + [a for a, _ in self._added])
        unit = np.concatenate([self.unit] + [v for _, v in self._added])
        if self._removed:
            keep = ~np.isin(ids, np.concatenate(self._removed))
            ids, unit = ids[keep], unit[keep]
        if np.any(np.diff(ids) < 0):  # kept ascending whatever order batches came in
            order = np.argsort(ids, kind="stable")
            ids, unit = ids[order], unit[order]
        self.ids, self.unit = ids, np.ascontiguousarray(unit)
        self._added, self._removed = [], []

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id; -1 where the table lacks it (a cache older than the codes)."""
        self.compact()
        ids = np.asarray(ids, np.int64)
        if not len(self.ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.searchsorted(self.ids, ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings float32 [len(ids), dim]; zero rows for ids the table lacks (they then
        score 0: after every tile that has an embedding)."""
        pos = self.positions(ids)
        out = np.zeros((len(pos), self.dim), np.float32)
        out[pos >= 0] = self.unit[pos[pos >= 0]]
        return out

    def scores(self, weights: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """unit @ weights: float32 [n], or [len(rows)] for those rows only."""
        self.compact()
        weights = np.asarray(weights, np.float32)
        return (self.unit if rows is None else self.unit[rows]) @ weights

    # -- persistence ---------------------------------------------------------------------
    # MAGIC, header length, JSON header (bits, latent, ntotal, generation, index_uid, crc32),
    # then the ids (int64) and the scaled vectors (float16), streamed both ways in chunks: a 1M-tile
    # table never has a second whole copy in memory

    def save(self, path: str | Path, generation: int, index_uid: str | None) -> None:
        self.compact()
        crc = zlib.crc32(self.ids.tobytes())
        for start in range(0, len(self.ids), CHUNK_ROWS):
            crc = zlib.crc32(self.unit[start:start + CHUNK_ROWS].astype(np.float16), crc)
        head = json.dumps({"format_version": FORMAT_VERSION, "bits": self.bits,
                           "latent": self.latent, "ntotal": len(self.ids),
                           "generation": int(generation), "index_uid": index_uid,
                           "crc32": crc}).encode()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as out:
            out.write(MAGIC + _HEADER_LEN.pack(len(head)) + head)
            out.write(self.ids.tobytes())
            for start in range(0, len(self.ids), CHUNK_ROWS):
                out.write(self.unit[start:start + CHUNK_ROWS].astype(np.float16).tobytes())

    @classmethod
    def load(cls, path: str | Path) -> tuple[EmbeddingTable, dict]:
        """-> (table, header); IndexCorrupted naming the file when anything does not add
        up (the table is then rebuilt from the store)."""
        source = str(path)
        try:
            with open(path, "rb") as handle:
                return cls._read(handle, source)
        except OSError as error:
            raise IndexCorrupted(f"cannot read the embeddings file ({error.strerror})",
                                 path=source) from None

    @classmethod
    def _read(cls, handle, source: str) -> tuple[EmbeddingTable, dict]:
        def corrupted(why: str) -> IndexCorrupted:
            return IndexCorrupted(why, path=source)

        lead = handle.read(len(MAGIC) + _HEADER_LEN.size)
        if len(lead) < len(MAGIC) + _HEADER_LEN.size or not lead.startswith(MAGIC):
            raise corrupted("not an MrHash embeddings file (bad magic or truncated)")
        (head_len,) = _HEADER_LEN.unpack_from(lead, len(MAGIC))
        try:
            header = json.loads(handle.read(min(head_len, 1 << 20)))
            version = header.get("format_version")
            if version not in (1, FORMAT_VERSION):
                raise corrupted(f"unsupported format version {version}")
            bits, n = int(header["bits"]), int(header["ntotal"])
            latent = header["latent"] = int(header["latent"]) if version >= 2 else 0
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise corrupted(f"unreadable header ({error})") from None
        if not (0 < bits <= 4096 and bits % 8 == 0 and 0 <= latent <= 4096 and n >= 0):
            raise corrupted(f"impossible sizes in the header (bits {bits}, latent {latent}, "
                            f"{n} tiles)")
        dim = bits + latent
        # the size first: a damaged count must not allocate anything
        expected = len(lead) + head_len + n * 8 + n * dim * 2
        size = os.fstat(handle.fileno()).st_size
        if size != expected:
            raise corrupted(f"truncated or padded: {size} bytes, {expected} expected")
        table = cls(bits, latent)
        table.ids = np.fromfile(handle, np.int64, count=n)
        table.unit = np.empty((n, dim), np.float32)
        crc = zlib.crc32(table.ids.tobytes())
        for start in range(0, n, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, n - start)
            block = np.fromfile(handle, np.float16, count=rows * dim)
            crc = zlib.crc32(block, crc)
            table.unit[start:start + rows] = block.reshape(rows, dim)
        if crc != header.get("crc32"):
            raise corrupted("checksum mismatch (corrupted file)")
        return table, header
