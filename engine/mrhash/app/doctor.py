"""What the engine needs at run time, and a check that every part of it loads.

`check()` imports each runtime requirement, reads the backbone weights (weights only, nothing
unpickled) and reports versions, GDAL/PROJ and the torch device: what `mrhash doctor`, the
worker's `doctor` method and the plugin's "Test engine" / diagnostics report show."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata

from mrhash_contract.protocol import DoctorProblem, DoctorResult

from mrhash import __version__
from mrhash.dependencies import OPTIONAL_PACKAGES, RUNTIME_PACKAGES
from mrhash.errors import MissingDependency


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gdal_proj(result: DoctorResult) -> None:
    # GDAL (rasterio) only where a raster is opened: the CLI starts without it
    import rasterio

    result.gdal = rasterio.__gdal_version__
    result.proj = getattr(rasterio, "__proj_version__", None)


def _torch_device(result: DoctorResult) -> None:
    # torch takes ~1 s to import: only where a network runs
    import torch

    result.torch_cuda_build = torch.version.cuda
    result.cuda_available = torch.cuda.is_available()
    if result.cuda_available:
        result.cuda_device = torch.cuda.get_device_name(0)


def _backbone_weights(result: DoctorResult) -> None:
    # torch takes ~1 s to import: only where a network runs
    import torch

    # torch networks: imported only when a model is built
    from mrhash.model.backbone import BACKBONES, default_weights_path

    path = default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    result.weights, result.weights_tensors = path, len(state)
    result.backbones = {name: {"feature_dim": spec.feature_dim, "weights": spec.weights}
                        for name, spec in BACKBONES.items()}


def check() -> DoctorResult:
    """Every runtime requirement imported, the weights read; `ok` only when all of it works.
    An optional package that is not installed is listed in `missing_optional` with what it
    is for (a broken one is a problem)."""
    report = DoctorResult(True, __version__, sys.version.split()[0], sys.executable,
                          platform.platform())
    for module, package in RUNTIME_PACKAGES.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 (a broken package is reported, not raised)
            if (isinstance(error, ModuleNotFoundError) and module in OPTIONAL_PACKAGES
                    and (error.name or "").split(".")[0] == module):
                report.missing_optional.append(MissingDependency.of(error).message)
            else:
                report.problems.append(DoctorProblem(module, package,
                                                     f"{type(error).__name__}: {error}"))
        report.packages[package] = _version(package)
    for part in (_gdal_proj, _torch_device, _backbone_weights):
        try:
            part(report)
        except Exception as error:  # noqa: BLE001
            report.problems.append(DoctorProblem(part.__name__.strip("_"), None,
                                                 f"{type(error).__name__}: {error}"))
    report.ok = not report.problems
    return report
