"""The dock's map of every place like the examples: *Map all like these* (or *Update* once
there is a map: the marks made since are used), a confidence slider that re-filters the
detections on the canvas at once, what it keeps in words, *Check* (detections shown in the
thumbnails, likeliest or most doubtful first, to mark), and export. Widgets and signals
only: the dock decides what they do."""

from __future__ import annotations

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from mrhash_qgis.core.detections import DOUBTFUL, LIKELIEST, Detections, counts_words
from mrhash_qgis.core.i18n import tr


class MapPanel(QWidget):
    """`mapRequested()`, `exportRequested()`, `checkRequested(order)` (LIKELIEST or
    DOUBTFUL); `threshold` is the slider's value in 0..1."""

    mapRequested = pyqtSignal()     # noqa: N815 (Qt signal naming)
    exportRequested = pyqtSignal()  # noqa: N815
    checkRequested = pyqtSignal(str)  # noqa: N815

    def __init__(self, parent=None):
        super().__init__(parent)
        self.detections: Detections | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.map_button = QPushButton(tr("Map all like these"))
        self.map_button.setToolTip(tr(
            "Score every tile of the index for the place you queried and your marks, and map "
            "the tiles likely like them, merged into areas"))
        self.map_button.clicked.connect(self.mapRequested)
        self.export_button = QPushButton(tr("Export map…"))
        self.export_button.setToolTip(tr("Write the detected areas and tiles to a "
                                         "GeoPackage, with the marks that made them"))
        self.export_button.clicked.connect(self.exportRequested)
        row.addWidget(self.map_button, 1)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        slider_row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(1, 99)
        self.slider.setValue(50)
        self.slider.setToolTip(tr("Confidence: how likely a tile must be like your examples "
                                  "to stay on the map"))
        self.slider.valueChanged.connect(self._filter)
        self.count_label = QLabel("")
        slider_row.addWidget(QLabel(tr("Confidence")))
        slider_row.addWidget(self.slider, 1)
        layout.addLayout(slider_row)
        layout.addWidget(self.count_label)
        check_row = QHBoxLayout()
        self.check_order = QComboBox()
        self.check_order.addItem(tr("most doubtful first"), DOUBTFUL)
        self.check_order.addItem(tr("likeliest first"), LIKELIEST)
        self.check_order.setToolTip(tr(
            "Most doubtful: the tiles scored nearest the confidence, where the map is most "
            "often wrong. Likeliest: the best detections."))
        self.check_button = QPushButton(tr("Check detections"))
        self.check_button.setToolTip(tr(
            "Show detections in the thumbnails above: mark the wrong ones ✗ and the right "
            "ones ✓, then Update the map"))
        self.check_button.clicked.connect(
            lambda: self.checkRequested.emit(self.check_order.currentData()))
        check_row.addWidget(self.check_button, 1)
        check_row.addWidget(self.check_order)
        layout.addLayout(check_row)
        self.show_detections(None)

    @property
    def threshold(self) -> float:
        return self.slider.value() / 100.0

    def show_detections(self, detections: Detections | None, threshold: float = 0.5) -> None:
        self.detections = detections
        has_map = detections is not None
        for widget in (self.slider, self.count_label, self.export_button, self.check_button,
                       self.check_order):
            widget.setEnabled(has_map)
        self.map_button.setText(tr("Update the map") if has_map else tr("Map all like these"))
        if has_map:
            self.slider.blockSignals(True)
            self.slider.setValue(round(100 * threshold))
            self.slider.blockSignals(False)
            self._filter(self.slider.value())
        else:
            self.count_label.setText(tr("No map yet: query, mark a few hits, then Map all like "
                                        "these."))

    def _filter(self, _value: int) -> None:
        if self.detections is None:
            return
        self.detections.filter(self.threshold)
        self.count_label.setText(counts_words(*self.detections.counts(), self.threshold))
