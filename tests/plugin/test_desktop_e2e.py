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
         "wizard_2_auxiliary.png", "wizard_3_parameters.png", "wizard_4_training.png",
         "qgis_refined.png", "dock_marked.png", "dock_refined.png")


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
    # the analyst's loop: mark, refine, save the project, reopen it, export
    # the counts are the analyst's marks (the place queried is not counted)
    assert (steps["marked"]["relevant"], steps["marked"]["irrelevant"]) == (2, 1)
    assert steps["refined"]["n"] == 8 and steps["refined"]["marked_returned"] == 0
    reopened = steps["reopened"]
    assert reopened["hits"] == reopened["saved_hits"] > 0 and reopened["thumbnails"] == 8
    assert reopened["marks"] == 3
    assert steps["exported"]["valid"] and steps["exported"]["features"] == reopened["hits"]
    assert "covers 100% of the primary" in steps["overlap"]["text"]
    assert steps["trained"]["error"] is None and steps["trained"]["losses"] > 0
    for name in SHOTS:
        assert (shots / name).stat().st_size > 5_000, name


FIRST_HOUR_SHOTS = ("first_hour_1_engine_ready.png", "first_hour_2_proposal.png",
                    "first_hour_3_learning.png", "first_hour_4_ready_to_click.png",
                    "first_hour_5_first_hits.png", "map_1_detections.png", "map_2_checked.png",
                    "map_3_updated_exported.png", "map_4_reopened.png")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("xvfb-run") or not shutil.which("qgis"),
                    reason="needs the qgis desktop and xvfb-run (make install)")
def test_first_hour_in_the_desktop(tmp_path):
    """From "Engine ready" to hits in the real desktop: Start with my imagery…, the folder
    typed, Start, a click on the map — 4 actions, and no window but QGIS's and the dialog;
    then the map of every place like them: marks, Map all like these, the slider, Check
    detections and a ✗, Update, export (GeoPackage, GeoParquet), the project reopened."""
    shots = tmp_path / "shots"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "qgis_desktop_driver.py"),
                          "--first-hour", "--work", str(tmp_path / "work"),
                          "--screenshots", str(shots)],
                         capture_output=True, text=True, timeout=900)
    status = json.loads((tmp_path / "work" / "status.json").read_text())
    assert run.returncode == 0, (status, run.stdout[-3000:], run.stderr[-3000:])
    steps = {step["step"]: step for step in status["steps"]}
    assert steps["engine"]["start_visible"] and steps["engine"]["start_bold"]
    assert "Sentinel-2" in steps["proposal"]["text"] and steps["proposal"]["windows"] == []
    assert "4 (red), 3 (green), 2 (blue)" in steps["proposal"]["text"]
    built = steps["built"]
    assert built["index"].endswith("my imagery_index") and built["tool"] == "QueryMapTool"
    assert "Queries use the index's model" in built["index_label"]
    first = steps["first hits"]
    assert first["actions"] == 4 and first["n"] == 12 and first["thumbnails"] == 12
    assert first["windows"] == []
    mapped, checked = steps["map"], steps["checked"]
    assert (mapped["relevant"], mapped["irrelevant"]) == (2, 1)  # the buttons marked them
    assert mapped["all_in_view"]  # the canvas zoomed out to the archive's detections
    assert "at 0.50" in mapped["counts"] and "at 0.70" in checked["counts"]  # the keyboard
    assert checked["shown"] > 0 and checked["marked"] == "irrelevant"
    assert checked["irrelevant"] == 2 and "Update the map" in checked["status"]
    doubt = [abs(score - 0.70) for score in checked["scores"]]
    assert doubt == sorted(doubt)
    assert steps["updated"]["rounds"] == 2 and "at 0.70" in steps["updated"]["counts"]
    reopened = steps["reopened"]
    assert reopened["files"] == ["greenhouses.gpkg", "greenhouses_areas.parquet",
                                 "greenhouses_tiles.parquet"]
    assert reopened["has_map"] and reopened["counts"] == steps["updated"]["counts"]
    assert all(step["windows"] == [] for step in (mapped, checked, reopened))
    for name in FIRST_HOUR_SHOTS:
        assert (shots / name).stat().st_size > 5_000, name


ZIP_SHOTS = ("setup_1_not_set_up.png", "setup_2_progress_dock.png",
             "setup_3_progress_settings.png", "setup_4_first_query.png", "setup_5_dock_ready.png",
             "setup_6_settings_ready.png")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("xvfb-run") or not shutil.which("qgis"),
                    reason="needs the qgis desktop and xvfb-run (make install)")
def test_zip_install_sets_up_its_engine_and_queries(tmp_path):
    """The zip in a fresh profile (no checkout, no .venv): Set up the engine in the dock builds
    the private environment from the package index, then a click query has thumbnails."""
    shots = tmp_path / "shots"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "qgis_desktop_driver.py"),
                          "--from-zip", "--timeout", "1500", "--work", str(tmp_path / "work"),
                          "--screenshots", str(shots)],
                         capture_output=True, text=True, timeout=1800)
    status = json.loads((tmp_path / "work" / "status.json").read_text())
    assert run.returncode == 0, (status, run.stdout[-3000:], run.stderr[-3000:])
    steps = {step["step"]: step for step in status["steps"]}
    assert steps["before set-up"]["fix"] == "setup"
    assert "not set up yet" in steps["before set-up"]["label"]
    assert steps["engine"]["label"].startswith("Engine ready · cpu")
    assert steps["hits"]["n"] == 8 and steps["hits"]["thumbnails"] == 8
    assert steps["test engine"]["result"].startswith("OK: mrhash")
    report = steps["report"]["text"]
    assert "Private environment: ready" in report and "Pillow 13.0.0" in report
    target = tmp_path / "work" / "profile" / "profiles" / "default" / "mrhash" / "engine"
    assert (target / "mrhash-engine.json").exists()
    for name in ZIP_SHOTS:
        assert (shots / name).stat().st_size > 5_000, name
