""""STAC catalogue…": an auxiliary source found by coordinates in a STAC catalogue. The user
gives the catalogue's URL (a static catalogue, a collection, an item collection or an API),
optionally a collection, the assets (bands) to read, dates and a cloud-cover limit; Search
asks the engine (`stac_items`, over the primary's extent) which items cover the place and
draws their outlines on the canvas. OK gives the wizard the engine's source description: the
engine pulls the items' assets over each primary footprint when it trains."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsGeometry
from qgis.PyQt.QtCore import QDate
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.protocol import StacItem, StacItemsResult
from mrhash_qgis.core.engine_client import EngineClient, EngineRequest
from mrhash_qgis.core.hits_layer import geometry_from_geojson
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.map_tool import polygon_band

ITEM_COLOUR = QColor("#2a9d8f")
NO_LIMIT = 100  # the cloud spin box at 100 %: no limit


class StacDialog(QDialog):
    """URL, collection, assets, dates, cloud limit; Search shows the items found."""

    def __init__(self, client: EngineClient, canvas,
                 bbox: Callable[[], tuple[float, float, float, float]], parent=None):
        """`bbox` gives where to search (EPSG:4326) when Search is pressed: the wizard's
        primary outline may arrive from the engine after the dialog opened."""
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash — STAC catalogue"))
        self.setMinimumWidth(680)
        self.client, self.canvas, self.bbox = client, canvas, bbox
        self.items: list[StacItem] = []
        self.bands: list = []  # QgsRubberBand of each item found
        self._search: EngineRequest | None = None
        form = QFormLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText(tr("https://…/collections/sentinel-2-l2a or "
                                            "…/catalog.json"))
        self.collection_edit = QLineEdit()
        self.collection_edit.setPlaceholderText(tr("for an API root: the collection id"))
        self.assets_edit = QLineEdit()
        self.assets_edit.setPlaceholderText(tr("assets (bands), e.g. B05,B8A,B11"))
        self.dates_check = QCheckBox(tr("From"))
        self.date_from, self.date_to = QDateEdit(), QDateEdit()
        for edit, date in ((self.date_from, QDate.currentDate().addYears(-1)),
                           (self.date_to, QDate.currentDate())):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setDate(date)
            edit.setMinimumWidth(130)
        dates = QHBoxLayout()
        for widget in (self.dates_check, self.date_from, QLabel(tr("to")), self.date_to):
            dates.addWidget(widget)
        dates.addStretch(1)
        self.cloud_spin = QSpinBox()
        self.cloud_spin.setRange(0, NO_LIMIT)
        self.cloud_spin.setValue(NO_LIMIT)
        self.cloud_spin.setSuffix(" %")
        form.addRow(tr("Catalogue URL"), self.url_edit)
        form.addRow(tr("Collection"), self.collection_edit)
        form.addRow(tr("Assets"), self.assets_edit)
        form.addRow(tr("Dates"), dates)
        form.addRow(tr("Cloud cover at most"), self.cloud_spin)
        self.search_button = QPushButton(tr("Search"))
        self.search_button.clicked.connect(self.search)
        self.status_label = QLabel(tr("Search shows the items covering the primary source."))
        self.status_label.setWordWrap(True)
        self.list = QListWidget()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.search_button)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        layout.addWidget(self.list)
        layout.addWidget(self.buttons)
        self.finished.connect(self._closed)

    # what the engine is asked
    def date_range(self) -> str | None:
        if not self.dates_check.isChecked():
            return None
        return (f"{self.date_from.date().toString('yyyy-MM-dd')}/"
                f"{self.date_to.date().toString('yyyy-MM-dd')}")

    def max_cloud(self) -> float | None:
        return None if self.cloud_spin.value() >= NO_LIMIT else float(self.cloud_spin.value())

    def assets(self) -> list[str]:
        return [a.strip() for a in self.assets_edit.text().split(",") if a.strip()]

    def query(self) -> dict:
        params = {"url": self.url_edit.text().strip(), "bbox": list(self.bbox())}
        for key, value in (("collection", self.collection_edit.text().strip() or None),
                           ("date", self.date_range()), ("max_cloud", self.max_cloud())):
            if value is not None:
                params[key] = value
        return params

    def source(self) -> dict:
        """The engine's auxiliary entry (the train request's `auxiliary` item)."""
        params = self.query()
        entry = {"stac": params["url"], "assets": self.assets()}
        for key in ("collection", "date", "max_cloud"):
            if key in params:
                entry[key] = params[key]
        return entry

    def coverage(self) -> QgsGeometry | None:
        """The union of the items found (EPSG:4326)."""
        outlines = [geometry_from_geojson(item.geometry) for item in self.items]
        return QgsGeometry.unaryUnion(outlines) if outlines else None

    # searching
    def search(self) -> None:
        if not self.url_edit.text().strip():
            self.status_label.setText(tr("Give the catalogue's URL."))
            return
        self.search_button.setEnabled(False)
        self.status_label.setText(tr("Searching…"))
        self._search = self.client.request(protocol.STAC_ITEMS, self.query(), finished=self._found,
                                           failed=self._failed)

    def _found(self, answer: dict) -> None:
        self.search_button.setEnabled(True)
        self.items = StacItemsResult.from_result(answer).items
        self.list.clear()
        for item in self.items:
            cloud = item.cloud_cover
            self.list.addItem(tr("{id} · {date} · cloud {cloud}").format(
                id=item.id, date=(item.datetime or "?")[:10],
                cloud="?" if cloud is None else f"{cloud:.0f}%"))
        self.status_label.setText(tr("{n} items cover the primary source (most coverage "
                                     "first); they are drawn on the map.").format(
                                         n=len(self.items)) if self.items else
                                  tr("No item covers the primary source with these filters."))
        self.draw()
        self._update_ok()

    def _failed(self, _code: str, message: str) -> None:
        self.search_button.setEnabled(True)
        self.items = []
        self.list.clear()
        self.status_label.setText(tr("Search failed: {message}").format(message=message))
        self.draw()
        self._update_ok()

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(
            bool(self.items and self.assets()))

    def draw(self) -> None:
        self.clear_canvas()
        from qgis.core import QgsCoordinateReferenceSystem

        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        for item in self.items:
            band = polygon_band(self.canvas, ITEM_COLOUR, 40)
            band.setToGeometry(geometry_from_geojson(item.geometry), wgs84)
            self.bands.append(band)

    def clear_canvas(self) -> None:
        for band in self.bands:
            self.canvas.scene().removeItem(band)
        self.bands.clear()

    def _closed(self, _code: int) -> None:
        self.clear_canvas()
