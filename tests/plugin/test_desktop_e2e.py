"""End to end in the REAL QGIS desktop under Xvfb: the plugin enabled in a throw-away profile,
a click query through the map tool, the hits and thumbnails, the dialogs, a tiny training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = ("qgis_main_window.png", "dock.png", "index_dialog.png", "wizard_1_primary.png",
         "wizard_2_auxiliary.png", "wizard_3_parameters.png", "wizard_4_training.png")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("xvfb-run") or not shutil.which("qgis"),
                    reason="needs the qgis desktop and xvfb-run (make install)")
def test_qgis_desktop_click_query(tmp_path):
    shots = tmp_path / "shots"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "qgis_desktop_driver.py"),
                          "--work", str(tmp_path / "work"), "--screenshots", str(shots)],
                         capture_output=True, text=True, timeout=600)
    status = json.loads((tmp_path / "work" / "status.json").read_text())
    assert run.returncode == 0, (status, run.stdout[-3000:], run.stderr[-3000:])
    steps = {step["step"]: step for step in status["steps"]}
    assert steps["engine"]["state"] == "ready"
    assert steps["hits"]["n"] == 8 and steps["hits"]["thumbnails"] == 8
    assert {"MrHash hits", "MrHash query"} <= set(steps["hits"]["layers"])
    assert "covers 100% of the primary" in steps["overlap"]["text"]
    assert steps["trained"]["error"] is None and steps["trained"]["losses"] > 0
    for name in SHOTS:
        assert (shots / name).stat().st_size > 5_000, name
