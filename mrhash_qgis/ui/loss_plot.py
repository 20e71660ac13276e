"""A small line plot of the training losses, one line per series (autoencoder, hash, the
hash stage's code KL), one x position per epoch, painted with QPainter (no matplotlib)."""

from __future__ import annotations

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPainterPath, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

from mrhash_qgis.core.i18n import tr

GAP = 4  # px between labels and the plot's frame
STAGE_COLOURS = ("#1d4e89", "#e07a1f", "#2a9d8f", "#7b2cbf")


class LossPlot(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[str, float]] = []  # (series, loss) in arrival order
        self.positions: list[int] = []  # x position (epoch number over both stages) of each
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add(self, value: float, stage: str = "loss", same_epoch: bool = False) -> None:
        """A point at the next epoch, or at the last point's epoch with `same_epoch` (another
        measure of that epoch)."""
        last = self.positions[-1] if self.positions else -1
        self.positions.append(last if same_epoch and self.positions else last + 1)
        self.points.append((stage, float(value)))
        self.update()

    def clear(self) -> None:
        self.points.clear()
        self.positions.clear()
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("white"))
        # the margins follow the font, so labels fit at any UI font size
        metrics = painter.fontMetrics()
        line = metrics.height()
        values = [v for _, v in self.points]
        low, high = (min(values), max(values)) if values else (0.0, 0.0)
        y_labels = (f"{high:.3g}", f"{low:.3g}")
        left = max(metrics.horizontalAdvance(text) for text in y_labels) + 2 * GAP
        area = QRectF(left, line + GAP, self.width() - left - 2 * GAP,
                      self.height() - 2 * (line + GAP))
        painter.setPen(QPen(QColor("#888888"), 1))
        painter.drawRect(area)
        if not self.points:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, tr("losses appear here"))
            painter.end()
            return
        span = (high - low) or 1.0
        n = self.positions[-1] + 1
        stages = list(dict.fromkeys(stage for stage, _ in self.points))

        def at(i: int, value: float) -> QPointF:
            x = area.left() + (area.width() * i / (n - 1) if n > 1 else area.width() / 2)
            return QPointF(x, area.bottom() - area.height() * (value - low) / span)

        legend_x = area.left()
        for s, stage in enumerate(stages):
            colour = QColor(STAGE_COLOURS[s % len(STAGE_COLOURS)])
            path = QPainterPath()
            mine = [(x, v) for x, (st, v) in zip(self.positions, self.points, strict=True)
                    if st == stage]
            for j, (i, value) in enumerate(mine):
                path.moveTo(at(i, value)) if j == 0 else path.lineTo(at(i, value))
            painter.setPen(QPen(colour, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(path)
            painter.setBrush(colour)
            for i, value in mine:
                painter.drawEllipse(at(i, value), 2.5, 2.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            legend = f"— {stage}"
            width = metrics.horizontalAdvance(legend)
            painter.drawText(QRectF(legend_x, 0, width, line), Qt.AlignmentFlag.AlignLeft,
                             legend)
            legend_x += width + 4 * GAP
        painter.setPen(QColor("#333333"))
        for text, y in zip(y_labels, (area.top(), area.bottom()), strict=True):
            painter.drawText(QRectF(0, y - line / 2, left - GAP, line),
                             Qt.AlignmentFlag.AlignRight, text)
        painter.drawText(QRectF(area.left(), area.bottom() + GAP / 2, area.width(), line),
                         Qt.AlignmentFlag.AlignCenter, tr("{n} epochs").format(n=n))
        painter.end()
