"""The Processing algorithms from `qgis_process`, the standalone runner, in its own process:
the plugin is enabled in a throw-away profile and the query runs on the session's index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from qgis_profile import make_profile  # noqa: E402

# Debian's /usr/bin/qgis_process wrapper passes --noversioncheck (from /etc/default/qgis),
# which qgis_process 3.22 rejects; the binary itself works.
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")


def qgis_process(profile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QGIS_CUSTOM_CONFIG_PATH": str(profile), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(QGIS_PROCESS is None, reason="qgis_process is not installed")
def test_query_at_point_from_qgis_process(built_index, s2, tmp_path):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    extent = QgsRasterLayer(str(s2.rgb), "rgb").extent()
    # the centre of an indexed 64 px tile (10 m pixels) of the archive's copy of this crop
    point = f"{extent.xMinimum() + 96 * 10},{extent.yMaximum() - 160 * 10} [EPSG:32618]"
    profile = make_profile(tmp_path / "qgis_process_profile")
    listing = qgis_process(profile, "list")
    assert "mrhash:queryatpoint" in listing.stdout, listing.stderr
    assert "mrhash:trainmodel" in listing.stdout and "mrhash:buildindex" in listing.stdout

    hits = tmp_path / "hits.gpkg"
    index = built_index.index_widget.filePath()
    run = qgis_process(profile, "run", "mrhash:queryatpoint", "--json",
                       f"--INDEX={index}", f"--POINT={point}", "--K=3",
                       f"--OUTPUT={hits}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["results"]["OUTPUT"] == str(hits)

    layer = QgsVectorLayer(str(hits), "hits")
    rows = sorted((f["rank"], f["distance"], f["source"]) for f in layer.getFeatures())
    assert [rank for rank, _, _ in rows] == [1, 2, 3]
    assert rows[0][1] == 0  # the archive holds a copy of the clicked place
    assert all(Path(source).parent.name == "archive" for _, _, source in rows)
    del layer

    bad = qgis_process(profile, "run", "mrhash:queryatpoint", f"--INDEX={tmp_path / 'nowhere'}",
                       f"--POINT={point}", f"--OUTPUT={tmp_path / 'x.gpkg'}")
    assert bad.returncode != 0
    assert "nowhere" in bad.stdout + bad.stderr and "Traceback" not in bad.stdout + bad.stderr
