"""Settings: the engine's environment (set up, repair, remove, another Python), how it is
installed (torch build, offline wheel folder, index URL), the device for jobs, an asynchronous
engine test and the diagnostics report."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from mrhash_qgis.contract import protocol
from mrhash_qgis.contract.choices import DEVICES
from mrhash_qgis.contract.protocol import DoctorResult
from mrhash_qgis.core import settings
from mrhash_qgis.core.diagnostics import report
from mrhash_qgis.core.engine_client import FIX_SETUP, STATE_FAILED, STATE_READY, EngineClient
from mrhash_qgis.core.environment import BUILD_DEVICES, SetupError, nvidia_gpu
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.core.settings import EngineSettings
from mrhash_qgis.core.setup_task import EngineSetup


def _dir_widget(path: str, tooltip: str) -> QgsFileWidget:
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
    widget.setFilePath(path)
    widget.setToolTip(tooltip)
    return widget


class SettingsDialog(QDialog):
    def __init__(self, client: EngineClient, setup: EngineSetup | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("MrHash settings"))
        self.setMinimumWidth(620)
        self.client = client
        self.setup = setup or EngineSetup(client)
        current = EngineSettings.load()
        layout = QVBoxLayout(self)

        engine_box = QGroupBox(tr("Engine"))
        engine_layout = QVBoxLayout(engine_box)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        engine_layout.addWidget(self.state_label)
        buttons_row = QHBoxLayout()
        self.setup_button = QPushButton(tr("Set up the engine"))
        self.setup_button.setToolTip(tr("Build the engine's private environment from scratch "
                                        "(PyTorch, FAISS, rasterio and the engine bundled with "
                                        "this plugin) in your QGIS profile"))
        self.setup_button.clicked.connect(lambda: self.start_setup(fresh=True))
        self.repair_button = QPushButton(tr("Repair"))
        self.repair_button.setToolTip(tr("Reinstall what is missing or outdated, keep the rest"))
        self.repair_button.clicked.connect(lambda: self.start_setup(fresh=False))
        self.remove_button = QPushButton(tr("Remove"))
        self.remove_button.setToolTip(tr("Delete the private environment (frees its disk "
                                         "space)"))
        self.remove_button.clicked.connect(self.remove)
        self.log_button = QPushButton(tr("Show set-up log"))
        self.log_button.clicked.connect(self.show_log)
        for button in (self.setup_button, self.repair_button, self.remove_button,
                       self.log_button):
            buttons_row.addWidget(button)
        engine_layout.addLayout(buttons_row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        engine_layout.addWidget(self.progress)
        other = QFormLayout()
        self.python_widget = QgsFileWidget()
        self.python_widget.setFilePath(current.python if current.kind == "custom" else "")
        self.python_widget.lineEdit().setPlaceholderText(tr("empty: the private environment"))
        self.python_widget.setToolTip(tr("Use another Python: an interpreter where the "
                                         "engine's requirements are installed "
                                         "(engine/requirements.txt). The engine bundled with "
                                         "the plugin runs in it."))
        other.addRow(tr("Use another Python"), self.python_widget)
        engine_layout.addLayout(other)
        layout.addWidget(engine_box)

        install_box = QGroupBox(tr("How the engine is installed"))
        install = QFormLayout(install_box)
        self.build_combo = QComboBox()
        gpu = nvidia_gpu()
        auto_text = (tr("auto (NVIDIA {gpu}: CUDA)").format(gpu=gpu) if gpu
                     else tr("auto (no NVIDIA GPU: CPU)"))
        for device in BUILD_DEVICES:
            self.build_combo.addItem(auto_text if device == "auto" else device, device)
        self.build_combo.setCurrentIndex(BUILD_DEVICES.index(settings.SETUP_DEVICE.get()))
        self.wheels_widget = _dir_widget(settings.SETUP_FIND_LINKS.get(),
                                         tr("Install offline from this folder of wheels only"))
        self.index_edit = QLineEdit(settings.SETUP_INDEX_URL.get())
        self.index_edit.setPlaceholderText(tr("default: PyPI (and PyTorch's index for the "
                                              "build)"))
        self.base_widget = QgsFileWidget()
        self.base_widget.setFilePath(settings.SETUP_PYTHON.get())
        self.base_widget.lineEdit().setPlaceholderText(tr("empty: found automatically"))
        install.addRow(tr("PyTorch build"), self.build_combo)
        install.addRow(tr("Wheel folder (offline)"), self.wheels_widget)
        install.addRow(tr("Package index URL"), self.index_edit)
        install.addRow(tr("Base Python"), self.base_widget)
        layout.addWidget(install_box)

        jobs = QFormLayout()
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(current.device)
        jobs.addRow(tr("Device for jobs"), self.device_combo)
        layout.addLayout(jobs)

        tools = QHBoxLayout()
        self.test_button = QPushButton(tr("Test engine"))
        self.test_button.setToolTip(tr("Start the engine and load every part of it (PyTorch, "
                                       "FAISS, rasterio, Pillow, the backbone weights)"))
        self.test_button.clicked.connect(self.test_engine)
        self.report_button = QPushButton(tr("Copy diagnostics report"))
        self.report_button.setToolTip(tr("Copy what to paste into an issue: versions, paths, "
                                         "engine state and its last errors"))
        self.report_button.clicked.connect(self.copy_report)
        tools.addWidget(self.test_button)
        tools.addWidget(self.report_button)
        layout.addLayout(tools)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        layout.addWidget(self.result_label)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setMinimumHeight(120)
        layout.addWidget(self.output)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        self.setup.started.connect(self.refresh)
        self.setup.stepped.connect(self._on_step)
        self.setup.finished.connect(self._on_setup_finished)
        self.client.stateChanged.connect(lambda _state: self.refresh())
        self.refresh()

    # state
    def refresh(self) -> None:
        state = settings.managed_state()
        engine = EngineSettings.load()
        running = self.setup.running
        uses = {"custom": tr("another Python ({python})"),
                "managed": tr("the private environment"), "checkout": tr("the checkout's {python}"),
                "none": tr("no engine yet")}[engine.kind].format(python=engine.python)
        if running:
            headline = tr("Setting up the engine… you can keep working in QGIS meanwhile.")
        elif state.state == "missing" and engine.kind in ("custom", "checkout"):
            headline = tr("No private engine environment (not needed while another Python is "
                          "used).")
        else:
            headline = state.message
        self.state_label.setText(tr("<b>{headline}</b><br>Private environment: {target}<br>The "
                                    "plugin uses {uses}. {engine}").format(
            headline=headline, target=state.target, uses=uses, engine=self._engine_text()))
        self.setup_button.setText(tr("Cancel set-up") if running else
                                  tr("Set up again") if state.state != "missing"
                                  else tr("Set up the engine"))
        self.repair_button.setEnabled(not running and state.state in ("incomplete", "outdated",
                                                                      "ready"))
        self.remove_button.setEnabled(not running and state.state != "missing")
        self.progress.setVisible(running)

    def _engine_text(self) -> str:
        if self.client.state == STATE_READY:
            return tr("Engine ready · {device} · mrhash {version}").format(
                device=self.client.info.get("device"), version=self.client.info.get("version"))
        if self.client.state == STATE_FAILED and self.client.fix != FIX_SETUP:
            return tr("Engine failed: {error}").format(
                error=self.client.last_error.splitlines()[0])
        return ""

    # set-up, repair, remove
    def save_setup_options(self) -> None:
        settings.SETUP_DEVICE.put(self.build_combo.currentData())
        settings.SETUP_FIND_LINKS.put(self.wheels_widget.filePath().strip())
        settings.SETUP_INDEX_URL.put(self.index_edit.text().strip())
        settings.SETUP_PYTHON.put(self.base_widget.filePath().strip())

    def start_setup(self, fresh: bool) -> None:
        if self.setup.running:
            self.setup.cancel()
            return
        self.save_setup_options()
        self.output.clear()
        self.progress.setValue(0)
        self.setup.start(fresh)

    def _on_step(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(100 * fraction))
        self.output.appendPlainText(message)

    def _on_setup_finished(self, ok: bool, message: str) -> None:
        self.result_label.setText(message if ok else tr("Set-up failed: {message}").format(
            message=message))
        if ok:
            self.python_widget.setFilePath("")
        self.refresh()

    def remove(self) -> None:
        target = settings.managed_target()
        answer = QMessageBox.question(self, "MrHash", tr(
            "Delete the engine environment in {target}? You can set it up again later.").format(
                target=target))
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            self.setup.remove()
            self.result_label.setText(tr("Removed {target}.").format(target=target))
        except (SetupError, OSError) as error:
            self.result_label.setText(tr("Could not remove {target}: {error}").format(
                target=target, error=error))
        self.refresh()

    def show_log(self) -> None:
        path = self.setup.log_path()
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = [tr("No set-up log yet ({path}).").format(path=path)]
        self.output.setPlainText("\n".join(lines[-400:]))
        self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())

    # test and report (asynchronous: QGIS never waits on the engine)
    def chosen(self) -> EngineSettings:
        python = self.python_widget.filePath().strip()
        if python:
            return EngineSettings(python, self.device_combo.currentText(), "custom")
        default = EngineSettings.load()
        if default.kind == "custom":  # the field was just cleared: back to the default
            settings.ENGINE_PYTHON.put("")
            default = EngineSettings.load()
        return EngineSettings(default.python, self.device_combo.currentText(), default.kind)

    def test_engine(self) -> None:
        """Restart the worker with the chosen settings and ask it to load every part."""
        self.client.settings = self.chosen()
        self.client.stop()
        self.result_label.setText(tr("Testing the engine…"))
        self.test_button.setEnabled(False)
        self.client.request(protocol.DOCTOR, finished=self._tested, failed=self._test_failed)

    def _tested(self, answer: dict) -> None:
        self.test_button.setEnabled(True)
        result = DoctorResult.from_result(answer)
        if result.ok:
            self.result_label.setText(tr("OK: mrhash {engine} on {device} · torch {torch} · "
                                         "GDAL {gdal}").format(
                engine=result.engine, device=result.device_name or result.device,
                torch=result.packages.get("torch"), gdal=result.gdal))
        else:
            problems = "; ".join(f"{p.package or p.module}: {p.message}" for p in result.problems)
            self.result_label.setText(tr("Engine incomplete: {problems}. Press Repair.").format(
                problems=problems))
        self.output.setPlainText(report(self.client, result))
        self.refresh()

    def _test_failed(self, _code: str, message: str) -> None:
        self.test_button.setEnabled(True)
        self.result_label.setText(tr("Engine failed: {error}").format(error=message))
        self.refresh()

    def copy_report(self) -> None:
        def copy(answer: dict | None) -> None:
            text = report(self.client, DoctorResult.from_result(answer) if answer else None)
            QgsApplication.clipboard().setText(text)
            self.output.setPlainText(text)
            self.result_label.setText(tr("Diagnostics report copied to the clipboard."))

        if self.client.state == STATE_READY:
            self.client.request(protocol.DOCTOR, finished=copy, failed=lambda _c, _m: copy(None))
        else:
            copy(None)

    def accept(self) -> None:
        self.save_setup_options()
        self.chosen().save()
        self.client.settings = None  # read from QgsSettings again
        if not self.setup.running:
            self.client.restart()
        super().accept()
