"""Models that indexes depend on are never lost to retraining (docs/RELIABILITY.md): three
trainings onto one `-o` with an index built after each leave all three indexes answering
queries with their own model (its kept generation, found by the fingerprint the index
records); a generation no index names any more is removed at the next training (the worker's
`train` here), so kept models are bounded by the indexes that use them. Real trainings of a
tiny model, real indexes of real EuroSAT rasters, the real `mrhash` commands and worker."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import rasterio
from mrhash.model.history import generation_path
from test_index_support import TILE, raster_folder
from test_output_guard import checksums, mrhash  # bounded, no traceback
from test_worker import Engine

LIMIT_S = 300  # the worker's tiny training takes seconds; a hang fails instead of waiting


TRAINING = ("--primary-bands", "4,3,2", "--epochs", "1", "--ae-epochs", "1", "--clusters", "2",
            "--bits", "16", "--patch-size", str(TILE), "--input-size", "32")


def recorded_fingerprint(index: Path) -> str:
    with closing(sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0]


def query(index: Path, raster: Path, out: Path) -> list:
    """The hits of a point query at the centre of `raster`: encoding its patch needs the
    index's own model (a --tile query would not)."""
    with rasterio.open(raster) as ds:
        (x, y), crs = ds.xy(ds.height // 2, ds.width // 2), ds.crs.to_string()
    run = mrhash("query", "--index", index, "--point", x, y, "--crs", crs, "-k", "5",
                 "--json", out)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())["hits"]


def test_retraining_keeps_every_model_an_index_names(eurosat_dir, tmp_path):
    rasters = raster_folder(tmp_path / "rasters", eurosat_dir, per_class=2)
    probe = sorted(rasters.glob("*.tif"))[0]
    models = tmp_path / "models"
    models.mkdir()
    model = models / "m.safetensors"
    indexes, answers, fingerprints = [], [], []
    for seed in range(3):
        before = checksums(rasters, *indexes)
        run = mrhash("train", "--primary", eurosat_dir / "Forest", *TRAINING, "--seed", seed,
                     "-o", model)
        assert run.returncode == 0, run.stderr
        assert checksums(rasters, *indexes) == before  # training touches only the models
        if seed:  # the model it replaced is kept under its fingerprint, and says where
            kept = generation_path(model, fingerprints[-1])
            assert f"the model it replaced is kept as {kept}" in run.stderr, run.stderr
        index = tmp_path / f"index{seed}"
        assert mrhash("index", rasters, "--model", model, "--index", index,
                      "--tile-size", TILE).returncode == 0
        indexes.append(index)
        fingerprints.append(recorded_fingerprint(index))
        answers.append(query(index, probe, tmp_path / f"first{seed}.json"))
    assert len(set(fingerprints)) == 3  # three different models
    kept = sorted(p.name for p in models.glob("m.*.safetensors"))
    assert kept == sorted(generation_path(model, fp).name for fp in fingerprints[:2])
    for n, index in enumerate(indexes):  # each answers as it did, with its own model
        assert query(index, probe, tmp_path / f"again{n}.json") == answers[n], n

    # the first index is deleted: its model is no longer needed, and the next training (the
    # worker's) removes it, keeping the models of the two indexes left
    shutil.rmtree(indexes[0])
    before = checksums(rasters, *indexes[1:])
    engine = Engine()
    try:
        engine.read()  # ready
        engine.send({"id": "t", "method": "train", "params": {
            "primary": {"paths": [str(p) for p in sorted((eurosat_dir / "Forest").glob("*.tif"))],
                        "bands": [4, 3, 2]},
            "bits": 16, "clusters": 2, "epochs": 1, "ae_epochs": 1, "patch_size": TILE,
            "input_size": 32, "seed": 3, "output": str(model)}})
        result = engine.until_done("t", timeout=LIMIT_S)[0]["result"]
    finally:
        engine.close()
    assert result["previous"] == str(generation_path(model, fingerprints[2]))
    assert result["removed_generations"] == [str(generation_path(model, fingerprints[0]))]
    kept = sorted(p.name for p in models.glob("m.*.safetensors"))
    assert kept == sorted(generation_path(model, fp).name for fp in fingerprints[1:])
    assert checksums(rasters, *indexes[1:]) == before
    for n in (1, 2):
        assert query(indexes[n], probe, tmp_path / f"last{n}.json") == answers[n], n
