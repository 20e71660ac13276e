"""The client against the real `mrhash serve` worker: status, errors, start failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qgis.core import Qgis

from mrhash_qgis.core.engine_client import STATE_FAILED, EngineClient, EngineError
from mrhash_qgis.core.settings import EngineSettings, default_interpreter


def test_default_interpreter_is_the_checkout_venv():
    repo = Path(__file__).resolve().parents[2]
    assert default_interpreter() == str(repo / ".venv" / "bin" / "python")


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


def test_interpreter_without_engine_says_what_to_install(qgis_app):
    client = EngineClient(EngineSettings(python=sys.base_prefix + "/bin/python3"))
    with pytest.raises(EngineError) as caught:
        client.wait_ready(timeout=30)
    assert "no MrHash engine" in caught.value.message
    assert "No module named mrhash" in caught.value.message
    client.stop()


def test_restart_gives_a_ready_worker(qgis_app):
    client = EngineClient(EngineSettings(python=default_interpreter()))
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
    assert "MrHash > Settings" in message
