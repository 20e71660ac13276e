"""The wizard's remote auxiliary sources in real QGIS with the real engine worker, against a
real HTTP server on 127.0.0.1 (tests/engine/loopback_http.py): the STAC dialog asks the engine
for the items covering the primary and draws them; an XYZ web layer of the project becomes a
GDAL TMS description; a tiny model is trained with both, the pull shown in the training's
progress and its size in the result. Renders the auxiliary page and the dialog to PNG when
MRHASH_SHOTS names a folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import TINY_TRAINING, wait_for
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QDate

from mrhash_qgis.core.web_sources import source_description, xyz_xml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import loopback_http as lh  # noqa: E402 (the engine tests' server and data)

DATES = ("2021-01-01", "2021-12-31")




@pytest.fixture(scope="module")
def server(tmp_path_factory, sentinel2_dir):
    """The served data (`server.data`) and its server, for the whole module."""
    yield from lh.serving(lh.make_in_subprocess(tmp_path_factory.mktemp("served"), sentinel2_dir))


@pytest.fixture
def primary_folder(server, tmp_path) -> Path:
    folder = tmp_path / "primary"
    folder.mkdir()
    for path in server.data.primary:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _shot(widget, name: str) -> None:
    folder = os.environ.get("MRHASH_SHOTS")
    if folder:
        for _ in range(20):  # labels whose text just grew get their height first
            QCoreApplication.processEvents()
        widget.grab().save(str(Path(folder) / name))


def test_web_layer_descriptions() -> None:
    xml = source_description("wms", {"type": "xyz", "url": "https://t.x.org/{z}/{x}/{-y}.png",
                                     "zmax": "17"})
    assert xml == xyz_xml("https://t.x.org/{z}/{x}/{-y}.png", 17)
    assert "${z}/${x}/${y}.png" in xml and "<YOrigin>bottom</YOrigin>" in xml
    wmts = source_description("wms", {"url": "https://x.org/wmts?SERVICE=WMTS",
                                      "layers": "ortho", "tileMatrixSet": "EPSG:3857"})
    assert wmts == "WMTS:https://x.org/wmts?SERVICE=WMTS,layer=ortho,tilematrixset=EPSG:3857"
    wms = source_description("wms", {"url": "https://x.org/wms?a=1&b=2", "layers": ["l1"],
                                     "crs": "EPSG:4326", "format": "image/png"},
                             (0.0, 40.0, 2.0, 41.0))
    assert '<Service name="WMS">' in wms and "a=1&amp;b=2" in wms and "<Layers>l1" in wms
    assert source_description("wcs", {"url": "https://x.org/wcs", "identifier": "dem"}) == (
        "WCS:https://x.org/wcs?coverage=dem")
    assert source_description("wms", {"type": "xyz"}) is None


def test_stac_dialog_finds_and_draws_items(qgis_iface, engine, server) -> None:
    from mrhash_qgis.ui.stac_dialog import StacDialog

    canvas = qgis_iface.mapCanvas()
    dialog = StacDialog(engine, canvas, lambda: (-180.0, -90.0, 180.0, 90.0))
    dialog.url_edit.setText(f"{server.url}/stac/collection.json")
    dialog.assets_edit.setText("B05,B8A,B11")
    dialog.show()
    dialog.search()
    wait_for(lambda: dialog.search_button.isEnabled(), 60, "the STAC search")
    assert dialog.list.count() == 4 and len(dialog.bands) == 4  # drawn on the canvas
    dialog.dates_check.setChecked(True)
    dialog.date_from.setDate(QDate.fromString(DATES[0], "yyyy-MM-dd"))
    dialog.date_to.setDate(QDate.fromString(DATES[1], "yyyy-MM-dd"))
    dialog.cloud_spin.setValue(20)
    dialog.search()
    wait_for(lambda: dialog.search_button.isEnabled(), 60, "the filtered STAC search")
    assert [i.id for i in dialog.items] == ["s2_east", "s2_west"] and len(dialog.bands) == 2
    assert dialog.source() == {"stac": f"{server.url}/stac/collection.json",
                               "assets": ["B05", "B8A", "B11"], "date": "/".join(DATES),
                               "max_cloud": 20.0}
    assert not dialog.coverage().isEmpty()
    dialog.url_edit.setText(f"{server.url}/stac/missing.json")
    dialog.search()
    wait_for(lambda: dialog.search_button.isEnabled(), 60, "the failing search")
    assert "missing.json" in dialog.status_label.text() and "404" in dialog.status_label.text()
    assert dialog.bands == []
    dialog.reject()


def test_wizard_trains_with_stac_and_xyz_layer(qgis_iface, engine, server, primary_folder,
                                              tmp_path) -> None:
    from mrhash_qgis.ui.train_wizard import TrainWizard

    xyz = QgsRasterLayer(f"type=xyz&url={server.url}/xyz/{{z}}/{{x}}/{{y}}.png&zmax=14&zmin=0",
                         "loopback xyz", "wms")
    assert xyz.isValid() and xyz.providerType() == "wms"
    QgsProject.instance().addMapLayer(xyz)
    try:
        wizard = TrainWizard(qgis_iface, engine)
        wizard.primary_page.picker.use_folder(str(primary_folder))
        wizard.resize(720, 560)
        wizard.show()
        wizard.next()
        page = wizard.auxiliary_page
        page.picker.layer_combo.setLayer(xyz)
        page.add_current()
        assert page.sources[0].remote["url"].startswith("<GDAL_WMS>")
        assert "TMS" in page.sources[0].remote["url"]
        # the search covers the primary's outline, which the engine's scan gives (drawn on
        # the canvas); the XYZ layer made the canvas Web Mercator, so its extent is no guide
        wait_for(lambda: page.footprint(page.primary()) is not None, 60, "the primary outline")
        dialog = page.open_stac()
        dialog.url_edit.setText(f"{server.url}/stac/collection.json")
        dialog.assets_edit.setText("B05,B8A,B11")
        dialog.dates_check.setChecked(True)
        dialog.date_from.setDate(QDate.fromString(DATES[0], "yyyy-MM-dd"))
        dialog.date_to.setDate(QDate.fromString(DATES[1], "yyyy-MM-dd"))
        dialog.cloud_spin.setValue(20)
        dialog.search()
        wait_for(lambda: dialog.search_button.isEnabled() and dialog.items, 120, "the search")
        _shot(dialog, "stac_dialog.png")
        dialog.accept()
        assert [s.kind for s in page.sources] == ["web layer", "STAC"]
        wait_for(lambda: "covers" in page.overlap_label.text(), 60, "the primary's outline")
        assert "collection.json @B05,B8A,B11: covers 100% of the primary" in (
            page.overlap_label.text())
        _shot(wizard, "wizard_2_stac.png")
        request = wizard.request()
        assert request.auxiliary[1].stac.endswith("/stac/collection.json")
        assert request.to_params()["auxiliary"][1]["assets"] == ["B05", "B8A", "B11"]
        wizard.next()
        values = wizard.params_page
        values.bits_combo.setCurrentText(str(TINY_TRAINING["bits"]))
        values.clusters_spin.setValue(TINY_TRAINING["clusters"])
        values.epochs_spin.setValue(1)
        values.ae_epochs_spin.setValue(1)
        values.patch_spin.setValue(64)
        values.device_combo.setCurrentText("cpu")
        values.output_widget.setFilePath(str(tmp_path / "remote.safetensors"))
        events, models, failures = [], [], []
        wizard.trainingProgress.connect(events.append)
        wizard.modelTrained.connect(models.append)
        wizard.trainingFailed.connect(failures.append)
        wizard.next()
        wait_for(lambda: models or failures, 240, "the training with remote sources")
        assert not failures, failures
        assert any(e.get("stage") == "pull" for e in events)  # the pull in the progress
        result = wizard.train_page.result
        assert result.pull.pulled == 12 and result.pull.cache_bytes > 0
        assert "Pulled" in wizard.train_page.status_label.text()
        assert Path(result.pull.cache_dir) == tmp_path / "remote.safetensors.pull-cache"
        wizard.reject()
    finally:
        QgsProject.instance().removeAllMapLayers()
