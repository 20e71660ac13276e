"""Shared set-up of the index/search/worker tests: a tiny real model trained once per test
process on a few real EuroSAT tiles, and folders of real EuroSAT rasters to index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# trained once per process, shared by every test module that uses it
_MODELS: dict[str, Path] = {}

TILE = 32  # EuroSAT rasters are 64 px: 4 tiles each


def train_tiny_model(out_dir: Path, eurosat_dir: Path, seed: int = 0) -> Path:
    """1 hash epoch, 2 autoencoder epochs, 32 px patches at 32 px backbone input, 3 bands."""
    from mrhash.model.train import TrainConfig, train_model
    from mrhash.raster.sources import SourceSpec

    files = sorted(eurosat_dir.glob("*/*.tif"))[::5][:8]  # one of each of 8 classes
    config = TrainConfig(
        primary=tuple(SourceSpec("primary", (str(f),), (4, 3, 2)) for f in files),
        output=str(out_dir / f"tiny_{seed}.safetensors"), bits=64, clusters=4,
        patch_size=TILE, input_size=32, epochs=1, ae_epochs=2, batch_size=16, device="cpu",
        rgb=(0, 1, 2), seed=seed)
    return Path(train_model(config).model)


def model_path(tmp_path_factory, eurosat_dir: Path, seed: int = 0) -> Path:
    key = f"seed{seed}"
    if key not in _MODELS:
        _MODELS[key] = train_tiny_model(tmp_path_factory.mktemp("model"), eurosat_dir, seed)
    return _MODELS[key]


def raster_folder(dest: Path, eurosat_dir: Path, classes=("Forest", "River", "Highway"),
                  per_class: int = 3) -> Path:
    """A folder of real EuroSAT rasters (copies, so tests may modify them)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in classes:
        for src in sorted((eurosat_dir / name).glob("*.tif"))[:per_class]:
            shutil.copy2(src, dest / src.name)
    return dest


# one torch thread: on a CPU shared with other jobs, OpenMP threads spin against each other
# and a 2-thread forward pass gets many times slower than a 1-thread one
THREADS_ENV = {**os.environ, "MRHASH_THREADS": "1"}


def tiny_model_path(tmp_path_factory, eurosat_dir: Path) -> Path:
    """The tiny model (trained on first use in this process), run on one torch thread."""
    import torch

    torch.set_num_threads(1)
    return model_path(tmp_path_factory, eurosat_dir)


def indexed_folder(tmp_path_factory, eurosat_dir: Path, name: str) -> Path:
    """A real index (tiny model, 9 EuroSAT rasters, 36 tiles) in a fresh folder."""
    from mrhash.index.build import build_index

    root = tmp_path_factory.mktemp(name)
    model = tiny_model_path(tmp_path_factory, eurosat_dir)
    build_index(raster_folder(root / "rasters", eurosat_dir), model, root / "index", TILE)
    return root / "index"


def synthetic_index(index_dir: Path, raster: Path, relaxed, columns: int = 20) -> Path:
    """An index of tiles with the given relaxed codes [n, 64] (code = sign), to test ranking
    where the tie structure is chosen. Tile i is a 0.005 degree box on a grid of `columns`
    (0.01 degree apart) near 10E 50N; all point to one real raster."""
    import numpy as np
    from mrhash.index.folder import IndexFolder
    from mrhash.index.store import FileState, TileRow
    from mrhash.model.package import pack_codes

    folder = IndexFolder(index_dir, create=True)
    store = folder.store
    store.set_meta({"fingerprint": "synthetic", "bits": 64, "model_path": "",
                    "patch_size": TILE, "tile_size": TILE, "stride": TILE, "min_valid": 0.5,
                    "bands": "null"})
    state = FileState.of([str(raster)])
    rows = []
    for i in range(len(relaxed)):
        west, south = 10.0 + (i % columns) * 0.01, 50.0 + (i // columns) * 0.01
        box = (west, south, west + 0.005, south + 0.005)
        rows.append(TileRow(i, (0, 0, TILE, TILE), box, box, 1.0))
    file_id, _ = store.start_file(state, state.content_hash(), "EPSG:4326",
                                  (10.0, 50.0, 11.0, 51.0), len(rows), "synthetic")
    store.add_tiles(file_id, rows, pack_codes(relaxed), True, np.asarray(relaxed))
    folder.save_codes(folder.load_codes())
    folder.save_embeddings(folder.load_embeddings())
    folder.close()
    return index_dir
