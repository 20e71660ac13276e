"""The training wizard trains a real (tiny) model: primary + auxiliary folder; it never loses
the user's work: training is a QgsTask that survives the wizard, Back is locked and Cancel open
while it runs, closing asks first, the model's path is checked before training, and the
parameters are remembered."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import TINY_TRAINING, screenshot, wait_for
from qgis.core import QgsApplication, QgsProject, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QPushButton, QWizard

from mrhash_qgis.core.environment import PLUGIN_DIR

LONG = {"epochs": 500, "ae_epochs": 500}  # runs until cancelled


@pytest.fixture(autouse=True)
def _forget_training_settings():
    """Each test starts from the wizard's defaults, and leaves none of its own behind."""
    QgsSettings().remove("mrhash/train")
    yield
    QgsSettings().remove("mrhash/train")


class Run:
    """A wizard driven through its pages, with what its signals said."""

    def __init__(self, wizard):
        self.wizard = wizard
        self.models: list[str] = []
        self.failures: list[str] = []
        self.progress: list[dict] = []
        self.index_requests: list[str] = []
        wizard.modelTrained.connect(self.models.append)
        wizard.trainingFailed.connect(self.failures.append)
        wizard.trainingProgress.connect(self.progress.append)
        wizard.indexRequested.connect(self.index_requests.append)

    def button(self, which: QWizard.WizardButton):
        return self.wizard.button(which)

    def answer_close(self, name: str) -> None:
        """Click one answer of the real "Training is running" question."""
        question = self.wizard.close_question
        assert question is not None and question.isVisible()
        question.findChild(QPushButton, name).click()

    def ended(self) -> bool:
        return bool(self.models or self.failures)


def at_parameters(iface, client, primary: Path, model: Path, **params) -> Run:
    """A shown wizard on its parameters page, primary folder chosen, `params` set."""
    from mrhash_qgis.ui.train_wizard import TrainWizard

    wizard = TrainWizard(iface, client)
    wizard.primary_page.picker.use_folder(str(primary))
    wizard.show()
    wizard.next()
    wizard.next()
    page = wizard.params_page
    values = {**TINY_TRAINING, **params}
    page.bits_combo.setCurrentText(str(values["bits"]))
    page.clusters_spin.setValue(values["clusters"])
    page.epochs_spin.setValue(values["epochs"])
    page.ae_epochs_spin.setValue(values["ae_epochs"])
    page.patch_spin.setValue(values["patch_size"])
    page.device_combo.setCurrentText("cpu")
    page.output_widget.setFilePath(str(model))
    return Run(wizard)


def training_tasks() -> list:
    return [task for task in QgsApplication.taskManager().activeTasks()
            if task.description().startswith("MrHash: train")]


def test_wizard_trained_and_saved_the_model(trained):
    wizard = trained.wizard
    page = wizard.train_page
    assert Path(trained.model).is_file()
    assert page.result.model == trained.model
    assert page.isComplete()
    assert page.progress.value() == 100
    # the loss plot received every epoch of both stages
    stages = [stage for stage, _ in page.plot.points]
    assert stages.count("hash") == TINY_TRAINING["epochs"]
    assert stages.count("autoencoder") == TINY_TRAINING["ae_epochs"]
    # each hash epoch also plots its code KL, at that epoch's position
    assert stages.count("code KL") == TINY_TRAINING["epochs"]
    placed = list(zip(page.plot.positions, page.plot.points, strict=True))
    hash_x = [x for x, (st, _) in placed if st == "hash"]
    kl_x = [x for x, (st, _) in placed if st == "code KL"]
    assert hash_x == kl_x and max(page.plot.positions) + 1 == (
        TINY_TRAINING["epochs"] + TINY_TRAINING["ae_epochs"])
    assert page.index_button.isEnabled()
    assert wizard.button(QWizard.WizardButton.BackButton).isEnabled()  # unlocked once done
    # the engine's label-free model report, in plain words
    report = page.result.report
    assert "separates your tiles" in report["verdict"]
    text = page.report_label.text()
    assert report["verdict"] in text and "distinct codes" in text and "Clusters:" in text
    # the report never covers the loss plot at the wizard's default size
    assert page.plot.height() >= page.plot.minimumHeight() >= 220
    screenshot(wizard, "wizard_4_training")


def test_wizard_sent_the_auxiliary_source(trained, s2):
    params = trained.wizard.request().to_params()
    assert params["primary"] == {"folder": str(s2.primary_dir)}
    assert params["auxiliary"] == [{"folder": str(s2.aux_dir), "name": "aux1"}]


def test_auxiliary_overlap_is_measured(trained):
    page = trained.wizard.auxiliary_page
    page.refresh_overlap()
    wait_for(lambda: "covers" in page.overlap_label.text(), 60, "the folders' footprints")
    share = float(page.overlap_label.text().split("covers ")[1].split("%")[0])
    assert share >= 95  # the 20 m crop covers the same 3.2 km square
    page.clear_canvas()


def test_bad_primary_fails_with_the_file_name(qgis_iface, engine, tmp_path):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    not_raster = tmp_path / "empty"
    not_raster.mkdir()
    wizard = TrainWizard(qgis_iface, engine)
    wizard.primary_page.picker.use_folder(str(not_raster))
    wizard.params_page.output_widget.setFilePath(str(tmp_path / "m.safetensors"))
    failures: list[str] = []
    wizard.trainingFailed.connect(failures.append)
    wizard.start_training()
    wait_for(lambda: failures, 60, "the training error")
    assert "empty" in failures[0]
    assert not (tmp_path / "m.safetensors").exists()


def test_training_is_a_task_cancelled_from_the_page(qgis_iface, engine, s2, tmp_path):
    model = tmp_path / "never.safetensors"
    run = at_parameters(qgis_iface, engine, s2.primary_dir, model, **LONG)
    run.wizard.trainingProgress.connect(lambda _event: run.wizard.train_page.cancel_button.click())
    run.wizard.next()
    [task] = training_tasks()  # in QGIS's task manager, where it can be cancelled too
    assert task.description() == "MrHash: train never.safetensors"
    wait_for(run.ended, 120, "the cancellation")
    assert run.failures == ["Training cancelled."]
    assert run.wizard.train_page.status_label.text() == "Training cancelled."
    assert not model.exists()
    assert engine.call("status", timeout=30)["jobs"] == []
    assert training_tasks() == []
    run.wizard.close()


def test_back_is_locked_and_cancel_asks_while_training(qgis_iface, engine, s2, tmp_path):
    """While it trains: Back disabled, Cancel enabled and asking; "Back to the wizard" keeps
    it training; once cancelled, Back works and a retry with other parameters trains."""
    model = tmp_path / "retry.safetensors"
    run = at_parameters(qgis_iface, engine, s2.primary_dir, model, **LONG)
    back, cancel = (run.button(QWizard.WizardButton.BackButton),
                    run.button(QWizard.WizardButton.CancelButton))
    assert back.isEnabled()  # on the parameters page
    run.wizard.next()
    wait_for(lambda: run.progress, 60, "the training's first progress")
    assert not back.isEnabled()
    assert cancel.isEnabled() and run.wizard.train_page.cancel_button.isEnabled()
    cancel.click()
    run.answer_close("back")
    assert run.wizard.isVisible() and run.wizard.busy and not run.failures
    run.wizard.train_page.cancel_button.click()
    wait_for(run.ended, 120, "the cancellation")
    assert run.failures == ["Training cancelled."] and not model.exists()
    assert back.isEnabled()
    back.click()
    assert run.wizard.currentPage() is run.wizard.params_page
    run.wizard.params_page.epochs_spin.setValue(TINY_TRAINING["epochs"])
    run.wizard.params_page.ae_epochs_spin.setValue(TINY_TRAINING["ae_epochs"])
    run.wizard.next()
    wait_for(lambda: run.models, 120, "the retried training")
    assert run.models == [str(model)] and model.is_file()
    run.wizard.close()


def test_closing_while_training_can_keep_it_running(qgis_iface, engine, s2, tmp_path):
    """X while training, "Keep running in the background": the wizard goes, the task goes
    on, and its end is a message-bar message with the model's path and the index offer."""
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    model = tmp_path / "background.safetensors"
    run = at_parameters(qgis_iface, engine, s2.primary_dir, model)
    run.wizard.next()
    wait_for(lambda: run.progress, 60, "the training's first progress")
    run.wizard.close()  # the window's X
    assert run.wizard.isVisible()  # it asked first
    run.answer_close("keep")
    assert not run.wizard.isVisible() and run.wizard.busy and training_tasks()
    wait_for(run.ended, 120, "the training in the background")
    assert run.models == [str(model)] and model.is_file()
    [item] = [item for item in bar.items() if str(model) in item.text()]
    [offer] = item.findChildren(QPushButton)
    assert offer.text() == "Index with this model…"
    offer.click()
    assert run.index_requests == [str(model)]
    bar.clearWidgets()


def test_closing_while_training_can_stop_it(qgis_iface, engine, s2, tmp_path):
    model = tmp_path / "stopped.safetensors"
    run = at_parameters(qgis_iface, engine, s2.primary_dir, model, **LONG)
    run.wizard.next()
    wait_for(lambda: run.progress, 60, "the training's first progress")
    QTest.keyClick(run.wizard, Qt.Key.Key_Escape)
    assert run.wizard.isVisible()
    run.answer_close("stop")
    assert not run.wizard.isVisible()
    wait_for(run.ended, 120, "the stopped training")
    assert run.failures == ["Training cancelled."]
    assert not model.exists()
    assert training_tasks() == [] and engine.call("status", timeout=30)["jobs"] == []


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only file system (root ignores permission bits, not a read-only mount)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a file system here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def refused(qgis_iface, engine, s2, output: Path) -> str:
    """Next on the parameters page with `output`: -> the problem shown there (no training)."""
    run = at_parameters(qgis_iface, engine, s2.primary_dir, output)
    run.wizard.next()
    assert run.wizard.currentPage() is run.wizard.params_page
    assert not run.wizard.busy and training_tasks() == []
    text = run.wizard.params_page.problem_label.text()
    run.wizard.close()
    return text


def test_an_unwritable_output_is_refused_before_training(qgis_iface, engine, s2, tmp_path,
                                                       read_only_folder):
    text = refused(qgis_iface, engine, s2, read_only_folder / "m.safetensors")
    assert text.startswith(f"Cannot save the model as {read_only_folder / 'm.safetensors'}")
    assert f"the folder {read_only_folder} cannot be written (Read-only file system)" in text


def test_an_unusable_output_path_is_named(qgis_iface, engine, s2, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    text = refused(qgis_iface, engine, s2, a_file / "m.safetensors")
    assert f"the folder {a_file} is not usable (it is a file)" in text
    text = refused(qgis_iface, engine, s2, tmp_path / "gone" / "m.safetensors")
    assert f"the folder {tmp_path / 'gone'} is not usable (it does not exist)" in text
    assert refused(qgis_iface, engine, s2, tmp_path).startswith(
        f"{tmp_path} is a folder: give a file name in it")
    assert refused(qgis_iface, engine, s2, PLUGIN_DIR / "m.safetensors").startswith(
        f"{PLUGIN_DIR / 'm.safetensors'} is inside {PLUGIN_DIR}")
    # relative: the engine works in the plugin's folder, so it would be saved there
    assert refused(qgis_iface, engine, s2, Path("m.safetensors")).startswith(
        "Give the model's full path")


def test_the_default_output_is_a_writable_place(qgis_iface, engine, s2, tmp_path, monkeypatch):
    from mrhash_qgis.ui.train_wizard import TrainWizard, model_path_problem

    def proposed() -> Path:
        wizard = TrainWizard(qgis_iface, engine)
        wizard.primary_page.picker.use_folder(str(s2.primary_dir))
        wizard.show()
        wizard.next()
        wizard.next()
        path = Path(wizard.params_page.output_widget.filePath())
        wizard.close()
        return path

    home = tmp_path / "home"  # the MrHash/ folder is made on first use: not in the real home
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    unsaved = proposed()  # no project file: the user's documents, under MrHash/
    assert unsaved == home / "Documents" / "MrHash" / "primary_mrhash.safetensors"
    assert model_path_problem(str(unsaved)) is None
    (home / "Documents").rename(home / "papers")  # no documents folder: the home
    assert proposed() == home / "MrHash" / "primary_mrhash.safetensors"
    project = QgsProject.instance()
    project.setFileName(str(tmp_path / "work.qgz"))
    try:
        assert proposed() == tmp_path / "primary_mrhash.safetensors"
    finally:
        project.setFileName("")


def test_parameters_are_remembered(qgis_iface, engine, s2, tmp_path):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    folder = tmp_path / "models"
    folder.mkdir()
    run = at_parameters(qgis_iface, engine, s2.primary_dir, folder / "a.safetensors", bits=32,
                        clusters=5, epochs=3, ae_epochs=4, patch_size=32)
    run.wizard.next()
    run.wizard.cancel_training()  # at once: the parameters were saved when it started
    wait_for(run.ended, 60, "the cancellation")
    run.wizard.close()
    again = TrainWizard(qgis_iface, engine)
    page = again.params_page
    assert (page.bits_combo.currentText(), page.clusters_spin.value(), page.epochs_spin.value(),
            page.ae_epochs_spin.value(), page.patch_spin.value(),
            page.device_combo.currentText()) == ("32", 5, 3, 4, 32, "cpu")
    again.primary_page.picker.use_folder(str(s2.primary_dir))
    again.show()
    again.next()
    again.next()
    assert Path(page.output_widget.filePath()) == folder / "primary_mrhash.safetensors"
    again.close()
