"""`--dask local:N` is no open door (every server on 127.0.0.1, TLS with a certificate made
for the run, no HTTP server), and a `--dask` address that does not answer as a Dask scheduler
(a port that accepts and stays silent, an HTTP server) fails within seconds, naming it."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import dask
import pytest
from mrhash.errors import BadInput
from test_distributed import client_tls
from test_index_support import THREADS_ENV, TILE

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")  # a requirement of distributed

HANG_BOUND_S = 20


@pytest.fixture(scope="module")
def local():
    """`--dask local:2`, as the engine starts it."""
    from mrhash.index.dask import connect

    cluster = connect("local:2")
    yield cluster
    cluster.close()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _listening(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN}


def test_local_n_listens_on_loopback_only_over_tls_without_http(local):
    info = local.client.scheduler_info(n_workers=-1)
    workers = info["workers"]
    comms = [info["address"], *workers, *(worker["nanny"] for worker in workers.values())]
    assert len(workers) == 2 and local.local.scheduler_address == info["address"]
    assert all(address.startswith("tls://127.0.0.1:") for address in comms), comms
    # real worker processes (the point of local:N), and every socket any of them listens on
    # is one of those Dask comms: no dashboard, no metrics or health HTTP port, no 0.0.0.0
    pids = set(local.client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    listening = set().union(*(_listening(pid) for pid in {os.getpid(), *pids}))
    assert listening == {("127.0.0.1", _port(address)) for address in comms}
    http_ports = [info["services"]["dashboard"],
                  *(worker["services"]["dashboard"] for worker in workers.values())]
    for port in http_ports:  # distributed's HTTP servers, closed at start
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_no_client_without_the_runs_certificate_gets_in(local):
    from distributed.security import Security
    from mrhash.index.dask import connect

    port = _port(local.local.scheduler_address)
    start = time.monotonic()
    with pytest.raises(BadInput, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        connect(f"tcp://127.0.0.1:{port}")  # plain TCP, no certificate
    with dask.config.set(client_tls(Security.temporary())), pytest.raises(
            BadInput, match="cannot reach the Dask scheduler at tls://"):
        connect(local.local.scheduler_address)  # another user's own certificate
    assert time.monotonic() - start < HANG_BOUND_S
    # below Dask: a TLS client that offers no certificate is turned away by the scheduler
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(
            (ssl.SSLError, ConnectionError)):
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)
            tls.recv(1)


def test_a_cluster_of_ones_own_needs_its_certificates():
    """Refused at once, naming the settings: a tls:// address without the client's
    certificates, a tcp:// address where the configuration requires encryption."""
    from mrhash.index.dask import connect

    with pytest.raises(BadInput, match="tls:// scheduler needs the certificates .*"
                                       "DASK_DISTRIBUTED__COMM__TLS__CA_FILE"):
        connect("tls://127.0.0.1:8786")
    with dask.config.set({"distributed.comm.require-encryption": True}), pytest.raises(
            BadInput, match="requires encryption .* tls:// address"):
        connect("127.0.0.1:8786")


def test_local_n_refuses_rather_than_open_without_tls(monkeypatch):
    """Without `cryptography` no certificate can be made: local:N refuses, starts nothing."""
    from distributed.security import Security
    from mrhash.index.dask import connect

    def no_cryptography(*_args, **_kwargs):
        raise ImportError("Using `Security.temporary` requires `cryptography`")

    def no_cluster(*_args, **_kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(Security, "temporary", classmethod(no_cryptography))
    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    with pytest.raises(BadInput, match="local:2: .* needs the Python package cryptography"):
        connect("local:2")


def test_mrhash_index_on_local_n_builds_the_local_index(tiny_model, rasters, tmp_path):
    """The command line's `--dask local:2` (the secured cluster, started and stopped by the
    command): the digest of a single-process build, and nothing on stderr but the summary."""
    from mrhash.index.build import build_index
    from mrhash.index.info import index_info

    build_index(rasters, tiny_model, tmp_path / "single", TILE)
    out = subprocess.run([sys.executable, "-m", "mrhash", "index", str(rasters), "--model",
                          str(tiny_model), "--index", str(tmp_path / "dask"), "--tile-size",
                          str(TILE), "--dask", "local:2"],
                         capture_output=True, text=True, env=THREADS_ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert index_info(tmp_path / "dask")["digest"] == index_info(tmp_path / "single")["digest"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # a blocked accept() would not notice the end of the test
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(timeout=5)
    server.close()
    for connection in held:
        connection.close()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_args) -> None:  # the test's output, not the server's
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    """A loopback HTTP server (what a dashboard or web address given as --dask is)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize("server", ["silent_port", "http_port"])
def test_an_address_that_is_no_dask_scheduler_fails_within_seconds(server, request):
    """The engine's own timeout (no test shortcut): distributed alone waited minutes."""
    from mrhash.index.dask import connect

    port = request.getfixturevalue(server)
    start = time.monotonic()
    with pytest.raises(BadInput, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} "
                                       r"\(no Dask handshake within \d+ s: it is not a Dask "
                                       "scheduler, or it does not answer\\)"):
        connect(f"127.0.0.1:{port}")
    assert time.monotonic() - start < HANG_BOUND_S
