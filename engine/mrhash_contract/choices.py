"""The values a request may choose from: the plugin's combo boxes and the engine's checks
read the same tuples."""

from __future__ import annotations

BITS = (16, 32, 64, 128)              # hash code lengths a model can be trained with
DEFAULT_BITS = 64
# training defaults the wizard and Processing show (the engine's TrainConfig defaults);
# measured on EuroSAT-MS dev, docs/BENCHMARKS.md (epochs are capped on big sets, max_steps)
DEFAULT_CLUSTERS = 16
DEFAULT_EPOCHS = 20                   # hash network
DEFAULT_AE_EPOCHS = 60                # autoencoder
DEFAULT_PATCH_SIZE = 64
DEVICES = ("auto", "cpu", "cuda")     # where the engine runs a job ("cuda:N" too, engine side)
# raster file types a folder is searched for (GDAL reads them; .jp2 is often a GeoTIFF inside)
RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2", ".img", ".vrt")
DASK_LOCAL_PREFIX = "local:"          # `--dask local:N`: N worker processes on this machine
