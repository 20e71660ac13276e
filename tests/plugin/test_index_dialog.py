"""The index dialog indexes a folder as a QgsTask, adds the tile footprints (outlines,
unchecked), cancels, and says the engine's errors in its own words."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for
from qgis.core import QgsApplication, QgsProject, QgsTask
from qgis.PyQt.QtCore import Qt


def build(dialog, what: str) -> str:
    """Press Build index and wait for the end: -> the dialog's status text."""
    ended: list[str] = []
    task = dialog.start()
    task.done.connect(lambda _result: ended.append("done"))
    task.error.connect(lambda code, _message, _fix: ended.append(code))
    wait_for(lambda: ended, 120, what)
    return dialog.status_label.text()


def index_dialog(iface, client, folder: Path, model: str, index: Path):
    from mrhash_qgis.ui.index_dialog import IndexDialog

    dialog = IndexDialog(iface, client)
    dialog.folder_widget.setFilePath(str(folder))
    dialog.model_widget.setFilePath(model)
    dialog.index_widget.setFilePath(str(index))
    return dialog


def test_dialog_indexed_the_archive(built_index, s2):
    dialog = built_index
    assert "50 tiles indexed" in dialog.status_label.text()  # 2 rasters x 5 x 5 tiles of 64 px
    layer = dialog.footprints
    assert layer.featureCount() == 50
    assert QgsProject.instance().mapLayer(layer.id()) is not None
    sources = {feature["source"] for feature in layer.getFeatures()}
    assert sources == {str(s2.archive_dir / "s2_rgb_a.tif"), str(s2.archive_dir / "s2_rgb_b.tif")}
    # never over the imagery: added unchecked, and drawn as outlines when ticked
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
    assert not node.itemVisibilityChecked()
    [symbol_layer] = layer.renderer().symbol().symbolLayers()
    assert symbol_layer.brushStyle() == Qt.BrushStyle.NoBrush
    assert symbol_layer.strokeStyle() == Qt.PenStyle.SolidLine
    QgsProject.instance().removeMapLayer(layer.id())


def test_cancel_from_the_task_manager(qgis_iface, trained, sentinel2_dir, tmp_path, engine):
    from osgeo import gdal

    from mrhash_qgis.ui.index_dialog import IndexDialog

    big = tmp_path / "big"
    big.mkdir()  # ~900 tiles: long enough to be cancelled midway
    rgb = gdal.BuildVRT("/vsimem/big.vrt", [str(sentinel2_dir / f"s2_{b}.jp2")
                                            for b in ("B04", "B03", "B02")], separate=True)
    gdal.Translate(str(big / "s2_big.tif"), rgb, srcWin=[0, 0, 1920, 1920])
    gdal.Unlink("/vsimem/big.vrt")
    dialog = IndexDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath(str(big))
    dialog.model_widget.setFilePath(trained.model)
    dialog.index_widget.setFilePath(str(tmp_path / "cancelled_index"))
    errors: list[str] = []
    task = dialog.start()
    task.error.connect(lambda code, _message, _fix: errors.append(code))
    task.progressEvent.connect(lambda _event: task.cancel())  # cancel once it has started
    wait_for(lambda: errors or task.status() == QgsTask.TaskStatus.Complete, 120, "the cancel")
    assert errors == ["cancelled"]
    assert dialog.status_label.text() == "Indexing cancelled."
    assert QgsApplication.taskManager().countActiveTasks() == 0


def test_missing_fields_are_named(qgis_iface, engine):
    from mrhash_qgis.ui.index_dialog import IndexDialog

    dialog = IndexDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath("")
    dialog.index_widget.setFilePath("")
    dialog.model_widget.setFilePath("")
    assert dialog.start() is None
    assert dialog.status_label.text() == "Choose the rasters folder, model, index folder."


def test_band_selection_reaches_the_engine(qgis_iface, trained, s2, tmp_path, engine):
    """Bands typed in the dialog select the rasters' bands the model encodes; a band the
    rasters lack is a clear error naming the file, and the rest of the folder still runs."""
    from mrhash_qgis.contract.bands import parse_bands
    from mrhash_qgis.ui.index_dialog import IndexDialog

    assert parse_bands(" 4, 3,2 ") == (4, 3, 2) and parse_bands("B04,B03") == ("B04", "B03")
    assert parse_bands("") is None and parse_bands(" , ") is None
    dialog = IndexDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath(str(s2.archive_dir))
    dialog.model_widget.setFilePath(trained.model)
    dialog.index_widget.setFilePath(str(tmp_path / "bands_index"))
    dialog.bands_edit.setText("3,2,1")  # blue-green-red: another reading of the same files
    assert dialog.request().bands == [3, 2, 1]
    built: list[str] = []
    dialog.indexBuilt.connect(built.append)
    dialog.start()
    wait_for(lambda: built, 120, "the index with bands 3,2,1")
    assert "50 tiles indexed" in dialog.status_label.text()
    QgsProject.instance().removeAllMapLayers()

    dialog.index_widget.setFilePath(str(tmp_path / "bad_bands_index"))
    dialog.bands_edit.setText("1,2,7")
    built.clear()
    dialog.start()
    wait_for(lambda: built or "failed" in dialog.status_label.text(), 120, "the bad bands")
    # a band no raster of the folder has is an error naming it and a file, not an empty index
    text = dialog.status_label.text()
    assert text.startswith("Indexing failed: ") and "band 7" in text and not built, text
    assert "s2_rgb_a.tif" in text or "s2_rgb_b.tif" in text
    QgsProject.instance().removeAllMapLayers()


def test_a_folder_without_rasters_is_an_error_naming_the_formats(qgis_iface, trained, tmp_path,
                                                                 engine):
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("no raster here\n")
    (texts / "table.csv").write_text("a,b\n1,2\n")
    for folder in (empty, texts):
        dialog = index_dialog(qgis_iface, engine, folder, trained.model, tmp_path / "idx")
        text = build(dialog, f"the build of {folder.name}")
        assert text.startswith("Indexing failed: ") and str(folder) in text, text
        assert ".tif" in text and "tiles indexed" not in text, text
        assert dialog.footprints is None


def test_a_zero_tile_first_run_then_the_right_bands(qgis_iface, trained, s2, tmp_path, engine):
    """Rasters with a band count the model does not take index nothing (and say why); a
    second run with the right bands indexes them, into the same index folder."""
    from osgeo import gdal

    four = tmp_path / "four_bands"
    four.mkdir()
    for name in ("s2_rgb_a.tif", "s2_rgb_b.tif"):  # RGB + a 4th band: the model takes 3
        gdal.Translate(str(four / name), str(s2.archive_dir / name), bandList=[1, 2, 3, 3])
    dialog = index_dialog(qgis_iface, engine, four, trained.model, tmp_path / "four_index")
    text = build(dialog, "the zero-tile run")
    assert text.startswith("0 tiles indexed") and "2 file(s) skipped" in text, text
    assert "has 4 bands" in text, text
    QgsProject.instance().removeAllMapLayers()
    dialog.bands_edit.setText("1,2,3")
    text = build(dialog, "the run with the right bands")
    assert text.startswith("50 tiles indexed (added 50"), text
    QgsProject.instance().removeAllMapLayers()


def test_the_rebuild_fix_points_at_the_checkbox(qgis_iface, trained, s2, tmp_path, engine):
    """An index built with other settings: the engine says --rebuild (fix "rebuild"), the
    dialog says tick Rebuild and shows the checkbox; ticking it builds."""
    dialog = index_dialog(qgis_iface, engine, s2.primary_dir, trained.model, tmp_path / "i")
    assert build(dialog, "the first build").startswith("25 tiles indexed")
    dialog.tile_spin.setValue(32)
    text = build(dialog, "the build with another tile size")
    assert text.startswith("Indexing failed: ") and "tile size 64" in text, text
    assert "tick Rebuild from scratch" in text and "--rebuild" not in text, text
    assert dialog.rebuild_check.font().bold() and dialog.progress.isHidden()
    dialog.rebuild_check.setChecked(True)
    assert not dialog.rebuild_check.font().bold()
    assert build(dialog, "the rebuild").startswith("100 tiles indexed (added 100")
    QgsProject.instance().removeAllMapLayers()


def test_cli_advice_is_said_in_the_dialog_s_words():
    """Messages of an engine that names no `fix` (older ones) are reworded too."""
    from mrhash_qgis.ui.index_dialog import in_dialog_words

    assert in_dialog_words("/i: unreadable index database (x); rebuild it with `mrhash index "
                           "--rebuild`", "") == (
        "/i: unreadable index database (x); tick Rebuild from scratch")
    assert in_dialog_words("/i: index was built with bands 1,2,3, not all; use the same or "
                           "--rebuild", "") == (
        "/i: index was built with bands 1,2,3, not all; use the same or tick Rebuild from "
        "scratch")
    assert in_dialog_words("/i: interrupted before its first raster; run `mrhash index` "
                           "again", "index") == (
        "/i: interrupted before its first raster; press Build index again")
    assert in_dialog_words("/i: the index database is damaged; rebuild the index",
                           "rebuild") == ("/i: the index database is damaged; rebuild the "
                                          "index (tick Rebuild from scratch and build again)")
    assert in_dialog_words("/m: not a raster", "") == "/m: not a raster"


def test_build_on_a_dask_cluster_from_the_dialog(qgis_iface, trained, s2, tmp_path, engine):
    """"Run on a Dask cluster at" local:2 builds the same index through the worker; an
    address nobody answers is an error naming it, with no index written."""
    import socket

    from mrhash_qgis.core import settings

    try:
        _dask_builds(qgis_iface, trained, s2, tmp_path, engine, socket)
    finally:  # the dialog remembers the cluster: later dialogs must not build on it
        settings.DASK_ON.put(False)
        settings.DASK_ADDRESS.put("")
    from mrhash_qgis.ui.index_dialog import IndexDialog

    assert not IndexDialog(qgis_iface, engine).dask_check.isChecked()


def _dask_builds(qgis_iface, trained, s2, tmp_path, engine, socket) -> None:
    dialog = index_dialog(qgis_iface, engine, s2.archive_dir, trained.model,
                          tmp_path / "dask_index")
    dialog.dask_check.setChecked(True)
    dialog.dask_edit.setText("")
    assert dialog.start() is None and "Dask scheduler" in dialog.status_label.text()
    dialog.dask_edit.setText("local:2")
    assert dialog.request().dask == "local:2"
    assert "50 tiles indexed" in build(dialog, "the Dask build")
    QgsProject.instance().removeAllMapLayers()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dialog.index_widget.setFilePath(str(tmp_path / "unreached_index"))
    dialog.dask_edit.setText(f"tcp://127.0.0.1:{port}")
    text = build(dialog, "the unreachable scheduler")
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in text
    assert not (tmp_path / "unreached_index").exists()
    dialog.dask_check.setChecked(False)
    assert dialog.request().dask is None and "dask" not in dialog.request().to_params()
    # the address and the choice are remembered for the next dialog
    from mrhash_qgis.ui.index_dialog import IndexDialog

    again = IndexDialog(qgis_iface, engine)
    assert again.dask_check.isChecked() and again.dask_edit.text() == f"tcp://127.0.0.1:{port}"
