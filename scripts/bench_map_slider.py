"""The map's confidence slider in QGIS at 10,000 detected tiles: how long each move blocks the
main thread (the layers' filters set, the counts of what they keep, the label) and how long
until the canvas has drawn the result (docs/BENCHMARKS.md, "Map"), and the peak memory.

The map is the engine's own GeoPackage (mapping.py's `tiles` and `areas` layers, written with
its helpers, areas dissolved by `mapping.dissolve`) over a synthetic grid: SIDE x SIDE tiles of
0.005 degrees (about 550 m) on RASTERS rasters, scores a smooth random field in 0..1 so that
detections cluster into areas as real ones do; the canvas and the layers are the plugin's
(`Detections`, `MapPanel`), on a 1200 x 800 QgsMapCanvas showing all of it, rendered by QGIS's
parallel renderer as in the desktop.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench_map_slider.py --tiles 10000

The GeoPackage is written by a child process (`--write-map`): the engine (rasterio's GDAL)
never shares a process with QGIS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RASTERS = 16  # the grid cut into this many rasters (areas never cross a raster)
MOVES = (70, 90, 30, 60, 80, 40, 20, 10, 95, 55, 65, 75, 85, 45, 35, 25, 15, 5, 50)  # from 50


def write_map(path: Path, tiles: int) -> None:
    """A map GeoPackage of `tiles` tiles (a square grid) with the engine's writers."""
    import sqlite3

    import numpy as np
    import shapely
    from mrhash.index.export import gpkg_boxes, gpkg_create, gpkg_finish, gpkg_geometry, gpkg_insert
    from mrhash.search.mapping import AREAS, TILES, dissolve

    side = int(round(tiles ** 0.5))
    rng = np.random.default_rng(0)
    row, col = np.divmod(np.arange(side * side), side)
    # a smooth field: a few random waves, squashed into 0..1
    field = sum(np.sin(row * rng.uniform(0.05, 0.3) + rng.uniform(0, 6))
                * np.cos(col * rng.uniform(0.05, 0.3) + rng.uniform(0, 6)) for _ in range(4))
    scores = 1 / (1 + np.exp(-1.5 * field))
    west, south = 10.0 + col * 0.005, 45.0 + row * 0.005
    bounds = np.stack([west, south, west + 0.005, south + 0.005], axis=1)
    per = side // int(RASTERS ** 0.5)
    paths = [f"raster_{r // per}_{c // per}.tif" for r, c in zip(row, col, strict=True)]
    ids = np.arange(1, len(row) + 1)
    db = sqlite3.connect(path, isolation_level=None)
    gpkg_create(db, [TILES, AREAS])
    gpkg_insert(db, TILES, ids, ((int(i), g.tobytes(), int(i), p, 0, 0, 64, 64, float(s), 0.0,
                                  bool(s >= 0.5), None, "synthetic")
                                 for i, g, p, s in zip(ids, gpkg_boxes(bounds), paths, scores,
                                                       strict=True)), bounds)
    detected = scores >= 0.5  # as `mrhash map` merges them: at its default threshold
    areas = dissolve([p for p, d in zip(paths, detected, strict=True) if d], bounds[detected],
                     scores[detected])
    area_bounds = shapely.bounds(areas.polygons).reshape(-1, 4)
    fids = np.arange(1, len(areas.paths) + 1)
    gpkg_insert(db, AREAS, fids, ((int(f), gpkg_geometry(shapely.to_wkb(p, byte_order=1),
                                                         tuple(b)), path, int(n), float(k),
                                   float(top), float(mean))
                                  for f, p, b, path, n, k, top, mean in zip(
                                      fids, areas.polygons, area_bounds.tolist(), areas.paths,
                                      areas.n_tiles, areas.km2, areas.max_score,
                                      areas.mean_score, strict=True)), area_bounds)
    extent = (float(bounds[:, 0].min()), float(bounds[:, 1].min()),
              float(bounds[:, 2].max()), float(bounds[:, 3].max()))
    gpkg_finish(db, {TILES.name: extent, AREAS.name: extent})
    db.close()


def drawn(canvas) -> float:
    """Seconds until `canvas` has finished its next render."""
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    started = time.perf_counter()
    canvas.mapCanvasRefreshed.connect(loop.quit)
    QTimer.singleShot(30_000, loop.quit)
    loop.exec()
    canvas.mapCanvasRefreshed.disconnect(loop.quit)
    return time.perf_counter() - started


def counted(gpkg: Path) -> dict[str, int]:
    """Features of each layer (the GeoPackage's own count: a filtered layer has none)."""
    import sqlite3

    with sqlite3.connect(gpkg) as db:
        return {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for name in ("tiles", "areas")}


def measure(gpkg: Path) -> dict:
    """Slider moves through MOVES on the plugin's panel over a real canvas."""
    sys.path.insert(0, str(REPO))
    from qgis.core import QgsApplication, QgsProject, QgsRectangle
    from qgis.gui import QgsMapCanvas
    app = QgsApplication([], True)
    app.initQgis()
    from mrhash_qgis.core.detections import Detections
    from mrhash_qgis.ui.map_panel import MapPanel

    detections = Detections.open(gpkg)
    project = QgsProject.instance()
    detections.add_to(project)
    canvas = QgsMapCanvas()
    canvas.resize(1200, 800)
    canvas.setDestinationCrs(detections.tiles.crs())
    canvas.setLayers([detections.areas, detections.tiles])
    canvas.setParallelRenderingEnabled(True)
    canvas.setExtent(QgsRectangle(detections.tiles.extent()))
    canvas.show()
    panel = MapPanel()
    panel.show()

    canvas.refresh()
    first_render = drawn(canvas)
    panel.show_detections(detections, 0.5)
    drawn(canvas)
    blocked, rendered, labels = [], [], []
    for value in MOVES:
        started = time.perf_counter()
        panel.slider.setValue(value)  # what a drag does: filters set, counts, label
        blocked.append(time.perf_counter() - started)
        rendered.append(blocked[-1] + drawn(canvas))
        labels.append(panel.count_label.text())
    figures = {
        "features": counted(gpkg),
        "moves": len(MOVES), "first_render_s": round(first_render, 3),
        "main_thread_ms": {"median": round(1000 * statistics.median(blocked), 1),
                           "max": round(1000 * max(blocked), 1)},
        "until_drawn_ms": {"median": round(1000 * statistics.median(rendered), 1),
                           "max": round(1000 * max(rendered), 1)},
        "labels": labels[:3],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    canvas.setLayers([])
    project.clear()
    for widget in (canvas, panel):  # no widget or layer may outlive exitQgis
        widget.deleteLater()
    del detections, canvas, panel
    app.processEvents()
    app.exitQgis()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000, help="tiles in the map")
    parser.add_argument("--write-map", help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.write_map:
        sys.path.insert(0, str(REPO / "engine"))
        write_map(Path(args.write_map), args.tiles)
        return
    with tempfile.TemporaryDirectory(prefix="mrhash-bench-slider-") as tmp:
        gpkg = Path(tmp) / "map.gpkg"
        subprocess.run([sys.executable, __file__, "--tiles", str(args.tiles), "--write-map",
                        str(gpkg)], check=True)
        figures = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "load_at_start": [round(v, 2) for v in os.getloadavg()],
                   "gpkg_mb": round(gpkg.stat().st_size / 2**20, 1), **measure(gpkg),
                   "load_at_end": [round(v, 2) for v in os.getloadavg()]}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
