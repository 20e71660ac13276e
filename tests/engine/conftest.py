"""Fixtures of the index, search, thumbnail and worker tests: a tiny real model and a folder of
real EuroSAT rasters (see test_index_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_index_support as support


@pytest.fixture
def tiny_model(tmp_path_factory, eurosat_dir) -> Path:
    return support.tiny_model_path(tmp_path_factory, eurosat_dir)


@pytest.fixture
def rasters(tmp_path, eurosat_dir) -> Path:
    return support.raster_folder(tmp_path / "rasters", eurosat_dir)
