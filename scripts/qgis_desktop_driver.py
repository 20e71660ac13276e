"""Drive the QGIS desktop end-to-end checks: prepare real imagery + model + index (engine CLI),
make a throw-away profile with the plugin enabled, run
`xvfb-run -a qgis --nologo --noversioncheck --profiles-path P --code SCRIPT`,
and report its status.json. Exit code 0 when QGIS reported success.

SCRIPT is qgis_desktop_e2e.py (the checkout's plugin and engine: query, dialogs, wizard),
with --first-hour qgis_first_hour_e2e.py (the guided start, actions counted), or, with
--from-zip, qgis_zip_e2e.py: the plugin installed from `make package`'s zip into a fresh
profile, no checkout or .venv reachable, and the engine set up from the plugin's dock."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_data import REPO, Demo, prepare, rgb_centre_point  # noqa: E402
from package_plugin import build  # noqa: E402
from qgis_profile import make_profile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build" / "e2e")
    parser.add_argument("--screenshots", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--timeout", type=float, default=400)
    parser.add_argument("--from-zip", action="store_true",
                        help="install the plugin zip in the profile and set the engine up there")
    parser.add_argument("--first-hour", action="store_true",
                        help="the analyst's first hour: Start with my imagery on a folder of "
                        "real 13-band Sentinel-2 GeoTIFFs, then a click")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    demo = prepare(Demo(work / "data"), size_px=320, offset_px=640, scene_px=1280)
    profile_root = work / "profile"
    shutil.rmtree(profile_root, ignore_errors=True)
    make_profile(profile_root, plugin_zip=build(work / "dist") if args.from_zip else None)
    script = ("qgis_zip_e2e.py" if args.from_zip else "qgis_first_hour_e2e.py"
              if args.first_hour else "qgis_desktop_e2e.py")
    archive13 = work / "my imagery"  # the analyst's archive: 13-band files that name no band
    shutil.rmtree(archive13, ignore_errors=True)
    archive13.mkdir(parents=True)
    for tif in sorted((REPO / "tests" / "data" / "eurosat_ms_mini").glob("*/*.tif"))[::2]:
        shutil.copy2(tif, archive13 / tif.name)
    shutil.rmtree(work / "my imagery_index", ignore_errors=True)
    status_path = work / "status.json"
    status_path.unlink(missing_ok=True)
    (work / "wizard_model.safetensors").unlink(missing_ok=True)
    config = {"scene": str(demo.scene), "primary": str(demo.rgb), "aux": str(demo.aux),
              "archive": str(demo.archive), "index": str(demo.index), "model": str(demo.model),
              "point": list(rgb_centre_point(demo)), "status": str(status_path),
              "screenshots": str(args.screenshots.resolve()),
              "wizard_model": str(work / "wizard_model.safetensors"),
              "project": str(work / "analysis.qgz"), "export": str(work / "exported_hits.gpkg"),
              "archive13": str(archive13)}
    config_path = work / "e2e_config.json"
    config_path.write_text(json.dumps(config, indent=2))
    # a real X display; nothing of this checkout's venv reaches QGIS
    venv_bin = str(REPO / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    env["MRHASH_E2E_CONFIG"] = str(config_path)
    # a home of its own: what the plugin saves by default (~/MrHash) stays in the work folder
    (work / "home").mkdir(exist_ok=True)
    env["HOME"] = str(work / "home")
    env["MRHASH_E2E_SCRIPTS"] = str(Path(__file__).resolve().parent)
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo",
               "--noversioncheck", "--profiles-path", str(profile_root),
               "--code", str(Path(__file__).with_name(script))]
    print("$", " ".join(command), flush=True)
    log = (work / "qgis.log").open("w")
    try:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    status = json.loads(status_path.read_text()) if status_path.exists() else {"ok": False}
    status["qgis_exit"] = code
    print(json.dumps(status, indent=2))
    return 0 if status.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
