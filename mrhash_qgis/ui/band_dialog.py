"""Asked once per layer when a query layer's bands cannot be matched to the model's by what
they say: which of its bands the model should read as each of its own (red, green, blue, ...).
The answer is kept on the layer (core/band_layout.py), in the project."""

from __future__ import annotations

from qgis.core import QgsRasterLayer
from qgis.PyQt.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel

from mrhash_qgis.contract.band_profiles import role_words
from mrhash_qgis.core.band_layout import band_description, band_label, layer_layout
from mrhash_qgis.core.i18n import tr


class BandChoiceDialog(QDialog):
    def __init__(self, layer: QgsRasterLayer, needs: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash — which bands?"))
        layout = layer_layout(layer)
        form = QFormLayout(self)
        text = QLabel(tr("The model looks at {roles}. MrHash cannot tell which bands of "
                         "“{layer}” those are: choose them (kept for this layer).").format(
            roles=role_words(needs), layer=layer.name()))
        text.setWordWrap(True)
        form.addRow(text)
        self.combos: list[QComboBox] = []
        for position, role in enumerate(needs, start=1):
            combo = QComboBox()
            for band in range(1, layer.bandCount() + 1):
                combo.addItem(band_label(layout, band, band_description(layer, band)), band)
            guess = layout.band_of(role) if role else None
            combo.setCurrentIndex((guess or min(position, layer.bandCount())) - 1)
            form.addRow(role or tr("band {n} of the model").format(n=position), combo)
            self.combos.append(combo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def bands(self) -> list[int]:
        return [int(combo.currentData()) for combo in self.combos]
