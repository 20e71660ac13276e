"""The engine's private environment, built for real from the package index reachable here:
headless from the unzipped plugin alone, then used for train/index/query; broken and repaired
through the plugin's task; and every way a set-up can fail (no Python, no network, a wheel
folder missing a package, a full disk, cancel) ends in a clear message, never in an
environment taken for a working one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import wait_for

from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import FIX_REPAIR, STATE_READY, EngineClient, EngineError
from mrhash_qgis.core.environment import (
    STAMP_NAME,
    SetupError,
    SetupOptions,
    build_device,
    engine_wheel,
    inspect_env,
    nvidia_gpu,
    remove_env,
    setup_engine,
    torch_index,
)

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = "/usr/bin/python3"  # Debian's, the one QGIS runs on here
# pip with no configuration and every connection going to a closed loopback port: a machine
# with no network (nothing leaves this machine)
NO_NETWORK = {"PIP_CONFIG_FILE": os.devnull, "HTTP_PROXY": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
              "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="session")
def unzipped_plugin(tmp_path_factory) -> Path:
    """The plugin as a user gets it: `make package`'s zip, unpacked (no checkout, no .venv)."""
    out = tmp_path_factory.mktemp("zip")
    subprocess.run([BASE_PYTHON, str(REPO / "scripts" / "package_plugin.py"), "--out", str(out)],
                   check=True, capture_output=True)
    [package] = out.glob("mrhash_qgis-*.zip")
    plugins = tmp_path_factory.mktemp("plugins")
    zipfile.ZipFile(package).extractall(plugins)
    return plugins


@pytest.fixture(scope="session")
def built_env(unzipped_plugin, tmp_path_factory) -> dict:
    """What an administrator without internet does: download the engine's wheels from the
    package index (the zip's requirements), then, with the network cut,
    `python3 -m mrhash_qgis.setup_engine --target DIR --find-links WHEELS` with only the
    unzipped plugin on PYTHONPATH, run from a folder holding a decoy `mrhash` package. (The
    desktop test builds its environment from the package index itself.)"""
    work = tmp_path_factory.mktemp("headless")
    (work / "mrhash").mkdir()
    (work / "mrhash" / "__init__.py").write_text("raise ImportError('decoy')\n")
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "-r",
                    str(unzipped_plugin / "mrhash_qgis" / "engine" / "requirements.txt")],
                   check=True, capture_output=True, timeout=900)
    target = work / "engine env"  # a space in the path, as in many Windows profiles
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_FIND_LINKS")}
    env.update(NO_NETWORK, PYTHONPATH=str(unzipped_plugin))
    started = time.monotonic()
    run = subprocess.run([BASE_PYTHON, "-m", "mrhash_qgis.setup_engine", "--target",
                          str(target), "--find-links", str(wheels)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1500)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"\nheadless set-up: {seconds:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
    return {"target": target, "stdout": run.stdout, "work": work, "seconds": seconds,
            "python": target / "bin" / "python"}


def _mrhash(env: dict, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([str(env["target"] / "bin" / "mrhash"), *args], cwd=env["work"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (args, run.stderr[-2000:])
    return run


@pytest.fixture(scope="session")
def env_index(built_env, s2, tmp_path_factory) -> Path:
    """A tiny model trained and the archive indexed with the new environment's `mrhash`."""
    work = tmp_path_factory.mktemp("env_index")
    model, index = work / "model.safetensors", work / "index"
    _mrhash(built_env, "train", "--primary", str(s2.primary_dir), "--aux-source",
            f"rededge={s2.aux_dir}", "--bits", "16", "--clusters", "4", "--epochs", "1",
            "--ae-epochs", "2", "--device", "cpu", "-o", str(model))
    _mrhash(built_env, "index", str(s2.archive_dir), "--model", str(model), "--index", str(index))
    return index


def test_headless_setup_then_train_index_query_with_thumbnails(built_env, env_index, tmp_path):
    lines = built_env["stdout"].splitlines()
    assert lines[0].startswith("  0% Setting up the MrHash engine")
    assert "100% Engine ready" in built_env["stdout"]
    assert lines[-1].startswith("engine ready: ")
    stamp = json.loads((built_env["target"] / STAMP_NAME).read_text())
    assert stamp["device"] == "cpu" and stamp["torch"].startswith("2.13.0")
    assert stamp["engine"] == stamp["plugin"]
    assert inspect_env(built_env["target"]).state == "ready"

    hits_path = tmp_path / "hits.json"
    _mrhash(built_env, "query", "--index", str(env_index), "--tile", "1", "-k", "5",
            "--thumbnails", "--json", str(hits_path))
    hits = json.loads(hits_path.read_text())["hits"]
    assert len(hits) == 5 and hits[0]["distance"] == 0
    assert all(hit["thumbnail"] and Path(hit["thumbnail"]).stat().st_size > 100 for hit in hits)


def test_the_plugin_uses_the_profiles_environment(built_env, monkeypatch, qgis_app):
    monkeypatch.setattr(settings, "managed_target", lambda: built_env["target"])
    settings.ENGINE_PYTHON.put("")
    engine = settings.EngineSettings.load()
    assert engine.kind == "managed" and engine.python == str(built_env["python"])
    assert "PYTHONPATH" not in engine.environment()  # the environment's own engine runs
    client = EngineClient(engine)
    try:
        assert client.wait_ready(timeout=180)["version"]
        report = client.call("doctor", timeout=300)
        assert report["ok"] and report["executable"].startswith(str(built_env["target"]))
    finally:
        client.stop()


def test_broken_environment_is_named_and_repaired_from_the_dock(built_env, env_index,
                                                              monkeypatch, qgis_iface):
    """Pillow uninstalled: a thumbnail query names the package and the fix; an engine of
    another version is refused with Repair offered; the dock's Repair fixes both."""
    from mrhash_qgis.ui.dock import MrHashDock

    monkeypatch.setattr(settings, "managed_target", lambda: built_env["target"])
    settings.ENGINE_PYTHON.put("")
    python = str(built_env["python"])
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "pillow"], check=True,
                   capture_output=True)
    client = EngineClient()
    try:
        client.wait_ready(timeout=180)
        with pytest.raises(EngineError) as caught:
            client.call("query", {"index": str(env_index), "tile": 1, "k": 3,
                                  "thumbnails": True}, timeout=120)
        assert caught.value.code == "missing_dependency"
        assert "lacks the package Pillow" in caught.value.message
        assert "Repair" in caught.value.message
        doctor = client.call("doctor", timeout=300)
        assert not doctor["ok"] and doctor["problems"][0]["package"] == "Pillow"
        client.stop()

        installed = Path(subprocess.run(
            [python, "-c", "import mrhash; print(mrhash.__file__)"], capture_output=True,
            text=True, check=True, cwd=built_env["work"].parent).stdout.strip())
        text = installed.read_text()
        installed.write_text(text.replace('__version__ = "', '__version__ = "0.0.'))
        dock = MrHashDock(qgis_iface, client)
        client.start()
        wait_for(lambda: not dock.setup_button.isHidden(), 120, "the version check")
        assert client.fix == FIX_REPAIR and "does not match this plugin" in client.last_error
        assert not dock.setup_button.isHidden() and dock.setup_button.text() == "Repair the engine"

        finished: list[tuple[bool, str]] = []
        dock.setup.finished.connect(lambda ok, message: finished.append((ok, message)))
        dock.setup_button.click()
        assert dock.setup_button.text() == "Cancel set-up" and dock.setup.running
        wait_for(lambda: finished, 900, "the repair")
        assert finished[0][0], finished
        wait_for(lambda: dock.engine_label.text().startswith("Engine ready · cpu"), 180,
                 "the repaired engine in the dock")
        assert client.state == STATE_READY
        assert dock.setup_button.isHidden()
        assert client.call("doctor", timeout=300)["ok"]
        hits = client.call("query", {"index": str(env_index), "tile": 1, "k": 3,
                                     "thumbnails": True}, timeout=120)["hits"]
        assert all(hit["thumbnail"] for hit in hits)
    finally:
        client.stop()


def test_cancel_in_the_middle_leaves_an_environment_never_taken_for_working(
        monkeypatch, qgis_iface, tmp_path):
    from mrhash_qgis.core.setup_task import EngineSetup

    target = tmp_path / "engine"
    monkeypatch.setattr(settings, "managed_target", lambda: target)
    settings.SETUP_PYTHON.put(BASE_PYTHON)
    client = EngineClient()
    setup = EngineSetup(client)
    steps: list[tuple[float, str]] = []
    finished: list[tuple[bool, str]] = []
    setup.stepped.connect(lambda fraction, message: steps.append((fraction, message)))
    setup.finished.connect(lambda ok, message: finished.append((ok, message)))
    try:
        setup.start(fresh=True)
        # cancel once pip is at work on the requirements (QGIS's event loop keeps running)
        wait_for(lambda: any(f >= 0.12 for f, _ in steps), 300, "pip to start")
        setup.cancel()
        wait_for(lambda: finished, 120, "the cancelled task")
    finally:
        settings.SETUP_PYTHON.put("")
    ok, message = finished[0]
    assert not ok and "cancelled" in message
    state = inspect_env(target)
    assert state.state == "incomplete" and not state.usable
    assert not (target / STAMP_NAME).exists()
    assert settings.EngineSettings.load().kind != "managed"
    assert "cancelled" in (target / "setup.log").read_text()
    client.stop()


def test_no_usable_base_python(tmp_path):
    for python, fragment in (("/nonexistent/python3", "is not a file"),
                             (shutil.which("true"), "not a usable Python")):
        with pytest.raises(SetupError) as caught:
            setup_engine(SetupOptions(tmp_path / "env", python=python))
        assert caught.value.code == "no_python"
        assert fragment in caught.value.message and "Base Python" in caught.value.message
        assert inspect_env(tmp_path / "env").state == "incomplete"
        assert not (tmp_path / "env" / "bin").exists()


def test_no_network_and_no_wheel_folder(tmp_path, monkeypatch):
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(SetupError) as caught:
        setup_engine(SetupOptions(tmp_path / "env", python=BASE_PYTHON))
    assert caught.value.code == "no_network", caught.value.message
    assert "wheel folder" in caught.value.message and "setup.log" in caught.value.message
    assert not (tmp_path / "env" / STAMP_NAME).exists()


def test_wheel_folder_missing_a_package(tmp_path, monkeypatch):
    """An offline wheel folder with the engine's numpy but no torch: the message names torch."""
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                    str(wheels), "numpy==1.26.4"], check=True,
                   env={k: v for k, v in os.environ.items() if k not in NO_NETWORK})
    with pytest.raises(SetupError) as caught:
        setup_engine(SetupOptions(tmp_path / "env", python=BASE_PYTHON, find_links=str(wheels)))
    assert caught.value.code == "package_unavailable", caught.value.message
    assert "torch==2.13.0 cannot be found" in caught.value.message
    assert not (tmp_path / "env" / STAMP_NAME).exists()


def test_missing_wheel_folder_is_named(tmp_path):
    with pytest.raises(SetupError) as caught:
        setup_engine(SetupOptions(tmp_path / "env", python=BASE_PYTHON,
                                  find_links=str(tmp_path / "no-wheels")))
    assert caught.value.code == "bad_option" and "no-wheels" in caught.value.message


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB file system (tmpfs), where the environment cannot fit."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk(small_disk):
    target = small_disk / "env"
    with pytest.raises(SetupError) as caught:
        setup_engine(SetupOptions(target, python=BASE_PYTHON))
    assert caught.value.code == "disk_full"
    assert "needs about 2.5 GB" in caught.value.message and str(small_disk) in caught.value.message
    assert inspect_env(target).state == "incomplete"
    assert sorted(p.name for p in target.iterdir()) == ["setup.log"]


def test_an_unwritable_target_is_refused(tmp_path):
    with pytest.raises(SetupError) as caught:
        setup_engine(SetupOptions(Path("/proc/mrhash-env"), python=BASE_PYTHON))
    assert caught.value.code == "not_writable" and "/proc/mrhash-env" in caught.value.message


def test_states_of_an_environment_folder(tmp_path):
    target = tmp_path / "env"
    assert inspect_env(target).state == "missing"
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").write_text("")
    assert inspect_env(target).state == "incomplete"  # no stamp: a half-built environment
    stamp = {"engine": "0.0.1", "requirements": "0", "device": "cpu"}
    (target / STAMP_NAME).write_text(json.dumps(stamp))
    state = inspect_env(target)
    assert state.state == "outdated" and state.usable and "Repair" in state.message


def test_remove_deletes_only_an_environment(tmp_path):
    precious = tmp_path / "my data"
    precious.mkdir()
    (precious / "a.tif").write_text("x")
    with pytest.raises(SetupError) as caught:
        remove_env(precious)
    assert caught.value.code == "not_an_environment" and (precious / "a.tif").exists()
    env = tmp_path / "env"
    env.mkdir()
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    remove_env(env)
    assert not env.exists()


def test_torch_build_follows_the_gpu(tmp_path, monkeypatch):
    """auto -> cuda when nvidia-smi names a GPU (a stand-in here: this machine has none),
    else cpu; an explicit choice wins; the CPU build comes from PyTorch's CPU index."""
    assert build_device("auto") == "cpu" and nvidia_gpu() == ""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert nvidia_gpu() == "NVIDIA H200"
    assert build_device("auto") == "cuda" and build_device("cpu") == "cpu"
    assert torch_index("cpu").endswith("/whl/cpu") and torch_index("cuda") == ""  # Linux
    with pytest.raises(SetupError) as caught:
        build_device("tpu")
    assert caught.value.code == "bad_option"


def test_engine_wheel_holds_the_bundled_engine(tmp_path):
    wheel = engine_wheel(REPO / "engine", tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "mrhash/app/worker.py" in names and "mrhash/app/commands/doctor.py" in names
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mrhash = mrhash.app.cli:main" in entry
