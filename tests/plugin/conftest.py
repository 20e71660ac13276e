"""Real QGIS (headless, pytest-qgis) + the real engine worker; one tiny model trained per
session (through the training wizard) and one index built (through the index dialog)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from plugin_files import differences  # noqa: E402

# The plugin's copies of the contract, metadata and resources, checked before the plugin is
# imported: a stale copy (a source edited, `make plugin-files` not run since) is never tested.
if stale := differences():
    pytest.exit("the plugin's copies differ from their sources; run `make plugin-files`:\n"
                + "\n".join(stale), returncode=pytest.ExitCode.USAGE_ERROR)

from mrhash_qgis.core.engine_client import (  # noqa: E402
    EngineClient,
    shared_client,
    shutdown_shared_client,
)

# Tiny but real: 1 hash epoch, 2 autoencoder epochs, 16 bits, 64 px patches.
TINY_TRAINING = {"bits": 16, "clusters": 4, "epochs": 1, "ae_epochs": 2, "patch_size": 64}


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Run the Qt event loop until `predicate()` is true (queued signals, QgsTask callbacks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        QCoreApplication.processEvents()
        time.sleep(0.02)


def screenshot(widget, name: str) -> None:
    """With MRHASH_SCREENSHOTS=DIR set, the widget as the analyst sees it, for docs/img."""
    folder = os.environ.get("MRHASH_SCREENSHOTS")
    if folder:
        QCoreApplication.processEvents()
        widget.grab().save(str(Path(folder) / f"{name}.png"))


@dataclass(frozen=True)
class S2Crops:
    """Small crops of the real Sentinel-2 scene (EPSG:32618) written with QGIS's GDAL."""

    primary_dir: Path   # s2_rgb.tif: B04,B03,B02 at 10 m, 320x320 px
    aux_dir: Path       # s2_B05/B8A/B11.tif at 20 m over the same place (one product)
    archive_dir: Path   # two RGB crops to index: the primary's place and another one

    @property
    def rgb(self) -> Path:
        return self.primary_dir / "s2_rgb.tif"


@pytest.fixture(scope="session")
def s2(tmp_path_factory, sentinel2_dir: Path) -> S2Crops:
    from osgeo import gdal

    root = tmp_path_factory.mktemp("s2")
    crops = S2Crops(root / "primary", root / "aux20", root / "archive")
    for folder in (crops.primary_dir, crops.aux_dir, crops.archive_dir):
        folder.mkdir()
    rgb = gdal.BuildVRT("/vsimem/mrhash_rgb.vrt",
                        [str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B04", "B03", "B02")],
                        separate=True)
    gdal.Translate(str(crops.rgb), rgb, srcWin=[800, 800, 320, 320])
    gdal.Translate(str(crops.archive_dir / "s2_rgb_a.tif"), rgb, srcWin=[800, 800, 320, 320])
    gdal.Translate(str(crops.archive_dir / "s2_rgb_b.tif"), rgb, srcWin=[200, 1400, 320, 320])
    for band in ("B05", "B8A", "B11"):
        gdal.Translate(str(crops.aux_dir / f"s2_{band}.tif"),
                       str(sentinel2_dir / f"s2_{band}.jp2"), srcWin=[400, 400, 160, 160])
    gdal.Unlink("/vsimem/mrhash_rgb.vrt")
    return crops


@pytest.fixture
def engine() -> EngineClient:
    client = shared_client()
    client.wait_ready(timeout=120)
    return client


@pytest.fixture(scope="session", autouse=True)
def _stop_engine_at_end():
    yield
    shutdown_shared_client()


@pytest.fixture
def rgb_layer(s2: S2Crops):
    """The primary crop as a project layer, removed afterwards (a raster layer alive at
    exitQgis() crashes QGIS)."""
    layer = QgsRasterLayer(str(s2.rgb), "s2_rgb")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeAllMapLayers()


@dataclass
class Trained:
    model: str
    wizard: object


@pytest.fixture(scope="session")
def trained(qgis_iface, s2: S2Crops, tmp_path_factory) -> Trained:
    """Train the session's model through the wizard: primary folder (RGB), one auxiliary
    source (20 m bands folder), tiny parameters."""
    from mrhash_qgis.ui.train_wizard import SourceChoice, TrainWizard

    client = shared_client()
    client.wait_ready(timeout=120)
    wizard = TrainWizard(qgis_iface, client)
    wizard.primary_page.picker.use_folder(str(s2.primary_dir))
    wizard.show()
    wizard.next()
    wizard.auxiliary_page.add_source(SourceChoice(str(s2.aux_dir)))
    wizard.next()
    page = wizard.params_page
    page.bits_combo.setCurrentText(str(TINY_TRAINING["bits"]))
    page.clusters_spin.setValue(TINY_TRAINING["clusters"])
    page.epochs_spin.setValue(TINY_TRAINING["epochs"])
    page.ae_epochs_spin.setValue(TINY_TRAINING["ae_epochs"])
    page.patch_spin.setValue(TINY_TRAINING["patch_size"])
    page.device_combo.setCurrentText("cpu")
    model = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    page.output_widget.setFilePath(str(model))
    trained_models: list[str] = []
    wizard.modelTrained.connect(trained_models.append)
    failures: list[str] = []
    wizard.trainingFailed.connect(failures.append)
    wizard.next()  # the training page starts the job
    wait_for(lambda: trained_models or failures, 180, "the wizard's training")
    assert not failures, failures
    return Trained(trained_models[0], wizard)


@pytest.fixture(scope="session")
def built_index(qgis_iface, s2: S2Crops, trained: Trained, tmp_path_factory):
    """Index the archive folder through the index dialog (a QgsTask)."""
    from mrhash_qgis.ui.index_dialog import IndexDialog

    dialog = IndexDialog(qgis_iface, shared_client())
    dialog.folder_widget.setFilePath(str(s2.archive_dir))
    dialog.model_widget.setFilePath(trained.model)
    index_dir = tmp_path_factory.mktemp("index") / "archive_index"
    dialog.index_widget.setFilePath(str(index_dir))
    built: list[str] = []
    errors: list[str] = []
    dialog.indexBuilt.connect(built.append)
    task = dialog.start()
    task.error.connect(lambda code, message: errors.append(f"{code}: {message}"))
    wait_for(lambda: built or errors, 180, "the index task")
    assert not errors, errors
    return dialog
