"""Indexing on a Dask cluster: `mrhash index FOLDER --dask tcp://host:8786` (a running
scheduler) or `--dask local:N` (N worker processes on this machine).

This process stays the index's one writer and does everything a single-process build does
(indexer.py: listing, what changed, tile grids, resume, commits, caches); Dask workers only
read tiles and encode them. Work goes out as tasks of up to `BLOCK_TILES` tiles (a block of a
big raster, or several small rasters), at most a few per worker in flight, and comes back as
embeddings (code and latent) committed in each raster's tile order, so a coordinator killed at any
moment leaves exactly what a killed single-process build leaves, and the next run resumes it.
A worker that dies has its tasks re-run by Dask elsewhere; results are committed once.

Workers encode a raster's tiles in the same batches as a single-process build (blocks are
multiples of the batch size, counted from the raster's first tile to encode), so on the same
kind of CPU with the same threads per task both give the same codes (`mrhash info`'s digest).
Workers need the rasters at the same paths (a shared file system, or URLs GDAL reads); the
model is sent to them, so it need not be shared.

Whoever can reach a Dask scheduler runs code as its workers' user, so `local:N` is no open
door: its scheduler, nannies and workers listen on 127.0.0.1 only, speak TLS with a
certificate made for the run (kept in memory) that every peer must present, and serve no HTTP
(no dashboard). A user's own cluster is secured by its operators: a tls:// address, and the
client certificate in the Dask configuration (docs/SCALING.md). An address that does not
answer the Dask handshake fails within CONNECT_TIMEOUT_S, naming it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from mrhash_contract.choices import DASK_LOCAL_PREFIX

from mrhash.errors import BadInput, MissingDependency, MrHashError
from mrhash.index.builder import Builder, FileOutcome, FilePlan, error_text, skipped
from mrhash.index.encode import encoded_batches, open_for_model
from mrhash.index.store import FileRecord, FileState
from mrhash.model.package import model_from_bytes
from mrhash.raster.sources import SourceSpec
from mrhash.raster.tiling import Tile

if TYPE_CHECKING:
    from distributed.core import Server
    from distributed.security import Security

BLOCK_BATCHES = 2         # batches of tiles per task: small enough to share a folder out
TASKS_PER_WORKER = 3      # in flight per worker: enough to hide the coordinator's commits
CONNECT_TIMEOUT_S = 10   # to connect and get the Dask handshake, refused or silent alike
LOOPBACK = "127.0.0.1"
# local:N's servers serve no HTTP routes, and close their HTTP server at start (dask_setup)
NO_HTTP = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": [],
           "distributed.scheduler.preload": [__name__], "distributed.worker.preload": [__name__]}
TLS_SETTINGS = ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT "
                "and DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (or distributed.comm.tls in a Dask "
                "configuration file)")
NANNY_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
SHARED_PATHS = ("every Dask worker must reach the rasters at the same paths as this machine "
                "(a shared file system or URLs)")


@dataclass
class Cluster:
    """A Dask client, and the LocalCluster it started (`local:N`), closed together."""

    client: object
    address: str
    local: object | None = None

    @property
    def n_workers(self) -> int:
        return max(len(self.client.scheduler_info(n_workers=-1)["workers"]), 1)

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()


def connect(address: str) -> Cluster:
    """A client of the scheduler at `address`, or of a new LocalCluster for `local:N`;
    BadInput naming the address when it cannot be reached or does not answer as a Dask
    scheduler within CONNECT_TIMEOUT_S (before anything is written)."""
    try:
        # the optional dask extra: only for a Dask build
        from distributed import Client
    except ModuleNotFoundError as error:
        raise MissingDependency.of(error) from None
    address = address.strip()
    if address.startswith(DASK_LOCAL_PREFIX):
        return _local_cluster(address)
    if "://" not in address:
        address = f"tcp://{address}"
    security = _client_security(address)
    _handshake(address, security)
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", security=security)
    except (OSError, TimeoutError, ValueError) as error:
        raise _unreachable(address, str(error)) from None
    return Cluster(client, address)


def _client_security(address: str) -> Security:
    """The certificates of a user's own cluster, from the Dask configuration (as every Dask
    client): BadInput at once where they lack for its address."""
    # the optional dask extra: only for a Dask build
    from distributed.security import Security

    security = Security()
    tls = address.startswith("tls://")
    if tls and not (security.tls_ca_file and security.tls_client_cert):
        raise BadInput(f"--dask {address}: a tls:// scheduler needs the certificates its "
                       f"cluster gives clients: set {TLS_SETTINGS} (docs/SCALING.md)")
    if security.require_encryption and not tls:
        raise BadInput(f"--dask {address}: the Dask configuration requires encryption "
                       "(distributed.comm.require-encryption): give the scheduler's tls:// "
                       "address")
    return security


def _unreachable(address: str, why: str) -> BadInput:
    return BadInput(f"cannot reach the Dask scheduler at {address} ({why}); start one with "
                    "`dask scheduler` (docs/SCALING.md) or use --dask local:N")


def _handshake(address: str, security: Security) -> None:
    """Open one comm to `address` and close it, the Dask handshake included, within about
    CONNECT_TIMEOUT_S. distributed bounds only the connect: a server that accepts and never
    answers (a wrong port, an HTTP server) held the Client for minutes."""
    # the optional dask extra: only for a Dask build
    from distributed.comm import connect as open_comm

    async def answer() -> str | None:
        try:
            # a refused port: connect's own retries give up first, with their message
            comm = await asyncio.wait_for(open_comm(
                address, timeout=CONNECT_TIMEOUT_S, **security.get_connection_args("client")),
                CONNECT_TIMEOUT_S + 1)
        except TimeoutError:
            return (f"no Dask handshake within {CONNECT_TIMEOUT_S} s: it is not a Dask "
                    "scheduler, or it does not answer")
        except OSError as error:  # refused, reset (a tcp:// address of a tls:// scheduler)
            return str(error)
        except Exception as error:  # whatever another protocol's bytes make of a Dask frame
            return f"it answers, but not as a Dask scheduler: {type(error).__name__}: {error}"
        await comm.close()
        return None

    why = asyncio.run(answer())
    if why is not None:
        raise _unreachable(address, why)


def _local_cluster(address: str) -> Cluster:
    """`local:N`: N worker processes on this machine, every server on 127.0.0.1 only, none
    serving HTTP, all speaking TLS with a certificate made for this run (in memory, handed to
    the workers by their nannies): no other user of the machine can submit code to them."""
    # the optional dask extra: only for a Dask build
    from distributed import Client, LocalCluster
    from distributed.security import Security

    try:
        n = int(address[len(DASK_LOCAL_PREFIX):])
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise BadInput(f"--dask {address}: write local:N with N the number of worker "
                       "processes (1 to 256)")
    try:
        security = Security.temporary()
    except ImportError:  # never an open cluster instead
        raise BadInput(f"--dask {address}: the local cluster is secured with a certificate "
                       "made for each run, which needs the Python package cryptography: "
                       "install it in the engine's environment, or index without --dask"
                       ) from None
    # one task at a time per worker process, torch using its share of the cores (N
    # processes of all the cores' threads would fight over them)
    threads = os.environ.get("MRHASH_THREADS") or str(max((os.cpu_count() or 1) // n, 1))
    # the optional dask extra: only for a Dask build
    import dask

    # the workers start without MALLOC_TRIM_THRESHOLD_ (see _restore_malloc)
    with dask.config.set({NANNY_MALLOC_TRIM: None, **NO_HTTP}):
        local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             host=LOOPBACK, protocol="tls://", security=security,
                             dashboard_address=None, worker_dashboard_address=None,
                             # its HTTP server, closed at start, on no fixed port
                             scheduler_kwargs={"dashboard": False,
                                               "dashboard_address": f"{LOOPBACK}:0"},
                             silence_logs=40, env={"MRHASH_THREADS": threads})
    return Cluster(Client(local), address, local)


def dask_setup(server: Server) -> None:
    """The preload of local:N's scheduler and workers (NO_HTTP): distributed starts an HTTP
    server (metrics, health) in each whatever the dashboard settings; close it."""
    server.http_server.stop()


# -- on the workers ------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], object] = {}  # (fingerprint, encoder) -> model, per worker
_SOURCES: dict[tuple, object] = {}  # the rasters a worker read last, kept open (oldest first)
OPEN_SOURCES = 4  # consecutive blocks of a raster go to the same workers: no re-open each


@dataclass
class Part:
    """Tiles of one raster encoded by a task: `tiles` start at position `offset` of the
    raster's tiles to encode."""

    key: int          # the raster's position in the build (file_no)
    spec: SourceSpec
    tiles: list[Tile]
    offset: int


def _worker_model(model_bytes: bytes, fingerprint: str, label: str, encoder: str):
    model = _MODELS.get((fingerprint, encoder))
    if model is None:
        # torch takes ~1 s to import: only where a network runs
        import torch


        torch.set_num_threads(int(os.environ.get("MRHASH_THREADS") or 0) or _cores_per_task())
        _restore_malloc()
        model = _MODELS.setdefault((fingerprint, encoder),
                                   model_from_bytes(model_bytes, label).use_encoder(encoder))
    return model


def _restore_malloc() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, which pins glibc's mmap
    threshold at 128 KiB: every activation tensor is then mmap'ed and unmapped, and encoding
    ran at half speed (docs/SCALING.md). Give large blocks back to the heap."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)
    libc.mallopt(m_trim_threshold, 64 * 2**20)


def _cores_per_task() -> int:
    """The machine's cores shared by the tasks this worker runs at once (a worker started
    with `--nthreads 1` gives one task every core; MRHASH_THREADS overrides)."""
    try:
        # the optional dask extra: only for a Dask build
        from distributed import get_worker

        tasks = get_worker().state.nthreads
    except (ImportError, ValueError):
        tasks = 1
    return max((os.cpu_count() or 1) // max(tasks, 1), 1)


def encode_parts(model_bytes: bytes, fingerprint: str, label: str, encoder: str,
                 parts: list[Part], batch_size: int) -> list[tuple[int, int, np.ndarray | str]]:
    """A task: (key, offset, embeddings float32 [n, bits + latent]) per part, or (key, offset,
    error message) for a raster the worker could not read: a deterministic failure is an
    answer, not a crash for Dask to retry."""
    model = _worker_model(model_bytes, fingerprint, label, encoder)
    out: list[tuple[int, int, np.ndarray | str]] = []
    for part in parts:
        path = part.spec.paths[0]
        try:
            source = _worker_source(part.spec, model)
            values = [batch.embeddings for batch
                      in encoded_batches(model, source, part.tiles, batch_size)]
            out.append((part.key, part.offset, np.concatenate(values) if values
                        else np.zeros((0, model.bits + model.latent_dim), np.float32)))
        except (MrHashError, OSError) as error:
            _SOURCES.pop(_source_key(part.spec), None)
            out.append((part.key, part.offset,
                        f"{error_text(error, path)} (on a Dask worker: {SHARED_PATHS})"))
    return out


def _source_key(spec: SourceSpec) -> tuple:
    return spec.paths, spec.bands


def _worker_source(spec: SourceSpec, model):
    """The raster opened for the model, kept open for the next block of it (a few rasters
    at a time, oldest closed first). Reopened when its files changed since."""
    key = _source_key(spec)
    state = FileState.of(spec.paths)
    cached = _SOURCES.pop(key, None)
    if cached is not None and cached[0] != state:
        cached[1].close()
        cached = None
    if cached is None:
        cached = (state, open_for_model(spec, model))
    _SOURCES[key] = cached  # most recently used last
    while len(_SOURCES) > OPEN_SOURCES:
        _SOURCES.pop(next(iter(_SOURCES)))[1].close()
    return cached[1]


# -- on the coordinator --------------------------------------------------------------------
@dataclass
class _Pending:
    """A raster whose blocks are out: results wait in `arrived` until they are next in its
    tile order."""

    plan: FilePlan
    file_no: int
    blocks: int
    arrived: dict[int, np.ndarray] = field(default_factory=dict)
    error: str | None = None


class DaskRunner:
    """The indexer's runner (see indexer.LocalRunner) for a Dask cluster."""

    def __init__(self, builder: Builder, cluster: Cluster, model_bytes: bytes):
        self.builder, self.cluster = builder, cluster
        self.block = BLOCK_BATCHES * builder.batch_size
        self.window = TASKS_PER_WORKER * cluster.n_workers
        self.fingerprint = builder.model.fingerprint
        self.label = str(builder.model.path)
        # the workers encode as this process would (the index records one precision)
        self.encoder = builder.model.encoder_used
        # sent once to every worker; tasks carry a reference
        self.model_bytes = cluster.client.scatter(model_bytes, broadcast=True)
        self.pending: dict[int, _Pending] = {}
        self.parts: list[Part] = []
        self.futures: set = set()

    def submit(self, spec: SourceSpec, record: FileRecord | None, state: FileState,
               file_no: int) -> list[FileOutcome]:
        builder = self.builder
        path = spec.paths[0]
        try:
            with open_for_model(spec, builder.model) as source:
                plan = builder.plan(spec, source, record, state)
        except (BadInput, OSError) as error:
            return [skipped(error, path)]
        todo = plan.todo
        if not todo:
            return [FileOutcome(path, 0, plan.removed)]
        starts = range(0, len(todo), self.block)
        self.pending[file_no] = _Pending(plan, file_no, len(starts))
        for start in starts:
            self.parts.append(Part(file_no, spec, todo[start:start + self.block], start))
            if sum(len(part.tiles) for part in self.parts) >= self.block:
                self._send()
        return self._collect(wait_below=self.window)

    def drain(self) -> list[FileOutcome]:
        self._send()
        return self._collect(wait_below=1)

    def _send(self) -> None:
        if self.parts:
            self.futures.add(self.cluster.client.submit(
                encode_parts, self.model_bytes, self.fingerprint, self.label, self.encoder,
                self.parts, self.builder.batch_size, pure=False))
            self.parts = []

    def _collect(self, wait_below: int) -> list[FileOutcome]:
        """Commit what has arrived; wait while `wait_below` or more tasks are out."""
        outcomes: list[FileOutcome] = []
        while self.futures:
            done = {future for future in self.futures if future.done()}
            if not done and len(self.futures) < wait_below:
                break
            if not done:
                done = self._wait()
            for future in done:
                self.futures.discard(future)
                for key, offset, values in self._result(future):
                    outcomes += self._arrived(key, offset, values)
        return outcomes

    def _wait(self) -> set:
        """Finished tasks, checking for cancel twice a second meanwhile."""
        # the optional dask extra: only for a Dask build
        from distributed import wait

        while True:
            if self.builder.job:
                self.builder.job.check()
            try:
                return set(wait(list(self.futures), timeout=0.5,
                                return_when="FIRST_COMPLETED").done)
            except TimeoutError:
                continue

    def _result(self, future) -> list:
        try:
            return future.result()
        except Exception as error:  # KilledWorker after Dask's retries, a lost scheduler
            raise BadInput(f"the Dask cluster failed a task ({type(error).__name__}: {error}); "
                           "what was committed is kept: run the same command again to resume",
                           path=self.cluster.address) from None

    def _arrived(self, key: int, offset: int, values: np.ndarray | str) -> list[FileOutcome]:
        pending = self.pending.get(key)
        if pending is None:  # its raster already failed
            return []
        pending.blocks -= 1
        if isinstance(values, str):
            pending.error = pending.error or values
        else:
            pending.arrived[offset] = values
        plan = pending.plan
        while pending.error is None and plan.committed in pending.arrived:
            if self.builder.job:
                self.builder.job.check()
            self.builder.commit(plan, pending.arrived.pop(plan.committed), pending.file_no)
        if pending.blocks and pending.error is None:
            return []
        del self.pending[key]
        path = plan.spec.paths[0]
        if pending.error is not None:
            return [FileOutcome(path, error=pending.error)]
        return [FileOutcome(path, plan.committed, plan.removed)]

    def close(self) -> None:
        """Cancel what is still out (a cancelled or failed build)."""
        if self.futures:
            self.cluster.client.cancel(list(self.futures))
            self.futures.clear()
