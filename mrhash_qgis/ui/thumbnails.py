"""Thumbnail grid of query results: the query first, then the hits with rank + distance under
each picture; hits marked relevant / not relevant by the analyst get a green / red frame."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

from qgis.PyQt.QtCore import QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from qgis.PyQt.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QMenu

from mrhash_qgis.contract.protocol import IRRELEVANT, RELEVANT, QueryPlace
from mrhash_qgis.core.hits_layer import ShownHit
from mrhash_qgis.core.i18n import tr

THUMB_PX = 96
HIT_ROLE = Qt.ItemDataRole.UserRole
MARK_COLOURS = {RELEVANT: "#1a9850", IRRELEVANT: "#d73027", "query": "#00e5ff"}


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
        painter.drawText(pixmap.rect(), Qt.AlignmentFlag.AlignCenter, tr("no preview"))
        painter.end()
    return pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)


def framed(pixmap: QPixmap, colour: str | None) -> QPixmap:
    """A copy of `pixmap` with a thick frame of `colour` (None: unchanged)."""
    if not colour:
        return pixmap
    framed_pixmap = QPixmap(pixmap)
    painter = QPainter(framed_pixmap)
    painter.setPen(QPen(QColor(colour), 8))
    painter.drawRect(framed_pixmap.rect().adjusted(4, 4, -4, -4))
    painter.end()
    return framed_pixmap


def caption(hit: ShownHit, by_score: bool = False) -> str:
    """"#3  d=5" (Hamming distance, what a query is ranked by) or "#3  0.912" (the score a
    refined list is ranked by), with the analyst's mark."""
    if hit.is_query:
        return tr("query")
    mark = {RELEVANT: " ✓", IRRELEVANT: " ✗"}.get(hit.mark, "")
    if by_score:
        return f"#{hit.rank}  {hit.score:.3f}{mark}"
    return f"#{hit.rank}  d={hit.distance:g}{mark}"


class ThumbnailGrid(QListWidget):
    """Icons of the query and its hits; `hitClicked` / `hitActivated` carry the ShownHit (the
    query's has `is_query`); `markRequested(hits, mark)` asks to mark the selected hits
    (mark "relevant", "irrelevant" or "" to clear) from the context menu."""

    hitClicked = pyqtSignal(object)    # noqa: N815 (Qt signal naming)
    hitActivated = pyqtSignal(object)  # noqa: N815
    markRequested = pyqtSignal(list, str)  # noqa: N815

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setGridSize(QSize(THUMB_PX + 16, THUMB_PX + 34))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.by_score = False
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.itemClicked.connect(lambda item: self.hitClicked.emit(item.data(HIT_ROLE)))
        self.itemDoubleClicked.connect(lambda item: self.hitActivated.emit(item.data(HIT_ROLE)))

    def set_hits(self, hits: list[ShownHit], query: QueryPlace | None = None,
                 by_score: bool = False) -> None:
        """Show `query` (the query's footprint, path and thumbnail, if any) then `hits`;
        `by_score`: the captions show the score the hits are ranked by (a refine)."""
        self.clear()
        self.scrollToTop()  # new results from their first, wherever the last ones were read
        self.by_score = by_score
        if query is not None:
            self._add(ShownHit.query(query), tr("the place you queried; double-click: "
                                                      "zoom"))
        for hit in hits:
            self._add(hit, f"{Path(hit.path).name}\nwindow {hit.window}\n"
                      f"{tr('score')} {hit.score:.3f}\n"
                      + tr("click: show on the map · double-click: zoom and add the raster · "
                           "right-click: mark"))

    def _add(self, hit: ShownHit, tooltip: str) -> None:
        item = QListWidgetItem(caption(hit))
        item.setToolTip(tooltip)
        item.setData(HIT_ROLE, hit)
        self._paint(item)
        self.addItem(item)

    def _paint(self, item: QListWidgetItem) -> None:
        hit = item.data(HIT_ROLE)
        colour = MARK_COLOURS["query"] if hit.is_query else MARK_COLOURS.get(hit.mark)
        item.setIcon(QIcon(framed(hit_pixmap(hit.thumbnail), colour)))
        item.setText(caption(hit, self.by_score))

    def hit_items(self) -> list[QListWidgetItem]:
        return [self.item(row) for row in range(self.count())
                if not self.item(row).data(HIT_ROLE).is_query]

    def selected_hits(self) -> list[ShownHit]:
        return [item.data(HIT_ROLE) for item in self.selectedItems()
                if not item.data(HIT_ROLE).is_query]

    def set_mark(self, hit_id: int, mark: str) -> None:
        """Show hit `hit_id` as marked (`mark`: relevant, irrelevant or "")."""
        for item in self.hit_items():
            hit = item.data(HIT_ROLE)
            if hit.id == hit_id:
                item.setData(HIT_ROLE, replace(hit, mark=mark))
                self._paint(item)

    def _menu(self, position) -> None:
        hits = self.selected_hits()
        if not hits:
            return
        menu = QMenu(self)
        for text, mark in ((tr("Relevant (more like this)"), RELEVANT),
                           (tr("Not relevant (less like this)"), IRRELEVANT),
                           (tr("Clear the mark"), "")):
            menu.addAction(text).triggered.connect(
                lambda _checked=False, mark=mark: self.markRequested.emit(hits, mark))
        menu.exec(self.viewport().mapToGlobal(position))
