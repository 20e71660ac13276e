"""The analyst's first hour (issue 22), in real QGIS with the real engine: the guided start
from a real 13-band folder to hits in four actions, a path typed character by character into
the index dialog, no stray window from the wizard, auxiliary sources made of other bands of
the same files, and a query on a layer whose bands are laid out otherwise than the model's."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import screenshot, wait_for
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QWidget


@pytest.fixture
def python_errors(monkeypatch):
    """Exceptions raised in Qt slots (QGIS shows them in a Python error dialog)."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, _tb: seen.append(
        f"{kind.__name__}: {value}"))
    return seen


def type_into(line_edit, text: str) -> None:
    """Type `text` key by key, as the analyst does."""
    line_edit.setFocus()
    line_edit.clear()
    for character in text:
        QTest.keyClicks(line_edit, character)
        QApplication.processEvents()


def visible_windows() -> list[QWidget]:
    return [w for w in QApplication.topLevelWidgets()
            if w.isVisible() and not w.inherits("QMainWindow")
            and w.windowType() not in (Qt.WindowType.ToolTip, Qt.WindowType.Popup)]


def stray_windows(before: list[QWidget], *allowed: QWidget) -> list[str]:
    """Visible top-level windows that were not there `before` (other tests' session
    fixtures keep theirs), other than `allowed`."""
    return [f"{type(w).__name__} {w.geometry().width()}x{w.geometry().height()}"
            for w in visible_windows() if w not in before and w not in allowed]


def test_typing_an_archive_path_never_raises_and_suggests_beside_it(
        qgis_iface, engine, tmp_path, python_errors):
    from mrhash_qgis.ui.index_dialog import IndexDialog

    first, second = tmp_path / "archive_one", tmp_path / "archive_two"
    first.mkdir()
    second.mkdir()
    dialog = IndexDialog(qgis_iface, engine)
    dialog.index_widget.setFilePath("")
    line = dialog.folder_widget.lineEdit()
    type_into(line, str(first))
    assert python_errors == []
    assert dialog.index_widget.filePath() == str(tmp_path / "archive_one_index")
    type_into(line, str(second))  # the suggestion follows the archive typed last
    assert python_errors == []
    assert dialog.index_widget.filePath() == str(tmp_path / "archive_two_index")
    type_into(line, "/")  # the root is no archive: nothing at the file-system root
    assert dialog.index_widget.filePath() in ("", str(tmp_path / "archive_two_index"))
    assert not dialog.index_widget.filePath().startswith("/_")
    dialog.index_widget.setFilePath(str(tmp_path / "mine"))  # the user's own choice stays
    type_into(line, str(first))
    assert dialog.index_widget.filePath() == str(tmp_path / "mine") and python_errors == []


def test_a_read_only_archive_gets_its_index_somewhere_writable(qgis_iface, tmp_path):
    from mrhash_qgis.ui.index_dialog import suggested_index_folder

    parent = tmp_path / "readonly"
    archive = parent / "scenes"
    archive.mkdir(parents=True)
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        suggestion = Path(suggested_index_folder(str(archive)))
    finally:
        parent.chmod(0o755)
    assert suggestion.name == "scenes_index" and suggestion.parent != parent


def test_the_wizard_shows_no_stray_window(qgis_iface, engine, tmp_path, eurosat_dir):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    before = visible_windows()
    wizard = TrainWizard(qgis_iface, engine)
    wizard.show()
    QApplication.processEvents()
    assert stray_windows(before, wizard) == []
    wizard.primary_page.picker.folder_radio.setChecked(True)
    wizard.primary_page.picker.folder_widget.setFilePath(str(eurosat_dir / "Forest"))
    QApplication.processEvents()
    wizard.next()
    wizard.auxiliary_page.picker.folder_radio.setChecked(True)
    QApplication.processEvents()
    assert stray_windows(before, wizard) == []
    wizard.reject()
    QApplication.processEvents()
    assert stray_windows(before) == []


def test_the_wizard_proposes_rgb_and_the_other_bands_of_the_same_files(qgis_iface, engine,
                                                                     eurosat_dir, tmp_path):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    copy = tmp_path / "forest.tif"  # QGIS may write statistics beside a file it opens
    shutil.copy2(sorted((eurosat_dir / "Forest").glob("*.tif"))[0], copy)
    layer = QgsRasterLayer(str(copy), "forest")
    QgsProject.instance().addMapLayer(layer)
    try:
        wizard = TrainWizard(qgis_iface, engine)
        picker = wizard.primary_page.picker
        picker.layer_combo.setLayer(layer)
        ticked = [i + 1 for i in range(picker.band_list.count())
                  if picker.band_list.item(i).checkState() == Qt.CheckState.Checked]
        assert ticked == [2, 3, 4]  # blue, green, red of Sentinel-2: RGB, not bands 1-3
        assert "Sentinel-2" in picker.layout_label.text()
        wizard.show()
        wizard.next()
        page = wizard.auxiliary_page
        assert "nir, rededge_swir, atmosphere" in page.suggest_label.text()
        assert "nir: 8 (near infrared)" in page.suggest_label.toolTip()
        page.add_suggested()
        screenshot(wizard, "wizard_2_same_file_bands")
        # one of the band groups by hand, replacing the suggested one of that name
        page.group_name_edit.setText("nir")
        page.same_list.item([page.same_list.item(i).data(Qt.ItemDataRole.UserRole)
                             for i in range(page.same_list.count())].index(8)).setCheckState(
            Qt.CheckState.Checked)
        page.add_bands_button.click()
        request = wizard.request()
        assert sorted(request.aux_bands) == [("atmosphere", [1, 9, 10]), ("nir", [8]),
                                             ("rededge_swir", [5, 6, 7, 13, 11, 12])]
        assert request.primary.bands == [2, 3, 4] or request.primary.bands == [4, 3, 2]
        assert "bands of the primary files" in page.overlap_label.text()
        wizard.reject()
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_a_new_model_never_takes_an_existing_name(tmp_path):
    from mrhash_qgis.ui.train_wizard import unused_model_path

    (tmp_path / "scenes_mrhash.safetensors").write_bytes(b"x")
    (tmp_path / "scenes_mrhash_2.safetensors").write_bytes(b"x")
    assert unused_model_path(tmp_path, "scenes_mrhash").name == "scenes_mrhash_3.safetensors"


@pytest.fixture
def archive(tmp_path, eurosat_dir) -> Path:
    """The analyst's archive: real 13-band Sentinel-2 GeoTIFFs (EuroSAT), no band names."""
    folder = tmp_path / "my archive"
    folder.mkdir()
    for tif in sorted(eurosat_dir.glob("*/*.tif"))[::2]:
        shutil.copy2(tif, folder / tif.name)
    return folder


def test_guided_start_from_a_folder_to_hits_in_four_actions(qgis_iface, engine, archive,
                                                            tmp_path, monkeypatch,
                                                            python_errors):
    """From "Engine ready": (1) Start with my imagery… (2) type the folder (3) Start
    (4) click the map: hits and thumbnails. Then a query on an RGB composite and on a
    single-band layer of the same place."""
    from osgeo import gdal

    from mrhash_qgis.core import settings
    from mrhash_qgis.core.band_layout import remembered_bands
    from mrhash_qgis.core.quick_start import QuickStartPlan
    from mrhash_qgis.map_tool import QueryMapTool
    from mrhash_qgis.ui.dock import MrHashDock
    from mrhash_qgis.ui.quick_start_dialog import QuickStartDialog

    QuickStartPlan.forget()
    settings.LAST_INDEX.put("")
    monkeypatch.setattr("mrhash_qgis.ui.quick_start_dialog.default_model_folder",
                        lambda: tmp_path / "models")  # not the home folder of whoever tests
    actions = 0
    canvas = qgis_iface.mapCanvas()
    tool = QueryMapTool(canvas)
    dock = MrHashDock(qgis_iface, engine, tool)
    tool.queryRequested.connect(dock.run_query)
    wait_for(lambda: dock.start_button.isVisibleTo(dock), 60, "the dock's start button")
    dialogs: list[QuickStartDialog] = []
    dock.quickStartRequested.connect(
        lambda: dialogs.append(QuickStartDialog(qgis_iface, engine)) or dialogs[-1].show())
    dock.start_button.click()
    actions += 1
    dialog = dialogs[0]
    type_into(dialog.folder_widget.lineEdit(), str(archive))
    actions += 1
    wait_for(lambda: dialog.start_button.isEnabled(), 60, "the folder's proposal")
    text = dialog.plan_label.text()
    assert "25 raster(s)" in text and "Sentinel-2" in text, text
    assert "4 (red), 3 (green), 2 (blue)" in text and "nir 8 (near infrared)" in text, text
    dialog.minutes_spin.setValue(1)
    assert dialog.plan_label.text().startswith("25 raster(s). Looks like Sentinel-2")
    assert "about 1 min (at most 592 tiles)" in dialog.plan_label.text()
    screenshot(dialog, "quick_start_1_proposal")
    built: list[tuple[str, str]] = []
    dialog.ready.connect(lambda model, index: built.append((model, index)))
    dialog.ready.connect(dock.use_built)
    dialog.start_button.click()
    actions += 1
    assert dialog.cancel_button.isVisible() and dialog.progress.isVisible()
    wait_for(lambda: dialog.progress.value() > 0, 60, "the first progress")
    assert "Step 1 of 2" in dialog.status_label.text()
    wait_for(lambda: "left" in dialog.status_label.text(), 120, "a remaining time")
    screenshot(dialog, "quick_start_2_progress")
    wait_for(lambda: built or "stopped" in dialog.status_label.text(), 600, "the guided start")
    assert built, dialog.status_label.text()
    model, index = built[0]
    assert Path(model).is_file() and Path(model).name.startswith("my archive_mrhash")
    assert Path(index).name == "my archive_index" and Path(index).parent == tmp_path
    assert dock.index_widget.filePath() == index and dock.model_widget.filePath() == model
    assert "Queries use the index's model" in dock.index_label.text()
    assert "click the map" in dock.status_label.text()
    assert QuickStartPlan.remembered() is None  # done: nothing to resume

    raster = sorted(archive.glob("*.tif"))[3]
    layer = QgsRasterLayer(str(raster), raster.stem)
    QgsProject.instance().addMapLayer(layer)
    try:
        dock.k_spin.setValue(5)
        got: list[dict] = []
        dock.queryFinished.connect(got.append)
        dock.run_query(_centre(layer, QgsProject.instance()))  # the click
        actions += 1
        wait_for(lambda: got, 60, "the first hits")
        assert actions == 4
        dock.resize(380, 720)
        screenshot(dock, "quick_start_3_first_hits")
        hits = got[-1].hits
        assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert len(dock.results.grid.hit_items()) == 5
        clicked = dock.search.queried_tiles()
        assert clicked and not clicked & {int(h.id) for h in hits}  # the query is no hit
        # a hit's raster shows the bands its thumbnail shows: red, green, blue = 4, 3, 2
        shown = dock.add_hit_raster(hits[0]).renderer()
        assert (shown.redBand(), shown.greenBand(), shown.blueBand()) == (4, 3, 2)
        low, high = got[-1].display_limits[0]  # stretched over the thumbnails' values
        red = shown.redContrastEnhancement()
        assert (red.minimumValue(), red.maximumValue()) == pytest.approx((low, high))

        # the same place as an RGB composite (bands 4, 3, 2) and as one band, snap off
        dock.snap_check.setChecked(False)
        composite = tmp_path / "composite.tif"
        gdal.Translate(str(composite), str(raster), bandList=[4, 3, 2])
        single = tmp_path / "single.tif"
        gdal.Translate(str(single), str(raster), bandList=[8])
        QgsProject.instance().removeMapLayer(layer.id())
        rgb = QgsRasterLayer(str(composite), "composite")
        QgsProject.instance().addMapLayer(rgb)
        dock.run_query(_centre(rgb, QgsProject.instance()))
        wait_for(lambda: len(got) == 2 or "failed" in dock.status_label.text(), 60, "RGB")
        assert len(got) == 2, dock.status_label.text()
        QgsProject.instance().removeMapLayer(rgb.id())
        one = QgsRasterLayer(str(single), "single band")
        QgsProject.instance().addMapLayer(one)
        asked: list[list[str]] = []

        def answer(layer, needs: list[str]) -> list[int]:  # the band dialog, as the analyst
            asked.append(needs)
            assert layer.id() == one.id()
            return [1, 1, 1]

        monkeypatch.setattr(dock.session, "ask_bands", answer)
        dock.run_query(_centre(one, QgsProject.instance()))
        wait_for(lambda: len(got) == 3 or "failed" in dock.status_label.text(), 60, "1 band")
        assert asked == [["red", "green", "blue"]]
        assert len(got) == 3, dock.status_label.text()
        assert remembered_bands(one) == [1, 1, 1]  # asked once: kept on the layer
        assert python_errors == []
    finally:
        QgsProject.instance().removeAllMapLayers()


def _centre(layer: QgsRasterLayer, project):
    from mrhash_qgis.map_tool import locate

    return locate(layer.extent().center(), layer.crs())


def test_guided_start_cancelled_at_each_step_resumes_where_it_stopped(qgis_iface, engine,
                                                                      archive, tmp_path,
                                                                      monkeypatch):
    """Cancel while learning, then while indexing; each new dialog (as after QGIS was
    closed) offers Resume, which goes on from the step that stopped: the model is trained
    once. A folder with no raster is said in plain words."""
    from mrhash_qgis.core.quick_start import INDEX, TRAIN, QuickStartPlan
    from mrhash_qgis.ui.quick_start_dialog import QuickStartDialog

    QuickStartPlan.forget()
    monkeypatch.setattr("mrhash_qgis.ui.quick_start_dialog.default_model_folder",
                        lambda: tmp_path / "models")
    empty = tmp_path / "no rasters"
    empty.mkdir()
    (empty / "notes.txt").write_text("not imagery")
    dialog = QuickStartDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath(str(empty))
    wait_for(lambda: "No raster" in dialog.plan_label.text(), 60, "the empty folder's message")
    assert not dialog.start_button.isEnabled()

    dialog.folder_widget.setFilePath(str(archive))
    wait_for(lambda: dialog.start_button.isEnabled(), 60, "the proposal")
    dialog.minutes_spin.setValue(1)
    messages: list[str] = []
    dialog.chain.stepped.connect(lambda _fraction, text: messages.append(text))
    dialog.chain.stepped.connect(lambda fraction, _text: fraction > 0 and dialog.cancel())
    dialog.start()
    wait_for(lambda: "Stopped" in dialog.status_label.text(), 120, "the cancel while learning")
    plan = QuickStartPlan.remembered()
    assert plan is not None and plan.stage == TRAIN and not Path(plan.model).exists()

    again = QuickStartDialog(qgis_iface, engine)  # QGIS closed and opened again
    assert again.resume_button.isVisibleTo(again) and "Resume" in again.status_label.text()
    steps: list[str] = []
    again.chain.stepped.connect(lambda _fraction, text: steps.append(text))
    again.chain.stepped.connect(
        lambda _fraction, text: text.startswith("Step 2") and again.cancel())
    again.resume()
    wait_for(lambda: "Stopped" in again.status_label.text(), 300, "the cancel while indexing")
    plan = QuickStartPlan.remembered()
    assert plan is not None and plan.stage == INDEX and Path(plan.model).is_file()

    last = QuickStartDialog(qgis_iface, engine)
    built: list[tuple[str, str]] = []
    last.ready.connect(lambda model, index: built.append((model, index)))
    later: list[str] = []
    last.chain.stepped.connect(lambda _fraction, text: later.append(text))
    last.resume_button.click()
    wait_for(lambda: built or "stopped" in last.status_label.text(), 300, "the resumed index")
    assert built and built[0][0] == plan.model
    assert not any(text.startswith("Step 1") for text in later)  # not trained again
    assert QuickStartPlan.remembered() is None
    QgsProject.instance().removeAllMapLayers()


def test_the_next_step_after_training_is_offered_in_the_dock(qgis_iface, engine, tmp_path):
    from mrhash_qgis.ui.dock import MrHashDock

    dock = MrHashDock(qgis_iface, engine)
    asked: list[str] = []
    dock.indexRequested.connect(asked.append)
    model = str(tmp_path / "fields_mrhash.safetensors")
    dock.offer_index(model)
    assert dock.index_offer_button.isVisibleTo(dock)
    assert "Index a folder with fields_mrhash.safetensors" in dock.index_offer_button.text()
    dock.index_offer_button.click()
    assert asked == [model] and not dock.index_offer_button.isVisibleTo(dock)


def test_the_set_up_says_which_package_it_installs():
    from mrhash_qgis.core.environment import pip_words

    assert pip_words("Collecting torch==2.13.0") == "getting torch"
    assert pip_words("Downloading torch-2.13.0-cp311-cp311-linux_x86_64.whl (187.2 MB)") == (
        "downloading torch (187.2 MB)")
    assert pip_words("Installing collected packages: numpy, torch, mrhash") == (
        "installing 3 packages (the largest take a minute)")
    assert pip_words("  Attempting uninstall: numpy") == ""


def test_a_query_while_the_index_is_built_says_when_it_is_ready(qgis_iface, trained,
                                                               sentinel2_dir, tmp_path,
                                                               engine):
    from osgeo import gdal

    from mrhash_qgis.contract.protocol import Place
    from mrhash_qgis.core.searches import Search
    from mrhash_qgis.ui.dock import MrHashDock
    from mrhash_qgis.ui.index_dialog import IndexDialog

    big = tmp_path / "big"
    big.mkdir()  # ~900 tiles: still building when the query comes
    rgb = gdal.BuildVRT("/vsimem/first_hour_big.vrt", [str(sentinel2_dir / f"s2_{b}.jp2")
                                                       for b in ("B04", "B03", "B02")],
                        separate=True)
    gdal.Translate(str(big / "s2_big.tif"), rgb, srcWin=[0, 0, 1920, 1920])
    gdal.Unlink("/vsimem/first_hour_big.vrt")
    dialog = IndexDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath(str(big))
    dialog.use_model(trained.model)
    dialog.index_widget.setFilePath(str(tmp_path / "big_index"))
    ended: list[str] = []
    task = dialog.start()
    task.done.connect(lambda _result: ended.append("done"))
    task.error.connect(lambda code, _message, _fix: ended.append(code))
    wait_for(lambda: task.last_event.get("eta_s") is not None or ended, 120, "a build's ETA")
    dock = MrHashDock(qgis_iface, engine)
    dock.index_widget.setFilePath(str(tmp_path / "big_index"))
    failed: list[str] = []
    dock.queryFailed.connect(failed.append)
    dock.run_search(Search(index=str(tmp_path / "big_index"), k=3, queries=[Place(tile=1)]))
    wait_for(lambda: failed or ended, 60, "the query's answer")
    assert failed and "The index is being built: query again when it is done, in about" in (
        failed[0]), failed
    dialog.cancel()
    wait_for(lambda: ended, 120, "the cancelled build")
    QgsProject.instance().removeAllMapLayers()
