"""The index dialog indexes a folder as a QgsTask, adds the tile footprints, and cancels."""

from __future__ import annotations

from conftest import wait_for
from qgis.core import QgsApplication, QgsProject, QgsTask


def test_dialog_indexed_the_archive(built_index, s2):
    dialog = built_index
    assert "50 tiles indexed" in dialog.status_label.text()  # 2 rasters x 5 x 5 tiles of 64 px
    layer = dialog.footprints
    assert layer.featureCount() == 50
    assert QgsProject.instance().mapLayer(layer.id()) is not None
    sources = {feature["source"] for feature in layer.getFeatures()}
    assert sources == {str(s2.archive_dir / "s2_rgb_a.tif"), str(s2.archive_dir / "s2_rgb_b.tif")}
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
    task.error.connect(lambda code, _message: errors.append(code))
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
    from mrhash_qgis.core.bands import parse_bands
    from mrhash_qgis.ui.index_dialog import IndexDialog

    assert parse_bands(" 4, 3,2 ") == [4, 3, 2] and parse_bands("B04,B03") == ["B04", "B03"]
    assert parse_bands("") is None
    dialog = IndexDialog(qgis_iface, engine)
    dialog.folder_widget.setFilePath(str(s2.archive_dir))
    dialog.model_widget.setFilePath(trained.model)
    dialog.index_widget.setFilePath(str(tmp_path / "bands_index"))
    dialog.bands_edit.setText("3,2,1")  # blue-green-red: another reading of the same files
    assert dialog.params()["bands"] == [3, 2, 1]
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
    wait_for(lambda: built or "skipped" in dialog.status_label.text(), 120, "the bad bands")
    text = dialog.status_label.text()
    assert "0 tiles indexed" in text and "2 file(s) skipped" in text and "band 7" in text
    assert "s2_rgb_a.tif" in text or "s2_rgb_b.tif" in text
    QgsProject.instance().removeAllMapLayers()
