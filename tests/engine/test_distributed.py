"""Indexing on a real Dask cluster (`local:2`: 2 worker processes, TLS): the same index as
a single-process build (`mrhash info` digest), a worker killed with kill -9 mid-run, a
cancelled build resumed, a wrong scheduler address, a raster a worker cannot read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from mrhash.errors import BadInput, Cancelled
from mrhash.index.build import build_index
from mrhash.index.info import index_info
from mrhash.jobs import JobControl
from test_index_support import THREADS_ENV, TILE

distributed = pytest.importorskip("distributed")


def client_tls(security: distributed.security.Security) -> dict[str, str]:
    """The Dask settings that give a client `security`'s certificate: how a user's own TLS
    cluster's certificates reach the engine (docs/SCALING.md)."""
    return {"distributed.comm.tls.ca-file": security.tls_ca_file,
            "distributed.comm.tls.client.cert": security.tls_client_cert,
            "distributed.comm.tls.client.key": security.tls_client_key}


@pytest.fixture(scope="module")
def cluster():
    """`--dask local:2`'s cluster (two worker processes, one thread each, TLS on 127.0.0.1):
    its tls:// address and a client. Builds are given the address, its certificate in the
    Dask settings: as a user's own TLS cluster."""
    import dask
    from mrhash.index.dask import connect

    os.environ["MRHASH_THREADS"] = "1"  # the workers inherit it: codes as the tests' own
    started = connect("local:2")
    with dask.config.set(client_tls(started.local.security)):
        yield started.local.scheduler_address, started.client
    started.close()


@pytest.fixture
def all_rasters(tmp_path, eurosat_dir):
    """Every shipped EuroSAT raster (50, 200 tiles): enough tasks to kill a worker amid."""
    from test_index_support import raster_folder

    names = sorted(p.name for p in eurosat_dir.iterdir() if p.is_dir())
    return raster_folder(tmp_path / "all", eurosat_dir, classes=names, per_class=5)


def _single(tiny_model, folder, index):
    build_index(folder, tiny_model, index, TILE)
    return index_info(index)


def test_a_dask_build_equals_a_single_process_build(tiny_model, rasters, tmp_path, cluster):
    address, _client = cluster
    single = _single(tiny_model, rasters, tmp_path / "single")
    result = build_index(rasters, tiny_model, tmp_path / "dask", TILE, dask=address)
    assert result.n_tiles == single["tiles"] == 36 and not result.skipped
    info = index_info(tmp_path / "dask")
    assert info["digest"] == single["digest"]
    assert (info["rasters"], info["rasters_unfinished"]) == (9, 0)
    # the same digest from the command line, and an update of an unchanged folder is a no-op
    again = build_index(rasters, tiny_model, tmp_path / "dask", TILE, dask=address)
    assert (again.added, again.unchanged) == (0, 9)
    out = subprocess.run([sys.executable, "-m", "mrhash", "info", "--index",
                          str(tmp_path / "dask")],
                         capture_output=True, text=True, env=THREADS_ENV, check=True)
    assert json.loads(out.stdout)["digest"] == single["digest"]


def test_a_worker_killed_mid_run_changes_nothing(tiny_model, all_rasters, tmp_path, cluster):
    address, client = cluster
    single = _single(tiny_model, all_rasters, tmp_path / "single")
    pids = list(client.run(os.getpid).values())
    killed: list[int] = []

    def on_progress(_event):
        if not killed:  # after the first commit: tasks are out on both workers
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    job = JobControl(on_progress, min_interval_s=0)
    result = build_index(all_rasters, tiny_model, tmp_path / "dask", TILE, job=job, batch_size=1,
                         dask=address)
    assert killed and result.n_tiles == 200 and not result.skipped
    assert index_info(tmp_path / "dask")["digest"] == single["digest"]
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it for the next tests


def test_a_cancelled_dask_build_resumes_to_the_same_index(tiny_model, all_rasters, tmp_path,
                                                          cluster):
    address, _client = cluster
    single = _single(tiny_model, all_rasters, tmp_path / "single")
    commits: list[dict] = []

    def on_progress(event):
        commits.append(event)
        if len(commits) == 5:
            job.cancel()

    job = JobControl(on_progress, min_interval_s=0)
    with pytest.raises(Cancelled):
        build_index(all_rasters, tiny_model, tmp_path / "dask", TILE, job=job, batch_size=1,
                    dask=address)
    partial = index_info(tmp_path / "dask")
    assert 0 < partial["tiles"] < 200  # what was committed is kept
    result = build_index(all_rasters, tiny_model, tmp_path / "dask", TILE, batch_size=1,
                         dask=address)
    assert result.added == 200 - partial["tiles"]
    assert index_info(tmp_path / "dask")["digest"] == single["digest"]


def test_a_wrong_scheduler_address_writes_nothing(tiny_model, rasters, tmp_path, monkeypatch):
    import mrhash.index.dask as dask_build

    monkeypatch.setattr(dask_build, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    index = tmp_path / "index"
    with pytest.raises(BadInput, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        build_index(rasters, tiny_model, index, TILE, dask=f"127.0.0.1:{port}")
    assert not index.exists()
    with pytest.raises(BadInput, match="local:N"):
        build_index(rasters, tiny_model, index, TILE, dask="local:zero")
    assert not index.exists()
    out = subprocess.run([sys.executable, "-m", "mrhash", "index", str(rasters), "--model",
                          str(tiny_model), "--index", str(index), "--dask", "local:0"],
                         capture_output=True, text=True, env=THREADS_ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "local:N" in out.stderr
    assert not index.exists()


def test_a_raster_a_worker_cannot_read_names_the_shared_paths(tiny_model, rasters, tmp_path):
    """What a worker answers for a raster it cannot open (another machine without the share):
    an error naming the file and the same-paths rule, not a crash for Dask to retry."""
    from mrhash.index.dask import Part, encode_parts
    from mrhash.index.encode import open_for_model
    from mrhash.model.package import load_model, package_bytes
    from mrhash.raster.sources import SourceSpec
    from mrhash.raster.tiling import tile_grid

    model = load_model(tiny_model)
    spec = SourceSpec("primary", (str(next(rasters.glob("*.tif"))),), model.primary.bands)
    with open_for_model(spec, model) as source:
        tiles = tile_grid(source, TILE)
    missing = SourceSpec("primary", (str(tmp_path / "not_on_this_worker.tif"),),
                         model.primary.bands)
    answers = encode_parts(package_bytes(tiny_model), model.fingerprint, str(tiny_model),
                           "auto", [Part(0, spec, tiles, 0), Part(1, missing, tiles, 0)], 32)
    (key0, _, values), (key1, _, error) = answers
    assert (key0, key1) == (0, 1) and values.shape == (len(tiles), model.bits + model.latent_dim)
    assert "not_on_this_worker.tif" in error and "same paths" in error
