"""Settings: which Python runs the engine, and the default device for training."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from mrhash_qgis.core.engine_client import EngineClient, EngineError
from mrhash_qgis.core.settings import EngineSettings, default_interpreter

DEVICES = ("auto", "cpu", "cuda")


class SettingsDialog(QDialog):
    def __init__(self, client: EngineClient, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MrHash settings")
        self.setMinimumWidth(560)
        self.client = client
        current = EngineSettings.load()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.python_widget = QgsFileWidget()
        self.python_widget.setFilePath(current.python)
        self.python_widget.setToolTip(
            f"A Python with the MrHash engine installed. Default: {default_interpreter()}")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(current.device)
        form.addRow("Engine Python", self.python_widget)
        form.addRow("Device", self.device_combo)
        layout.addLayout(form)
        hint = QLabel("The engine runs in its own Python (torch, faiss, rasterio). "
                      "Use the project's .venv/bin/python, or any Python where "
                      "<code>pip install -r engine/requirements.txt</code> was run.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.test_button = QPushButton("Test engine")
        self.test_button.clicked.connect(self.test_engine)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        layout.addWidget(self.test_button)
        layout.addWidget(self.result_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def chosen(self) -> EngineSettings:
        return EngineSettings(self.python_widget.filePath().strip(),
                              self.device_combo.currentText())

    def test_engine(self) -> None:
        """Restart the worker with the chosen settings and show its status."""
        self.client.settings = self.chosen()
        self.client.stop()
        try:
            info = self.client.wait_ready(timeout=60)
            status = self.client.call("status", timeout=30)
            device = status.get("device_name") or info.get("device")
            self.result_label.setText(f"OK: mrhash {info.get('version')} on {device}")
        except EngineError as error:
            self.result_label.setText(f"Engine failed: {error.message}")

    def accept(self) -> None:
        self.chosen().save()
        self.client.settings = None  # read from QgsSettings again
        self.client.restart()
        super().accept()
