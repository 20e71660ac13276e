"""The import layers (docs/ARCHITECTURE.md): the engine never imports QGIS, the plugin never
imports the engine or its heavy libraries, the contract imports only the standard library.
Each rule also shown to catch a deliberately added upward import, in a copy of the tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from import_layers import (
    Acyclic,
    Forbidden,
    Import,
    Layers,
    Package,
    StandardLibraryOnly,
    imports_of,
    module_names,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (Package("mrhash_contract", "engine/mrhash_contract"),
            Package("mrhash", "engine/mrhash"),
            Package("mrhash_research", "research/mrhash_research"),
            Package("mrhash_qgis", "mrhash_qgis"))
QGIS = ("qgis", "PyQt5", "PyQt6", "sip", "osgeo")  # QGIS, its Qt and its own GDAL bindings
ENGINE_LIBRARIES = ("torch", "torchvision", "faiss", "rasterio", "safetensors", "dask",
                    "distributed", "pyarrow", "efficientnet_lite_pytorch")
# The engine's layers, lowest first (docs/ARCHITECTURE.md): the contract; the engine's root
# modules (errors, files, jobs, device, log); then one package per stage, as the data flows;
# the front ends; `python -m mrhash`; the research beside the engine, above all of it. A module
# belongs to the longest listed package it is in.
ENGINE_LAYERS = ("mrhash_contract", "mrhash", "mrhash.remote", "mrhash.raster", "mrhash.model",
                 "mrhash.index", "mrhash.search", "mrhash.app", "mrhash.__main__",
                 "mrhash_research")
ENGINE = ("mrhash", "mrhash_contract", "mrhash_research")
RULES = (
    Forbidden("the engine never imports QGIS", of=ENGINE, forbidden=QGIS),
    Forbidden("the plugin never imports the engine or its libraries", of=("mrhash_qgis",),
              # mrhash_contract is the engine's name for the contract: inside QGIS it is
              # mrhash_qgis.contract
              forbidden=(*ENGINE, *ENGINE_LIBRARIES)),
    StandardLibraryOnly("the contract imports only the standard library", "mrhash_contract"),
    Layers("the engine's layers import only downwards", ENGINE_LAYERS),
)
ACYCLIC = "no module imports itself through others"


def all_imports(root: Path) -> list[Import]:
    return [i for package in PACKAGES for i in imports_of(root, package)]


def broken(root: Path) -> dict[str, list[str]]:
    imports = all_imports(root)
    rules = (*RULES, Acyclic(ACYCLIC, ENGINE, module_names(root, PACKAGES)))
    return {rule.rule: [str(v) for v in found] for rule in rules
            if (found := rule.violations(imports))}


def test_the_repository_keeps_its_import_layers():
    imports = all_imports(REPO)
    # the check reads what it should: the plugin's contract imports and the engine's torch
    assert any(i.module.startswith("mrhash_qgis.") and i.imported == "mrhash_qgis.contract"
               for i in imports)
    assert any(i.imported == "torch" and i.module.startswith("mrhash.") for i in imports)
    assert broken(REPO) == {}


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the three packages, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(REPO / package.folder, tmp_path / package.folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    assert broken(tmp_path) == {}
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")


@pytest.mark.parametrize(("file", "added", "rule"), [
    # function-level imports count as much as top-level ones
    ("engine/mrhash/search/searcher.py", "\n\ndef _peek():\n    from qgis.core import QgsProject\n",
     "the engine never imports QGIS"),
    ("research/mrhash_research/baselines.py", "\nimport qgis.core\n",
     "the engine never imports QGIS"),
    ("engine/mrhash_contract/bands.py", "\nimport osgeo.gdal\n", "the engine never imports QGIS"),
    ("mrhash_qgis/core/results.py", "\n\ndef _score():\n    import torch\n",
     "the plugin never imports the engine or its libraries"),
    ("mrhash_qgis/plugin.py", "\nfrom mrhash.search import Searcher\n",
     "the plugin never imports the engine or its libraries"),
    ("engine/mrhash_contract/choices.py", "\nimport numpy\n",
     "the contract imports only the standard library"),
    # upward: the contract reaching into the engine, relatively and absolutely
    ("engine/mrhash_contract/protocol.py", "\n\ndef _late():\n    from mrhash import errors\n",
     "the engine's layers import only downwards"),
    # a stage reaching up to a later one, a root module to a stage, the engine to research
    ("engine/mrhash/raster/tiling.py",
     "\n\ndef _late():\n    from mrhash.search.searcher import Searcher\n",
     "the engine's layers import only downwards"),
    ("engine/mrhash/errors.py", "\n\ndef _late():\n    from mrhash.app import doctor\n",
     "the engine's layers import only downwards"),
    ("engine/mrhash/app/worker.py", "\nimport mrhash_research.evaluate\n",
     "the engine's layers import only downwards"),
    # inside one stage: the folder importing the build that imports it
    ("engine/mrhash/index/folder.py", "\n\ndef _late():\n    from mrhash.index import build\n",
     ACYCLIC),
])
def test_an_added_upward_import_breaks_its_rule(tree, file, added, rule):
    add_line(tree / file, added)
    found = broken(tree)
    assert rule in found
    assert all(f"{Path(file)}:" in v for v in found[rule]), found[rule]


def test_relative_imports_are_resolved(tree):
    add_line(tree / "mrhash_qgis/core/results.py", "\nfrom ...mrhash_contract import bands\n")
    add_line(tree / "engine/mrhash_contract/__init__.py", "\nfrom . import choices\n")
    imports = all_imports(tree)
    assert Import("mrhash_qgis.core.results", "mrhash_contract",
                  Path("mrhash_qgis/core/results.py"),
                  len((tree / "mrhash_qgis/core/results.py").read_text().splitlines())) in imports
    assert any(i.module == "mrhash_contract" and i.imported == "mrhash_contract.choices"
               for i in imports)


def test_a_stage_layer_listed_below_the_engine_is_held_to_it():
    stages = Layers("stages", ("mrhash_contract", "mrhash.sources", "mrhash"))
    imports = [Import("mrhash.sources", "mrhash.search", Path("s.py"), 1),    # up: broken
               Import("mrhash.search", "mrhash.sources", Path("t.py"), 1),    # down: fine
               Import("mrhash.sources.crs", "mrhash.sources", Path("u.py"), 1),
               Import("mrhash.sources", "numpy", Path("v.py"), 1)]           # outside: fine
    assert stages.violations(imports) == imports[:1]
