"""`mrhash bench read` runs end to end on the real Sentinel-2 crop (tiny sizes; the figures
themselves live in docs/benchmarks/raster.md, never asserted here)."""

from __future__ import annotations

import argparse

from mrhash_research.benchmarks import read


def test_bench_read_smoke(sentinel2_dir):
    parser = argparse.ArgumentParser()
    read.add_arguments(parser)
    args = parser.parse_args(["--folder", str(sentinel2_dir), "--patches", "8",
                              "--baseline-patches", "2", "--repeats", "1"])
    result = read.run(args)
    assert result["primary"]["crs"] == "EPSG:32618"
    assert result["auxiliary"]["crs"] == "EPSG:32617" and result["auxiliary"]["bands"] == 3
    assert set(result["median_patches_per_s"]) == {
        "cached", "cached_4326", "windowed", "naive", "naive_reopen"}
    assert all(len(v) == 1 for v in result["patches_per_s"].values())
