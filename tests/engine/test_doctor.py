"""`mrhash doctor` and the worker's `doctor`: every runtime requirement is checked, and a
missing one is reported by its package name (what to install), never as a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from mrhash.app.doctor import check
from mrhash.app.worker import error_payload
from mrhash.dependencies import OPTIONAL_PACKAGES, RUNTIME_PACKAGES
from mrhash.errors import MissingDependency
from test_worker import Engine

ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_are_declared_once_and_completely():
    """pyproject's dependencies with its extras, requirements.txt's pins and doctor's checks
    name the same packages (attrs is pinned only for rasterio's affine); the extras are the
    optional packages, each under the extra the engine's message names."""
    project = tomllib.loads((ENGINE / "pyproject.toml").read_text())["project"]
    extras = {extra: {_name(r) for r in requirements}
              for extra, requirements in project["optional-dependencies"].items()}
    declared = {_name(r) for r in project["dependencies"]}.union(*extras.values())
    assert {(extra, _name(RUNTIME_PACKAGES[module]))
            for module, (extra, _) in OPTIONAL_PACKAGES.items()} == {
        (extra, name) for extra, names in extras.items() for name in names}
    pinned = {_name(line) for line in (ENGINE / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    checked = {_name(package) for package in RUNTIME_PACKAGES.values()}
    assert declared == pinned
    assert checked == pinned - {"attrs"}
    assert "pillow" in checked  # thumbnails need it


def test_doctor_command_reports_every_package(tmp_path):
    report_path = tmp_path / "doctor.json"
    run = subprocess.run([sys.executable, "-m", "mrhash", "doctor", "--json", str(report_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] and not report["problems"]
    assert set(report["packages"]) == set(RUNTIME_PACKAGES.values())
    assert all(report["packages"].values())
    assert report["gdal"] and report["proj"] and report["weights_tensors"] > 100
    assert report["backbones"]["efficientnet-lite0"]["feature_dim"] == 1280
    assert report["cuda_available"] in (True, False)
    assert "engine OK" in run.stderr


def test_worker_answers_doctor():
    engine = Engine()
    try:
        engine.read()  # ready
        result = engine.request("d", "doctor")["result"]
        assert result["ok"] and result["device"] == "cpu"
        assert result["packages"]["Pillow"]
    finally:
        engine.close()


def test_a_missing_module_is_named_by_its_package():
    error = MissingDependency.of(ModuleNotFoundError("No module named 'PIL'", name="PIL"))
    assert (error.code, error.module, error.package) == ("missing_dependency", "PIL", "Pillow")
    payload = error_payload(ModuleNotFoundError("No module named 'faiss.x'", name="faiss.x"))
    assert payload == {"code": "missing_dependency", "module": "faiss", "package": "faiss-cpu",
                       "message": "the engine's Python lacks the package faiss-cpu "
                                  "(import faiss failed)"}


def test_worker_that_cannot_start_says_which_package_is_missing(tmp_path):
    """A torch that cannot be imported (shadowed here by a broken module on PYTHONPATH) is
    reported on the protocol as a `failed` event naming the package, and the process exits."""
    (tmp_path / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", "
                                       "name='torch')\n")
    run = subprocess.run([sys.executable, "-m", "mrhash", "serve"], input="", text=True,
                         capture_output=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1
    [line] = run.stdout.splitlines()
    event = json.loads(line)
    assert event["event"] == "failed"
    assert event["error"]["code"] == "missing_dependency"
    assert event["error"]["package"] == "torch"


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    """Without the dask extra the engine still checks out (doctor lists it as optional), and
    what needs it says which extra to install."""
    for module in ("dask", "distributed"):  # what `import` finds when neither is installed
        monkeypatch.setitem(sys.modules, module, None)
    report = check()
    assert report.ok, report.problems
    assert report.missing_optional == [
        f"the engine's Python lacks the package {name} (import {name} failed); indexing on a "
        "Dask cluster needs it: install the engine with `pip install mrhash[dask]`"
        for name in ("dask", "distributed")]
