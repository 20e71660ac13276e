"""`make package` builds an installable zip whose plugin finds the bundled engine."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from plugin_files import shared_files  # noqa: E402


def test_zip_holds_plugin_and_engine_and_the_engine_is_found(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    [package] = tmp_path.glob("mrhash_qgis-*.zip")
    archive = zipfile.ZipFile(package)
    names = archive.namelist()
    assert len(names) == len(set(names))  # the checkout's copies are not added a second time
    assert "mrhash_qgis/metadata.txt" in names and "mrhash_qgis/LICENSE" in names
    # the shared files come from their sources (the contract also as the engine's
    # mrhash_contract), so QGIS finds the metadata, icons and contract
    assert "mrhash_qgis/resources/icons/mrhash.svg" in names
    for source, inside in shared_files(REPO):
        assert archive.read(f"mrhash_qgis/{inside}") == source.read_bytes(), inside
    for source in (REPO / "engine" / "mrhash_contract").glob("*.py"):
        assert archive.read(f"mrhash_qgis/engine/mrhash_contract/{source.name}") == \
            source.read_bytes()
    assert "mrhash_qgis/engine/mrhash/app/worker.py" in names
    # the research beside the engine (scores against baselines, benchmarks) stays out
    assert not [n for n in names if "research" in n or "benchmarks" in n
                or n.endswith(("/evaluate.py", "/baselines.py"))]
    assert "mrhash_qgis/engine/requirements.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    zipfile.ZipFile(package).extractall(tmp_path / "plugins")
    # the unpacked plugin's settings put its bundled engine first on the engine's path
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from mrhash_qgis.core.settings import EngineSettings;"
        "print(json.dumps(EngineSettings(sys.executable).environment()['PYTHONPATH']))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "plugins")],
                         capture_output=True, text=True, check=True).stdout
    pythonpath = out.strip().strip('"')
    engine_dir = str(tmp_path / "plugins" / "mrhash_qgis" / "engine")
    assert pythonpath.split(":")[0] == engine_dir
    where = subprocess.run([sys.executable, "-c", "import mrhash; print(mrhash.__file__)"],
                           env={"PYTHONPATH": pythonpath}, capture_output=True, text=True,
                           check=True).stdout
    assert where.startswith(engine_dir)
