"""Thumbnail grid of query hits: rank + distance under each picture."""

from __future__ import annotations

import base64
from pathlib import Path

from qgis.PyQt.QtCore import QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPainter, QPixmap
from qgis.PyQt.QtWidgets import QListView, QListWidget, QListWidgetItem

THUMB_PX = 96
HIT_ROLE = Qt.ItemDataRole.UserRole


def hit_pixmap(thumbnail: str | None, size: int = THUMB_PX) -> QPixmap:
    """Pixmap of a hit thumbnail given as a PNG path or base64 PNG (data URI or bare); a grey
    placeholder when the engine sent none or it cannot be read."""
    pixmap = QPixmap()
    if thumbnail:
        if thumbnail.startswith("data:"):
            thumbnail = thumbnail.split(",", 1)[-1]
        if Path(thumbnail).suffix.lower() in (".png", ".jpg", ".jpeg") and Path(thumbnail).exists():
            pixmap.load(thumbnail)
        else:
            try:
                pixmap.loadFromData(base64.b64decode(thumbnail, validate=True))
            except ValueError:
                pass
    if pixmap.isNull():
        pixmap = QPixmap(size, size)
        pixmap.fill(QColor("#d0d0d0"))
        painter = QPainter(pixmap)
        painter.drawText(pixmap.rect(), Qt.AlignmentFlag.AlignCenter, "no preview")
        painter.end()
    return pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)


class ThumbnailGrid(QListWidget):
    """Icons of hits; `hitClicked` / `hitActivated` carry the hit dict."""

    hitClicked = pyqtSignal(dict)    # noqa: N815 (Qt signal naming)
    hitActivated = pyqtSignal(dict)  # noqa: N815

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setGridSize(QSize(THUMB_PX + 16, THUMB_PX + 34))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.itemClicked.connect(lambda item: self.hitClicked.emit(item.data(HIT_ROLE)))
        self.itemDoubleClicked.connect(lambda item: self.hitActivated.emit(item.data(HIT_ROLE)))

    def set_hits(self, hits: list[dict]) -> None:
        self.clear()
        for hit in hits:
            name = Path(str(hit.get("path", ""))).name
            item = QListWidgetItem(QIcon(hit_pixmap(hit.get("thumbnail"))),
                                   f"#{hit['rank']}  d={hit['distance']:g}")
            item.setToolTip(f"{name}\nwindow {hit.get('window')}\n"
                            "click: zoom · double-click: add the raster")
            item.setData(HIT_ROLE, hit)
            self.addItem(item)
