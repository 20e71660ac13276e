"""One encoding everywhere: a patch with nodata pixels and negative values (SAR in dB) gets the
same code in training (the normalisation the hash net is trained on), evaluation, indexing and
queries."""

from __future__ import annotations

import sqlite3

import numpy as np
import rasterio
import shapely
import torch
from mrhash.index.build import build_index
from mrhash.model.datasets import RasterSamples, encode_samples
from mrhash.model.package import load_model
from mrhash.model.train import TrainConfig, normalise, train_model
from mrhash.raster.sources import SourceSpec
from mrhash.search.searcher import run_query
from mrhash_contract.protocol import QueryRequest
from rasterio.transform import from_origin

NODATA = -9999.0
PATCH = 32


def _sar_raster(path) -> None:
    """2 bands of dB-like values (about -25..-5), nodata -9999 over a corner of each tile."""
    rng = np.random.default_rng(0)
    data = rng.normal(-15, 4, (2, 64, 64)).astype(np.float32)
    data[:, :8, :8] = NODATA
    data[:, 32:40, 32:44] = NODATA
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2,
                       dtype="float32", nodata=NODATA, crs="EPSG:32631",
                       transform=from_origin(500000, 5000000, 10, 10)) as dataset:
        dataset.write(data)


def test_a_patch_gets_the_same_code_in_training_evaluation_indexing_and_query(tmp_path):
    archive = tmp_path / "sar"
    archive.mkdir()
    raster = archive / "s1_db.tif"
    _sar_raster(raster)
    config = TrainConfig(primary=(SourceSpec("primary", (str(raster),)),),
                         output=str(tmp_path / "m.safetensors"), bits=16, clusters=2,
                         patch_size=PATCH, input_size=32, epochs=1, ae_epochs=1, device="cpu")
    model = load_model(train_model(config).model)

    with RasterSamples.from_config(config) as samples:
        arrays, masks = samples.read_batch(range(len(samples)))[0]
        evaluation = encode_samples(model, samples)
    assert not masks.all()  # the tiles hold nodata pixels
    with torch.no_grad():  # what the hash net sees in training
        trained = np.packbits(model._net(torch.from_numpy(
            normalise(arrays, masks, model.stats))).numpy() > 0, axis=1)
    direct = model.encode(arrays, masks)
    assert np.array_equal(trained, direct) and np.array_equal(evaluation, direct)
    # what invalid pixels hold must not count (the reader fills 0, which is far above dB
    # values and normalised to 1.0): another fill gives the same code
    refilled = np.where(masks[:, None], arrays, 1e6).astype(np.float32)
    assert np.array_equal(model.encode(refilled, masks), direct)

    index = tmp_path / "index"
    build_index(archive, model.path, index, PATCH, min_valid=0.1)
    with sqlite3.connect(index / "index.sqlite") as db:
        stored = {tuple(row[:4]): row[4] for row in db.execute(
            "SELECT minx, miny, maxx, maxy, code FROM tiles ORDER BY id")}
    assert len(stored) == 4
    for footprint, code in stored.items():
        result = run_query(index, QueryRequest(raster=str(raster),
                                        footprint=shapely.box(*footprint).wkt, k=1))
        assert result["query"]["code"] == code.hex()
    codes_in_training = {bytes(c) for c in direct}
    assert set(stored.values()) == codes_in_training
