"""The dock's results part: the thumbnail grid, marking hits relevant / not relevant and
Refine, the map of every place like them, export of the hits, and the project's saved
searches. Widgets and signals only: the
dock decides what they do."""

from __future__ import annotations

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.searches import Search
from mrhash_qgis.ui.map_panel import MapPanel
from mrhash_qgis.ui.thumbnails import ThumbnailGrid


def _button(text: str, tooltip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    return button


class ResultsPanel(QWidget):
    """`markRequested(hits, mark)`, `refineRequested()`, `exportRequested()`,
    `saveRequested()`, `runRequested(Search)`."""

    markRequested = pyqtSignal(list, str)  # noqa: N815 (Qt signal naming)
    refineRequested = pyqtSignal()         # noqa: N815
    exportRequested = pyqtSignal()         # noqa: N815
    saveRequested = pyqtSignal()           # noqa: N815
    runRequested = pyqtSignal(object)      # noqa: N815

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.grid = ThumbnailGrid()
        self.grid.markRequested.connect(self.markRequested)
        layout.addWidget(self.grid, 1)

        marks = QHBoxLayout()
        self.relevant_button = _button(tr("✓ Relevant"), tr(
            "Mark the selected thumbnails as what you are looking for"))
        self.irrelevant_button = _button(tr("✗ Not relevant"), tr(
            "Mark the selected thumbnails as what you are not looking for"))
        self.refine_button = _button(tr("Refine"), tr(
            "Search the whole index again, for places like the query and the hits marked "
            "relevant and unlike those marked not relevant (marks add up over rounds)"))
        self.relevant_button.clicked.connect(
            lambda: self.markRequested.emit(self.grid.selected_hits(), RELEVANT))
        self.irrelevant_button.clicked.connect(
            lambda: self.markRequested.emit(self.grid.selected_hits(), IRRELEVANT))
        self.refine_button.clicked.connect(self.refineRequested)
        for button in (self.relevant_button, self.irrelevant_button, self.refine_button):
            marks.addWidget(button)
        layout.addLayout(marks)
        self.map_panel = MapPanel()
        layout.addWidget(self.map_panel)

        keep = QHBoxLayout()
        self.export_button = _button(tr("Export hits…"), tr(
            "Write the hits layer to a GeoPackage or a CSV file"))
        self.export_button.clicked.connect(self.exportRequested)
        self.saved_combo = QComboBox()
        self.saved_combo.setToolTip(tr("Searches saved in this project"))
        self.save_button = _button(tr("Save search…"), tr(
            "Keep this search (place, marks, k, filters) in the project, to run it again later"))
        self.save_button.clicked.connect(self.saveRequested)
        self.run_button = _button(tr("Run"), tr("Run the saved search chosen on the left"))
        self.run_button.clicked.connect(self._run_saved)
        keep.addWidget(self.export_button)
        keep.addWidget(self.saved_combo, 1)
        keep.addWidget(self.save_button)
        keep.addWidget(self.run_button)
        layout.addLayout(keep)
        self.show_search(None)
        self.set_saved([])

    def show_search(self, search: Search | None) -> None:
        """Enable what makes sense for the current search and count its examples."""
        has_hits = bool(self.grid.hit_items())
        for button in (self.relevant_button, self.irrelevant_button, self.export_button):
            button.setEnabled(has_hits)
        self.save_button.setEnabled(search is not None)
        self.map_panel.map_button.setEnabled(search is not None)
        self.refine_button.setEnabled(search is not None and bool(search.marks))
        if search is not None and search.marks:
            self.refine_button.setText(tr("Refine ({relevant} ✓, {irrelevant} ✗)").format(
                relevant=search.n_relevant, irrelevant=search.n_irrelevant))
        else:
            self.refine_button.setText(tr("Refine"))

    def set_saved(self, searches: list[Search]) -> None:
        self.saved_combo.clear()
        for search in searches:
            self.saved_combo.addItem(search.name, search)
        self.run_button.setEnabled(bool(searches))
        self.saved_combo.setEnabled(bool(searches))
        if not searches:
            self.saved_combo.addItem(tr("(no saved search)"))

    def _run_saved(self) -> None:
        search = self.saved_combo.currentData()
        if isinstance(search, Search):
            self.runRequested.emit(search)
