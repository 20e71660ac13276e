"""`mrhash query --tile` never imports torch (issue 26): the code is in the index and the
thumbnails' colours in the model's config, so only a query that encodes a patch loads the
encoder. Checked on the real CLI in a subprocess, with `-X importtime`."""

from __future__ import annotations

import json
import subprocess
import sys

from mrhash.index.build import build_index
from test_index_support import THREADS_ENV, TILE


def imported(*args: str) -> tuple[set[str], dict]:
    """The modules a `mrhash` command imported, and its JSON output."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mrhash", *args],
                          capture_output=True, text=True, timeout=120, env=THREADS_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return modules, json.loads(done.stdout)


def test_a_query_by_tile_does_not_import_torch(tiny_model, rasters, tmp_path):
    index = tmp_path / "index"
    build_index(rasters, tiny_model, index, TILE)
    for extra in ((), ("--thumbnails",)):
        modules, result = imported("query", "--index", str(index), "--tile", "3", "-k", "4",
                                   *extra)
        assert "mrhash.search" in modules and "torch" not in modules
        assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert all(h["thumbnail"].endswith(".png") for h in result["hits"])
    assert result["display_bands"] == [4, 3, 2]  # the model's colours, read without torch
    # a query by point encodes its patch: torch is imported then (the check can fail)
    hit = result["hits"][0]
    west, south, east, north = hit["bounds"]
    modules, by_point = imported("query", "--index", str(index), "--point",
                                 str((west + east) / 2), str((south + north) / 2),
                                 "--crs", hit["crs"], "-k", "2")
    assert "torch" in modules and by_point["hits"][0]["distance"] == 0
