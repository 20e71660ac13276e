"""Codes to an index: the folder (SQLite store, FAISS Hamming index, embedding table, stored
thumbnails), encoding tiles for it, the build (local or on Dask), and what is read back out of
it whole (info, GeoPackage/GeoParquet export)."""
