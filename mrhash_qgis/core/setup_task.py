"""*Set up the engine* as a QGIS task: progress in the task manager and in the plugin's
widgets, cancel from either; the worker is stopped while its environment changes and
started again on the new one."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from mrhash_qgis.core import settings
from mrhash_qgis.core.engine_client import EngineClient, log
from mrhash_qgis.core.environment import (
    LOG_NAME,
    SetupError,
    SetupOptions,
    remove_env,
    setup_engine,
)
from mrhash_qgis.core.i18n import tr


class EngineSetupTask(QgsTask):
    stepped = pyqtSignal(float, str)
    done = pyqtSignal(dict)
    error = pyqtSignal(str, str)  # code, message

    def __init__(self, options: SetupOptions):
        super().__init__(tr("MrHash: set up the engine"), QgsTask.Flag.CanCancel)
        self.options = options
        self.stamp: dict = {}
        self.failure: SetupError | None = None

    def _step(self, fraction: float, message: str) -> None:
        self.setProgress(100.0 * fraction)
        self.stepped.emit(fraction, message)

    def run(self) -> bool:
        try:
            self.stamp = setup_engine(self.options, self._step, self.isCanceled, log)
            return True
        except SetupError as error:
            self.failure = error
        except Exception as error:  # noqa: BLE001 (a task must end with a message, never raise)
            self.failure = SetupError("internal", f"{type(error).__name__}: {error}")
        return False

    def finished(self, ok: bool) -> None:
        if ok:
            self.done.emit(self.stamp)
        else:
            failure = self.failure or SetupError("cancelled",
                                                 tr("The engine set-up was cancelled."))
            self.error.emit(failure.code, failure.message)


class EngineSetup(QObject):
    """One set-up at a time for the whole plugin; the dock and Settings both drive it."""

    started = pyqtSignal()
    stepped = pyqtSignal(float, str)
    finished = pyqtSignal(bool, str)  # ok, message

    def __init__(self, client: EngineClient):
        super().__init__()
        self.client = client
        self.task: EngineSetupTask | None = None
        self.last_message = ""

    @property
    def running(self) -> bool:
        return self.task is not None

    @staticmethod
    def log_path() -> Path:
        return settings.managed_target() / LOG_NAME

    def start(self, fresh: bool) -> EngineSetupTask | None:
        """Set up (`fresh`: from scratch) or repair the profile's engine environment."""
        if self.task is not None:
            return None
        # the environment's files must not be in use while pip replaces them (Windows locks)
        self.client.stop()
        task = EngineSetupTask(settings.setup_options(fresh))
        task.stepped.connect(self._on_step)
        task.done.connect(self._on_done)
        task.error.connect(self._on_error)
        self.task = task
        self.started.emit()
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def remove(self) -> None:
        """Delete the profile's environment (SetupError when the folder is not one)."""
        self.client.stop()
        remove_env(settings.managed_target())
        self.client.settings = None
        self.client.start()  # shows "not set up" with its advice

    def _on_step(self, _fraction: float, message: str) -> None:
        self.last_message = message
        self.stepped.emit(_fraction, message)

    def _on_done(self, stamp: dict) -> None:
        self.task = None
        self.last_message = tr("Engine ready: mrhash {engine}, torch {torch} ({device})").format(
            engine=stamp.get("engine"), torch=stamp.get("torch"), device=stamp.get("device"))
        settings.ENGINE_PYTHON.put("")  # the user asked for this environment: use it
        self.client.settings = None
        self.client.restart()
        self.finished.emit(True, self.last_message)

    def _on_error(self, code: str, message: str) -> None:
        self.task = None
        self.last_message = message
        log(f"engine set-up failed [{code}]: {message}")
        self.client.settings = None
        self.client.start()
        self.finished.emit(False, message)
