"""The training wizard trains a real (tiny) model: primary + auxiliary folder."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_TRAINING, wait_for


def test_wizard_trained_and_saved_the_model(trained):
    wizard = trained.wizard
    page = wizard.train_page
    assert Path(trained.model).is_file()
    assert page.result["model"] == trained.model
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


def test_wizard_sent_the_auxiliary_source(trained, s2):
    params = trained.wizard.params()
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


def test_cancel_training(qgis_iface, engine, s2, tmp_path):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    wizard = TrainWizard(qgis_iface, engine)
    wizard.primary_page.picker.use_folder(str(s2.primary_dir))
    wizard.params_page.epochs_spin.setValue(500)
    wizard.params_page.ae_epochs_spin.setValue(500)
    model = tmp_path / "never.safetensors"
    wizard.params_page.output_widget.setFilePath(str(model))
    failures: list[str] = []
    wizard.trainingFailed.connect(failures.append)
    wizard.trainingProgress.connect(lambda _event: wizard.train_page.cancel())
    wizard.start_training()
    wait_for(lambda: failures, 120, "the cancellation")
    assert failures == ["Training cancelled."]
    assert wizard.train_page.status_label.text() == "Training cancelled."
    assert not model.exists()
    assert engine.call("status", timeout=30)["jobs"] == []
