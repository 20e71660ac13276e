"""Query rasters laid out differently from the index (an RGB composite, bands reordered and
named, a single band): mapped onto the model's bands by what their bands say, or refused
with a message that says which bands the model reads; `bands` chooses them by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from mrhash.app.worker import error_payload
from mrhash.index.build import build_index
from mrhash.raster.bandinfo import BandMismatch
from mrhash.search.searcher import run_query
from mrhash_contract.band_profiles import BandFacts, identify, map_roles, propose
from mrhash_contract.protocol import QueryRequest
from test_index_support import THREADS_ENV, TILE


@pytest.fixture
def index_dir(tiny_model, rasters, tmp_path):
    build_index(rasters, tiny_model, tmp_path / "index", TILE)
    return tmp_path / "index"


def _other(eurosat_dir: Path) -> Path:
    """A real 13-band EuroSAT raster that is not in the index."""
    return sorted((eurosat_dir / "Industrial").glob("*.tif"))[0]


def _write_bands(source: Path, out: Path, bands: tuple[int, ...],
                 descriptions: tuple[str, ...] | None = None) -> Path:
    """A copy of `source` holding only `bands` (1-based, in that order)."""
    with rasterio.open(source) as ds:
        profile = {**ds.profile, "count": len(bands)}
        data = ds.read(list(bands))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, text)
    return out


def _footprint(raster: Path) -> str:
    with rasterio.open(raster) as ds:
        left, bottom, res = ds.bounds.left, ds.bounds.bottom, ds.res[0]
    return (f"POLYGON(({left} {bottom},{left + TILE * res} {bottom},{left + TILE * res} "
            f"{bottom + TILE * res},{left} {bottom + TILE * res},{left} {bottom}))")


def _code(index_dir: Path, raster: Path, bands=None) -> str:
    result = run_query(index_dir, QueryRequest(raster=str(raster), footprint=_footprint(raster),
                                               bands=bands, k=3))
    assert len(result["hits"]) == 3
    return result["query"]["code"]


def test_the_product_layouts_propose_rgb_and_the_readme_groups():
    eurosat = propose(identify(BandFacts(13)))
    assert eurosat.primary == (4, 3, 2)
    assert dict(eurosat.auxiliary) == {"nir": (8,), "rededge_swir": (5, 6, 7, 13, 11, 12),
                                       "atmosphere": (1, 9, 10)}
    assert identify(BandFacts(13)).assumed
    named = identify(BandFacts(3, ("B02", "B03", "B04")))
    assert not named.assumed and map_roles(("red", "green", "blue"), named) == (3, 2, 1)
    landsat = identify(BandFacts(7, tuple(f"SR_B{i}" for i in range(1, 8))))
    assert propose(landsat).primary == (4, 3, 2) and landsat.band_of("near infrared") == 5
    picture = identify(BandFacts(4, colours=("Red", "Green", "Blue", "Alpha"), byte=True))
    assert propose(picture).primary == (1, 2, 3) and propose(picture).auxiliary == ()
    assert identify(BandFacts(2, ("band1", "Band 2"))).roles == (None, None)


def test_an_rgb_composite_reads_as_the_model_bands(index_dir, eurosat_dir, tmp_path):
    other = _other(eurosat_dir)
    composite = _write_bands(other, tmp_path / "rgb.tif", (4, 3, 2))
    assert _code(index_dir, composite) == _code(index_dir, other)


def test_named_bands_in_another_order_are_matched(index_dir, eurosat_dir, tmp_path):
    other = _other(eurosat_dir)
    reordered = _write_bands(other, tmp_path / "bgr.tif", (2, 3, 4), ("B02", "B03", "B04"))
    assert _code(index_dir, reordered) == _code(index_dir, other)


def test_a_single_band_is_refused_with_what_the_model_reads(index_dir, eurosat_dir, tmp_path):
    single = _write_bands(_other(eurosat_dir), tmp_path / "one.tif", (8,))
    with pytest.raises(BandMismatch) as caught:
        _code(index_dir, single)
    message = caught.value.message
    assert "red, green and blue" in message and "1 band" in message and str(single) in message
    assert "does not exist" not in message
    payload = error_payload(caught.value)
    assert payload["code"] == "bad_input" and payload["fix"] == "bands"
    assert payload["needs"] == ["red", "green", "blue"] and payload["band_count"] == 1
    # chosen by hand: read (grey) band 1 three times
    assert len(_code(index_dir, single, bands=[1, 1, 1])) > 0


def test_the_cli_takes_raster_bands(index_dir, eurosat_dir, tmp_path):
    other = _other(eurosat_dir)
    swapped = _write_bands(other, tmp_path / "swapped.tif", (2, 3, 4))  # no names: B, G, R
    out = tmp_path / "hits.json"
    run = subprocess.run([sys.executable, "-m", "mrhash", "query", "--index", str(index_dir),
                          "--raster", str(swapped), "--footprint", _footprint(swapped),
                          "--raster-bands", "3,2,1", "-k", "3", "--json", str(out)],
                         capture_output=True, text=True, env=THREADS_ENV)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["query"]["code"] == _code(index_dir, other)
    assert np.all([hit["distance"] >= 0 for hit in json.loads(out.read_text())["hits"]])
