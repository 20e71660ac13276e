"""Binary (Hamming) index of tile codes, on FAISS.

Two layouts, chosen by size (`IndexPolicy.exact_max_bytes`, 32 MiB of codes by default):
- "flat" (exact): `faiss.IndexBinaryFlat`; tile ids are kept as runs of consecutive ids (ids
  are added in increasing order), so memory is the raw code bytes plus a few runs.
- "ivf" (approximate, above that size): codes grouped by coarse cell (centroids trained by
  FAISS's binary IVF k-means), each query scans the `nprobe` nearest cells with FAISS's
  Hamming kernel. Unlike `faiss.IndexBinaryIVF` (an int64 id per code: 2x the raw bytes of
  64-bit codes) ids are stored as uint32, so memory is 1.5x the raw bytes of 64-bit codes.
  `nprobe` is calibrated when the layout is built: the smallest (powers of two, then bisection
  to within 1/8) whose tie-aware recall@k versus the exact scan reaches `target_recall`, less
  two standard errors, on each of
  three query samples: indexed codes (queries by tile id), those codes with 1/8 of their bits
  flipped (a new patch of a place like an indexed one) and uniform random codes (a query like
  nothing indexed, the worst case).

The SQLite store (metadata.py) holds every code and is the truth; this index is a fast-loading
cache of it. The file carries the store's `generation`, a CRC of the payload and its length,
so a stale cache (a build killed between a commit and the save) is told apart from a
truncated or corrupted file (`IndexCorrupted`).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from mrhash.errors import IndexCorrupted
from mrhash.fileio import atomic_write_bytes, read_cache

MAGIC = b"MRHASHIX"
FORMAT_VERSION = 1
_HEADER_LEN = struct.Struct("<Q")


def query_threads() -> None:
    """One OpenMP thread for FAISS in query processes: a single query's scan does not split
    across threads anyway, and on a busy CPU OpenMP workers waiting at barriers multiply tail
    latency (p95 of a 1M-code scan: 17 ms with 1 thread, 170-430 ms with 2, same p50)."""
    faiss.omp_set_num_threads(1)


@dataclass(frozen=True)
class IndexPolicy:
    # exact scan while the codes fit in 32 MiB (4.2M 64-bit codes, ~2 ms on 2 cores, see
    # docs/benchmarks/index.md); above, the cell layout keeps a query under a millisecond
    exact_max_bytes: int = 32 * 2**20
    target_recall: float = 0.95
    recall_k: int = 50
    calibration_queries: int = 500
    calibration_bit_noise: float = 0.125  # share of bits flipped in the unseen-code queries
    seed: int = 0


def _nlist(n: int) -> int:
    # ~sqrt(N) cells keeps both the centroid scan and the cell scans short
    return int(min(max(int(np.sqrt(n)), 64), 16384))


def tie_aware_recall(dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Share of returned hits no farther than the exact k-th distance. Hamming distances tie
    a lot, so any of the tied codes is as right an answer as the one an exact scan returned."""
    kth = exact_dist[:, -1:]
    return float(((dist <= kth) & (dist >= 0)).sum() / dist.size)


def recall_lower_bound(dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Tie-aware recall less two standard errors of its mean over the queries: what
    calibration must reach so the target holds for queries it did not sample."""
    per_query = ((dist <= exact_dist[:, -1:]) & (dist >= 0)).mean(axis=1)
    return float(per_query.mean() - 2 * per_query.std() / np.sqrt(len(per_query)))


def _id_dtype(ids: np.ndarray) -> np.dtype:
    return np.dtype(np.uint32) if not len(ids) or int(ids.max()) < 2**32 else np.dtype(np.int64)


class _Flat:
    """Exact: IndexBinaryFlat; position p of run r holds id run_id[r] + p - run_pos[r]."""

    kind = "flat"

    def __init__(self, bits: int):
        self.bits, self.code_bytes = bits, bits // 8
        self.faiss = faiss.IndexBinaryFlat(bits)
        self.run_pos = np.zeros(0, np.int64)
        self.run_id = np.zeros(0, np.int64)

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    def memory_bytes(self) -> int:
        return self.ntotal * self.code_bytes + 16 * len(self.run_pos)

    def ids(self) -> np.ndarray:
        lengths = np.diff(np.append(self.run_pos, self.ntotal))
        return np.repeat(self.run_id - self.run_pos, lengths) + np.arange(self.ntotal)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ids(), faiss.vector_to_array(self.faiss.xb).reshape(-1, self.code_bytes)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        n = self.ntotal
        last = self.run_id[-1] + n - 1 - self.run_pos[-1] if n else -1
        if ids[0] <= last or np.any(np.diff(ids) <= 0):
            raise ValueError("ids must be added in increasing order, above every id present")
        starts = np.flatnonzero(np.diff(ids, prepend=ids[0] - 2) != 1)
        if n and ids[0] == last + 1:
            starts = starts[1:]  # the batch continues the last run
        self.run_pos = np.append(self.run_pos, n + starts)
        self.run_id = np.append(self.run_id, ids[starts])
        self.faiss.add(codes)

    def remove(self, ids: np.ndarray) -> None:
        present = self.ids()
        gone = np.isin(present, ids)
        if gone.any():
            self.faiss.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(gone).astype(np.int64)))
            kept = present[~gone]
            self.run_pos = np.flatnonzero(np.diff(kept, prepend=kept[0] - 2) != 1) \
                if len(kept) else np.zeros(0, np.int64)
            self.run_id = kept[self.run_pos] if len(kept) else np.zeros(0, np.int64)

    def _ids_at(self, positions: np.ndarray) -> np.ndarray:
        run = (np.searchsorted(self.run_pos, positions, side="right") - 1).clip(0)
        ids = self.run_id[run] + positions - self.run_pos[run]
        return np.where(positions < 0, -1, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, positions = self.faiss.search(queries, k)
        return dist, self._ids_at(positions)

    def within(self, query: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) of every code at most `max_distance` from one query."""
        _, dist, positions = self.faiss.range_search(query[:1], max_distance + 1)  # "< r"
        return dist.astype(np.int32), self._ids_at(positions.astype(np.int64))

    def to_arrays(self) -> list[np.ndarray]:
        return [faiss.serialize_index_binary(self.faiss), self.run_pos, self.run_id]

    @classmethod
    def from_arrays(cls, bits: int, arrays: list[np.ndarray], header: dict) -> _Flat:
        flat = cls(bits)
        flat.faiss = faiss.deserialize_index_binary(arrays[0])
        flat.run_pos, flat.run_id = arrays[1].astype(np.int64), arrays[2].astype(np.int64)
        return flat


class _Cells:
    """Approximate: codes grouped by nearest centroid (cell), uint32 ids; codes added since
    the last `regroup()` wait in a tail that every search scans in full."""

    kind = "ivf"

    def __init__(self, bits: int, centroids: np.ndarray, nprobe: int = 1):
        self.bits, self.code_bytes = bits, bits // 8
        self.centroids = np.ascontiguousarray(centroids, dtype=np.uint8)
        self.quantizer = faiss.IndexBinaryFlat(bits)
        self.quantizer.add(self.centroids)
        self.nlist = len(centroids)
        self.nprobe = nprobe
        self.offsets = np.zeros(self.nlist + 1, np.int64)
        self.codes = np.zeros((0, self.code_bytes), np.uint8)
        self.cell_ids = np.zeros(0, np.uint32)
        self.tail_codes = np.zeros((0, self.code_bytes), np.uint8)
        self.tail_ids = np.zeros(0, np.int64)

    @property
    def ntotal(self) -> int:
        return len(self.cell_ids) + len(self.tail_ids)

    def memory_bytes(self) -> int:
        return (self.codes.nbytes + self.cell_ids.nbytes + self.offsets.nbytes
                + self.centroids.nbytes + self.tail_codes.nbytes + self.tail_ids.nbytes)

    def _assign(self, codes: np.ndarray) -> np.ndarray:
        cells = np.empty(len(codes), np.int64)
        for start in range(0, len(codes), 1 << 20):  # bounds the distance buffers
            cells[start:start + (1 << 20)] = self.quantizer.search(
                codes[start:start + (1 << 20)], 1)[1][:, 0]
        return cells

    def regroup(self) -> None:
        """Move the tail into the cells (one stable sort of everything)."""
        if not len(self.tail_ids):
            return
        cells = np.concatenate([np.repeat(np.arange(self.nlist), np.diff(self.offsets)),
                                self._assign(self.tail_codes)])
        order = np.argsort(cells, kind="stable")
        ids = np.concatenate([self.cell_ids.astype(np.int64), self.tail_ids])[order]
        self.codes = np.concatenate([self.codes, self.tail_codes])[order]
        self.cell_ids = ids.astype(_id_dtype(ids))
        self.offsets = np.concatenate(
            [[0], np.cumsum(np.bincount(cells, minlength=self.nlist))]).astype(np.int64)
        self.tail_codes = np.zeros((0, self.code_bytes), np.uint8)
        self.tail_ids = np.zeros(0, np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([self.cell_ids.astype(np.int64), self.tail_ids])
        order = np.argsort(ids)
        return ids[order], np.concatenate([self.codes, self.tail_codes])[order]

    def ids(self) -> np.ndarray:
        return self.contents()[0]

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        self.tail_ids = np.concatenate([self.tail_ids, ids])
        self.tail_codes = np.concatenate([self.tail_codes, codes])

    def remove(self, ids: np.ndarray) -> None:
        gone = np.isin(self.cell_ids, ids)
        if gone.any():
            kept = np.concatenate([[0], np.cumsum(~gone)])
            self.offsets = kept[self.offsets]
            self.codes, self.cell_ids = self.codes[~gone], self.cell_ids[~gone]
        tail_gone = np.isin(self.tail_ids, ids)
        self.tail_codes, self.tail_ids = self.tail_codes[~tail_gone], self.tail_ids[~tail_gone]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, cells = self.quantizer.search(queries, min(self.nprobe, self.nlist))
        dist = np.full((len(queries), k), -1, np.int32)
        found = np.full((len(queries), k), -1, np.int64)
        for i, row in enumerate(cells):
            row = row[row >= 0]
            starts, ends = self.offsets[row], self.offsets[row + 1]
            candidates = np.concatenate([self.codes[a:b] for a, b in zip(starts, ends,
                                                                         strict=True)]
                                        + [self.tail_codes])
            if not len(candidates):
                continue
            d, p = faiss.knn_hamming(queries[i:i + 1], candidates, min(k, len(candidates)))
            dist[i, :d.shape[1]] = d[0]
            found[i, :d.shape[1]] = self._ids_of(p[0], starts, ends)
        return dist, found

    def _ids_of(self, positions: np.ndarray, starts: np.ndarray, ends: np.ndarray
                ) -> np.ndarray:
        """Ids of positions in the probed cells laid end to end (then the tail): only the k
        found are looked up, never an id array of every candidate."""
        bounds = np.concatenate([[0], np.cumsum(ends - starts)])
        part = np.searchsorted(bounds, positions, side="right") - 1
        in_cells = part < len(starts)
        ids = np.empty(len(positions), np.int64)
        cell_part = part[in_cells]
        ids[in_cells] = self.cell_ids[starts[cell_part] + positions[in_cells]
                                      - bounds[cell_part]]
        ids[~in_cells] = self.tail_ids[positions[~in_cells] - bounds[-1]]
        return ids

    def to_arrays(self) -> list[np.ndarray]:
        self.regroup()
        return [self.centroids, self.offsets, self.codes, self.cell_ids]

    @classmethod
    def from_arrays(cls, bits: int, arrays: list[np.ndarray], header: dict) -> _Cells:
        code_bytes = bits // 8
        cells = cls(bits, arrays[0].reshape(-1, code_bytes), int(header["nprobe"]))
        cells.offsets = arrays[1].astype(np.int64)
        cells.codes = arrays[2].reshape(-1, code_bytes)
        cells.cell_ids = arrays[3].astype(np.dtype(header["id_dtype"]))
        return cells


_LAYOUTS = {"flat": _Flat, "ivf": _Cells}


class BinaryIndex:
    """Tile id -> packed code, searched by Hamming distance."""

    def __init__(self, bits: int, policy: IndexPolicy | None = None):
        if bits % 8 or bits <= 0:
            raise ValueError(f"bits must be a positive multiple of 8, not {bits}")
        self.bits = bits
        self.policy = policy or IndexPolicy()
        self.calibrated_recall: float | None = None
        self._layout: _Flat | _Cells = _Flat(bits)

    @property
    def kind(self) -> str:
        return self._layout.kind

    @property
    def nprobe(self) -> int:
        return getattr(self._layout, "nprobe", 0)

    @property
    def ntotal(self) -> int:
        return self._layout.ntotal

    @property
    def code_bytes(self) -> int:
        return self.bits // 8

    @property
    def exact_max(self) -> int:
        """Most codes searched exactly."""
        return self.policy.exact_max_bytes // self.code_bytes

    def memory_bytes(self) -> int:
        """Bytes held for the codes, ids and structure (what a search keeps in memory)."""
        return self._layout.memory_bytes()

    # -- content -------------------------------------------------------------------------
    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.code_bytes:
            raise ValueError(f"codes must be uint8 [n, {self.code_bytes}], got {codes.shape}")
        return codes

    def all_ids(self) -> np.ndarray:
        return self._layout.ids()

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, codes) of everything indexed."""
        return self._layout.contents()

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        codes = self._check_codes(codes)
        if len(ids) != len(codes):
            raise ValueError("ids and codes differ in length")
        if len(ids):
            self._layout.add(ids, codes)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        before = self.ntotal
        if len(ids) and before:
            self._layout.remove(ids)
        return before - self.ntotal

    # -- search --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (distances int32 [nq, k], ids int64 [nq, k]); missing hits are id -1."""
        queries = self._check_codes(queries)
        k = max(int(k), 1)
        dist = np.full((len(queries), k), -1, np.int32)
        ids = np.full((len(queries), k), -1, np.int64)
        if self.ntotal:
            d, i = self._layout.search(queries, min(k, self.ntotal))
            dist[:, :d.shape[1]], ids[:, :i.shape[1]] = d, i
        return dist, ids

    def within(self, query: np.ndarray, max_distance: int
               ) -> tuple[np.ndarray, np.ndarray] | None:
        """(distances, ids) of every code at most `max_distance` from `query` [1, bytes], in
        no order: one scan (a tie group is completed with it where a k-nearest search would
        sort thousands); None for the cells layout, which cannot promise all of them."""
        if self.kind != "flat" or not self.ntotal:
            return None
        return self._layout.within(self._check_codes(query), int(max_distance))

    # -- layout --------------------------------------------------------------------------
    def optimize(self) -> None:
        """Pick the layout for the current size: exact up to `exact_max` codes, cells above
        (hysteresis: back to exact only below half of it); fold a tail into the cells."""
        n = self.ntotal
        if self.kind == "flat" and n > self.exact_max:
            self._build_cells(*self.contents())
        elif self.kind == "ivf" and n < self.exact_max // 2:
            ids, codes = self.contents()
            self._layout, self.calibrated_recall = _Flat(self.bits), None
            self.add(ids, codes)
        elif self.kind == "ivf":
            self._layout.regroup()

    def _build_cells(self, ids: np.ndarray, codes: np.ndarray) -> None:
        policy = self.policy
        rng = np.random.default_rng(policy.seed)
        nlist = _nlist(len(codes))
        sample = codes[rng.choice(len(codes), min(len(codes), 64 * nlist), replace=False)]
        trainer = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.bits), self.bits, nlist)
        trainer.cp.niter = 10
        trainer.train(sample)
        quantizer = faiss.downcast_IndexBinary(trainer.quantizer)
        centroids = faiss.vector_to_array(quantizer.xb).reshape(nlist, self.code_bytes)
        cells = _Cells(self.bits, centroids)
        cells.add(ids, codes)
        cells.regroup()
        # calibrate nprobe on indexed codes used as queries (as in a query by tile id) and on
        # the same codes with bits flipped (codes the index has not seen)
        indexed = codes[rng.choice(len(codes), min(len(codes), policy.calibration_queries),
                                   replace=False)]
        flips = rng.random((len(indexed), self.bits)) < policy.calibration_bit_noise
        unseen = indexed ^ np.packbits(flips, axis=1)
        far = rng.integers(0, 256, indexed.shape, dtype=np.uint8)  # like nothing indexed
        k = min(policy.recall_k, len(codes))
        query_sets = [(queries, faiss.knn_hamming(queries, codes, k)[0])
                      for queries in (indexed, unseen, far)]

        def recall_at(nprobe: int) -> float:
            cells.nprobe = nprobe
            return min(recall_lower_bound(cells.search(queries, k)[0], exact)
                       for queries, exact in query_sets)

        missed, nprobe = 0, 1  # the largest nprobe known to miss the target, and a try
        while (recall := recall_at(nprobe)) < policy.target_recall and nprobe < nlist:
            missed, nprobe = nprobe, min(nprobe * 2, nlist)
        # between the last miss and the first hit: the smallest that still reaches the
        # target (to within 1/8), since a query's time grows with nprobe
        while recall >= policy.target_recall and nprobe - missed > max(nprobe // 8, 1):
            middle = (missed + nprobe) // 2
            if (tried := recall_at(middle)) >= policy.target_recall:
                nprobe, recall = middle, tried
            else:
                missed = middle
        cells.nprobe = nprobe
        self._layout, self.calibrated_recall = cells, recall

    # -- persistence ---------------------------------------------------------------------
    def to_bytes(self, generation: int, index_uid: str | None = None) -> bytes:
        arrays = [np.ascontiguousarray(a) for a in self._layout.to_arrays()]
        blobs = [a.tobytes() for a in arrays]
        crc = 0
        for blob in blobs:
            crc = zlib.crc32(blob, crc)
        header = {
            "format_version": FORMAT_VERSION, "bits": self.bits, "kind": self.kind,
            "ntotal": self.ntotal, "generation": int(generation), "nprobe": self.nprobe,
            "calibrated_recall": self.calibrated_recall, "policy": asdict(self.policy),
            "arrays": [[a.dtype.str, len(b)] for a, b in zip(arrays, blobs, strict=True)],
            "id_dtype": arrays[-1].dtype.str, "crc32": crc, "index_uid": index_uid,
        }
        head = json.dumps(header).encode()
        return b"".join([MAGIC, _HEADER_LEN.pack(len(head)), head, *blobs])

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "index") -> tuple[BinaryIndex, dict]:
        """-> (index, header); IndexCorrupted naming `source` when anything does not add up."""
        def corrupted(why: str) -> IndexCorrupted:
            return IndexCorrupted(why, path=source)

        if len(data) < len(MAGIC) + _HEADER_LEN.size or not data.startswith(MAGIC):
            raise corrupted("not an MrHash index file (bad magic or truncated)")
        (head_len,) = _HEADER_LEN.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _HEADER_LEN.size
        try:
            header = json.loads(data[start:start + head_len])
            layout = _LAYOUTS[header["kind"]]
            specs = [(np.dtype(dtype), int(size)) for dtype, size in header["arrays"]]
        except (ValueError, KeyError, TypeError) as error:
            raise corrupted(f"unreadable header ({error})") from None
        if header.get("format_version") != FORMAT_VERSION:
            raise corrupted(f"unsupported format version {header.get('format_version')}")
        body = memoryview(data)[start + head_len:]
        expected = sum(size for _, size in specs)
        if len(body) != expected:
            raise corrupted(f"truncated: {len(body)} bytes of data, {expected} expected")
        arrays, offset, crc = [], 0, 0
        for dtype, size in specs:
            blob = body[offset:offset + size]
            crc = zlib.crc32(blob, crc)
            arrays.append(np.frombuffer(blob, dtype=dtype))
            offset += size
        if crc != header.get("crc32"):
            raise corrupted("checksum mismatch (corrupted file)")
        bits = header.get("bits")
        if not isinstance(bits, int) or isinstance(bits, bool) or not 8 <= bits <= 4096 \
                or bits % 8:
            raise corrupted(f"the header's bits {bits!r} is not a code length (a multiple of 8)")
        try:  # a header that passed the checksum may still hold what no writer writes
            index = cls(bits, IndexPolicy(**header["policy"]))
            index._layout = layout.from_arrays(index.bits, arrays, header)
            index.calibrated_recall = header["calibrated_recall"]
        except (ValueError, KeyError, TypeError) as error:
            raise corrupted(f"inconsistent header ({error})") from None
        if index.ntotal != header.get("ntotal"):
            raise corrupted(f"holds {index.ntotal} codes, header says {header['ntotal']}")
        return index, header

    def save(self, path: str | Path, generation: int, index_uid: str | None = None) -> None:
        """`index_uid` ties the file to its index (a cache copied from another index of the
        same size and generation is then told apart)."""
        atomic_write_bytes(path, self.to_bytes(generation, index_uid))

    @classmethod
    def load(cls, path: str | Path) -> tuple[BinaryIndex, dict]:
        return cls.from_bytes(read_cache(path, "index"), str(path))
