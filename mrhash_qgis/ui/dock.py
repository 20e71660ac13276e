"""The MrHash dock: engine state, model / index pickers, query options and the results."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsDockWidget, QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import (
    FIX_REPAIR,
    FIX_SETUP,
    STATE_FAILED,
    EngineClient,
    EngineRequest,
    log,
)
from mrhash_qgis.core.hits_layer import (
    geometry_from_geojson,
    hits_layer,
    query_layer,
    replace_in_project,
)
from mrhash_qgis.core.index_footprints import tile_at, tile_size_px
from mrhash_qgis.core.setup_task import EngineSetup
from mrhash_qgis.map_tool import QueryLocation
from mrhash_qgis.ui.thumbnails import ThumbnailGrid

WGS84 = "EPSG:4326"


def _setting_checkbox(text: str, key: str, default: bool, tooltip: str) -> QCheckBox:
    """A checkbox whose state lives in the plugin settings under `key`."""
    box = QCheckBox(text)
    box.setToolTip(tooltip)
    box.setChecked(settings.get(key, "true" if default else "false") == "true")
    box.toggled.connect(lambda on: settings.put(key, "true" if on else "false"))
    return box


class MrHashDock(QgsDockWidget):
    """Emits `queryFinished(result)` once hits are on the map and in the grid."""

    queryFinished = pyqtSignal(dict)  # noqa: N815 (Qt signal naming)
    queryFailed = pyqtSignal(str)     # noqa: N815

    def __init__(self, iface, client: EngineClient, map_tool=None, parent=None,
                 setup: EngineSetup | None = None):
        super().__init__("MrHash", parent)
        self.setObjectName("MrHashDock")
        self.iface = iface
        self.client = client
        self.setup = setup or EngineSetup(client)
        self.map_tool = map_tool
        self.hits_layer = None
        self._request: EngineRequest | None = None
        self._location: QueryLocation | None = None

        body = QWidget()
        layout = QVBoxLayout(body)
        engine_row = QHBoxLayout()
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        self.restart_button = QPushButton("Restart")
        self.restart_button.setToolTip("Restart the engine worker")
        self.restart_button.clicked.connect(self.client.restart)
        self.setup_button = QPushButton("Set up the engine")
        self.setup_button.setToolTip("Install PyTorch and the MrHash engine in a private folder "
                                     "of your QGIS profile (about 1.2 GB for the CPU build)")
        self.setup_button.clicked.connect(self._setup_clicked)
        engine_row.addWidget(self.engine_label, 1)
        engine_row.addWidget(self.restart_button)
        layout.addLayout(engine_row)
        layout.addWidget(self.setup_button)
        self.setup_progress = QProgressBar()
        self.setup_progress.setRange(0, 100)
        self.setup_progress.setVisible(False)
        layout.addWidget(self.setup_progress)
        self.setup.started.connect(lambda: self._show_state(self.client.state))
        self.setup.stepped.connect(self._show_setup_step)
        self.setup.finished.connect(self._setup_finished)

        form = QFormLayout()
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilePath(settings.get("last/model"))
        self.model_widget.setToolTip("Model package trained with MrHash")
        self.index_widget = QgsFileWidget()
        self.index_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.index_widget.setFilePath(settings.get("last/index"))
        self.index_widget.fileChanged.connect(lambda path: settings.put("last/index", path))
        self.model_widget.fileChanged.connect(lambda path: settings.put("last/model", path))
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 500)
        self.k_spin.setValue(int(settings.get("query/k", "12")))
        self.k_spin.valueChanged.connect(lambda k: settings.put("query/k", str(k)))
        form.addRow("Model", self.model_widget)
        form.addRow("Index", self.index_widget)
        form.addRow("Results (k)", self.k_spin)
        layout.addLayout(form)
        self.snap_check = _setting_checkbox(
            "Snap clicks to the indexed tile under them", "query/snap", True,
            "Query with the stored code of the tile under the click (exact, fast); off: "
            "encode the patch centred on the click")
        self.append_check = _setting_checkbox(
            "Keep earlier results (add each query's hits)", "query/append", False,
            "Off: each query replaces the hits layer. On: hits are added, numbered by query "
            "in its 'query' field")
        layout.addWidget(self.snap_check)
        layout.addWidget(self.append_check)
        self.queries_made = 0

        self.query_button = QPushButton("Query on map")
        self.query_button.setCheckable(True)
        self.query_button.setToolTip("Click a point or drag a rectangle on the map")
        layout.addWidget(self.query_button)
        self.status_label = QLabel("Click on the map to find similar places.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.grid = ThumbnailGrid()
        self.grid.hitClicked.connect(self.zoom_to_hit)
        self.grid.hitActivated.connect(self.add_hit_raster)
        layout.addWidget(self.grid, 1)
        self.setWidget(body)

        self.client.stateChanged.connect(self._show_state)
        self.client.ready.connect(lambda _info: self._show_state(self.client.state))
        self._show_state(self.client.state)

    # engine state
    def _setup_clicked(self) -> None:
        if self.setup.running:
            self.setup.cancel()
        else:
            self.setup.start(fresh=self.client.fix != FIX_REPAIR)

    def _show_setup_step(self, fraction: float, message: str) -> None:
        self.setup_progress.setValue(int(100 * fraction))
        self.engine_label.setText(f"Setting up the engine… {message}")

    def _setup_finished(self, ok: bool, message: str) -> None:
        self.setup_progress.setVisible(False)
        if not ok:
            self.iface.messageBar().pushMessage(
                "MrHash", f"Engine set-up failed: {message}", Qgis.MessageLevel.Critical, 0)
        self._show_state(self.client.state)

    def _show_state(self, state: str) -> None:
        info = self.client.info
        running = self.setup.running
        self.setup_progress.setVisible(running)
        self.setup_button.setVisible(running or (state == STATE_FAILED
                                                 and self.client.fix in (FIX_SETUP, FIX_REPAIR)))
        self.setup_button.setText("Cancel set-up" if running else
                                  "Repair the engine" if self.client.fix == FIX_REPAIR
                                  else "Set up the engine")
        self.restart_button.setVisible(not self.setup_button.isVisibleTo(self))
        if running:
            self.engine_label.setText(f"Setting up the engine… {self.setup.last_message}")
            return
        if state == "ready":
            text = (f"Engine ready · {info.get('device', '?')} · "
                    f"mrhash {info.get('version', '?')}")
        elif state == STATE_FAILED and self.client.fix == FIX_SETUP:
            text = ("The engine is not set up yet: press Set up the engine (once, a few "
                    "minutes).")
        elif state == STATE_FAILED:
            text = f"Engine failed: {self.client.last_error.splitlines()[0]}"
            self.iface.messageBar().pushMessage(
                "MrHash", f"{text} — details in the MrHash tab of the log panel and in "
                "MrHash › Settings.", Qgis.MessageLevel.Critical, 15)
        else:
            text = f"Engine {state}"
        self.engine_label.setText(text)
        self.engine_label.setToolTip(self.client.last_error if state == STATE_FAILED else "")

    # queries
    def run_query(self, location: QueryLocation) -> EngineRequest | None:
        index = self.index_widget.filePath()
        if not index:
            self._fail("Choose an index in the MrHash dock first (build one with "
                       "MrHash > Build index).")
            return None
        if self._request is not None and not self._request.done:
            self._request.cancel()
        params = {"index": index, "k": self.k_spin.value(), "thumbnails": True,
                  **self._where(index, location)}
        self.status_label.setText("Searching…")
        self._location = location
        self._request = self.client.request("query", params, finished=self._show_result,
                                            failed=self._show_error)
        return self._request

    def _where(self, index: str, location: QueryLocation) -> dict:
        if self.snap_check.isChecked() and not location.footprint_wkt and location.lonlat:
            tile = tile_at(index, *location.lonlat)
            if tile is not None:
                return {"tile": tile}
        return location.params()

    def _show_result(self, result: dict) -> None:
        hits = result.get("hits", [])
        project = QgsProject.instance()
        self.queries_made += 1
        self.hits_layer = hits_layer(hits, self.hits_layer,
                                     replace=not self.append_check.isChecked(),
                                     query=self.queries_made)
        replace_in_project(self.hits_layer, project)
        footprint = (result.get("query") or {}).get("footprint")
        if footprint:
            replace_in_project(query_layer(footprint), project)
            if self.map_tool is not None:
                self.map_tool.highlight(geometry_from_geojson(footprint),
                                        QgsCoordinateReferenceSystem(WGS84))
        self.grid.set_hits(hits)
        self.status_label.setText(f"{len(hits)} similar places" if hits else "No hits.")
        self.queryFinished.emit(result)

    def _show_error(self, code: str, message: str) -> None:
        location = self._location
        if code == "outside_index" and location is not None and not location.footprint_wkt:
            # the point lies outside the indexed rasters: query the raster under it instead
            size = tile_size_px(self.index_widget.filePath())
            retry = location.around(size) if size else None
            if retry is not None:
                log(f"point query failed ({message}); querying {retry.raster} around it")
                self.run_query(retry)
                return
        if code != "cancelled":
            self._fail(f"Query failed: {message}")

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        self.iface.messageBar().pushMessage("MrHash", message, Qgis.MessageLevel.Critical, 8)
        self.queryFailed.emit(message)

    # results
    def zoom_to_hit(self, hit: dict) -> None:
        canvas = self.iface.mapCanvas()
        geometry = geometry_from_geojson(hit["footprint"])
        geometry.transform(QgsCoordinateTransform(QgsCoordinateReferenceSystem(WGS84),
                                                  canvas.mapSettings().destinationCrs(),
                                                  QgsProject.instance()))
        extent = geometry.boundingBox()
        extent.scale(3.0)  # some context around the hit
        canvas.setExtent(extent)
        canvas.refresh()

    def add_hit_raster(self, hit: dict) -> QgsRasterLayer | None:
        path = str(hit["path"])
        layer = QgsRasterLayer(path, Path(path).stem)
        if not layer.isValid():
            self._fail(f"{path}: QGIS cannot open this raster")
            return None
        QgsProject.instance().addMapLayer(layer)
        return layer
