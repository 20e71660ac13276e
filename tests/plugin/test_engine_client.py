"""The client against the real `mrhash serve` worker: status, errors, start failures."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from qgis.core import Qgis

from mrhash_qgis.core.engine_client import FIX_REBUILD, STATE_FAILED, EngineClient, EngineError
from mrhash_qgis.core.settings import EngineSettings, checkout_interpreter


def test_a_checkout_without_private_environment_uses_its_venv(monkeypatch, tmp_path):
    from mrhash_qgis.core import settings

    monkeypatch.setattr(settings, "managed_target", lambda: tmp_path / "no-env")
    repo = Path(__file__).resolve().parents[2]
    assert checkout_interpreter() == str(repo / ".venv" / "bin" / "python")
    assert EngineSettings.load().kind == "checkout"


def test_status(engine):
    status = engine.call("status", timeout=30)
    assert status["version"] == engine.info["version"]
    assert status["device"] == "cpu"
    assert isinstance(status["jobs"], list)


def test_unknown_method_is_a_bad_request(engine):
    with pytest.raises(EngineError) as caught:
        engine.call("no_such_method", timeout=30)
    assert caught.value.code == "bad_request"
    assert "no_such_method" in caught.value.message


def test_query_on_a_missing_index_names_it(engine, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(EngineError) as caught:
        engine.call("query", {"index": str(missing), "point": [0, 0], "crs": "EPSG:4326",
                              "k": 3}, timeout=30)
    assert caught.value.code in ("bad_input", "bad_index")
    assert "nowhere" in caught.value.message
    assert engine.call("status", timeout=30)["version"]  # the worker keeps running


def test_missing_interpreter_fails_with_advice(qgis_app):
    client = EngineClient(EngineSettings(python="/nonexistent/python"))
    request = client.request("status")
    with pytest.raises(EngineError) as caught:
        request.wait(timeout=10)
    assert client.state == STATE_FAILED
    assert "/nonexistent/python" in caught.value.message
    assert "Settings" in caught.value.message
    assert client.fix == "settings"


def test_interpreter_without_engine_says_what_to_install(qgis_app):
    client = EngineClient(EngineSettings(python=sys.base_prefix + "/bin/python3"))
    with pytest.raises(EngineError) as caught:
        client.wait_ready(timeout=30)
    assert "This Python has no MrHash engine" in caught.value.message
    assert "No module named mrhash" in caught.value.message
    assert "private engine environment" in caught.value.message  # the way out for zip users
    client.stop()


def test_a_mrhash_folder_where_qgis_started_does_not_hide_the_engine(qgis_app, tmp_path,
                                                                    monkeypatch):
    decoy = tmp_path / "mrhash"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("# not the engine\n")
    (decoy / "__main__.py").write_text("raise SystemExit('the decoy ran')\n")
    monkeypatch.chdir(tmp_path)
    client = EngineClient(EngineSettings(python=checkout_interpreter(), kind="checkout"))
    assert client.wait_ready(timeout=120)["version"]
    client.stop()


def test_restart_gives_a_ready_worker(qgis_app):
    client = EngineClient(EngineSettings(python=checkout_interpreter(), kind="checkout"))
    first = client.wait_ready(timeout=120)
    pid = client._process.pid
    client.restart()
    second = client.wait_ready(timeout=120)
    assert client._process.pid != pid
    assert first["version"] == second["version"]
    client.stop()
    assert not client.running


def test_dock_tells_the_user_when_the_engine_cannot_start(qgis_iface):
    from mrhash_qgis.ui.dock import MrHashDock

    client = EngineClient(EngineSettings(python="/nonexistent/python"))
    dock = MrHashDock(qgis_iface, client)
    qgis_iface.messageBar().clear_messages()
    client.start()
    assert dock.engine_label.text().startswith("Engine failed: The engine interpreter "
                                               "/nonexistent/python does not exist")
    [message] = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert "MrHash › Settings" in message
    assert dock.setup_button.isHidden()  # another Python was chosen: Settings is the fix


def test_first_start_without_engine_offers_set_up(qgis_iface, monkeypatch, tmp_path):
    from mrhash_qgis.core import settings
    from mrhash_qgis.ui.dock import MrHashDock

    monkeypatch.setattr(settings, "managed_target", lambda: tmp_path / "engine")
    client = EngineClient(EngineSettings(python="", kind="none"))
    dock = MrHashDock(qgis_iface, client)
    qgis_iface.messageBar().clear_messages()
    client.start()
    assert client.fix == "setup"
    assert "not set up yet" in dock.engine_label.text()
    assert not dock.setup_button.isHidden() and dock.setup_button.text() == "Set up the engine"
    assert not qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)  # no alarm
    with pytest.raises(EngineError) as caught:
        client.request("status").wait(timeout=10)
    assert "Set up the engine" in caught.value.message


def test_requests_from_many_threads_reach_the_worker_whole(engine):
    """Processing algorithms and tasks send from their own threads: each line must arrive
    whole. Long lines (a big padding parameter the worker ignores) go out in many chunks; a
    line broken by another thread's is a `bad_request` without id, and its request times out."""
    padding = "x" * 200_000

    def ask(answers: list, n: int) -> None:
        for _ in range(n):
            try:
                answers.append(engine.call("status", {"padding": padding}, timeout=10))
            except EngineError as error:
                answers.append(error)

    answers: list = []
    threads = [threading.Thread(target=ask, args=(answers, 5)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 40
    assert [a for a in answers if isinstance(a, EngineError)] == []
    assert all(a["version"] == engine.info["version"] for a in answers)


def test_an_error_s_fix_comes_from_the_protocol(engine, trained, s2, tmp_path):
    """`fix` is the engine's machine-readable remedy; errors that name none have ''."""
    with pytest.raises(EngineError) as caught:
        engine.call("no_such_method", timeout=30)
    assert caught.value.fix == ""
    index = str(tmp_path / "index")
    params = {"folder": str(s2.primary_dir), "model": trained.model, "index": index}
    engine.call("index", params, timeout=120)
    with pytest.raises(EngineError) as caught:
        engine.call("index", {**params, "tile_size": 32}, timeout=120)
    assert caught.value.code == "bad_input" and caught.value.fix == FIX_REBUILD
