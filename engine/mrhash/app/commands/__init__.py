"""CLI sub-commands, one module per area: raster (scan, tiles), model (train, encode, eval),
index (index, query, serve, bench), doctor.

Each command function imports its stage (and so torch, faiss, rasterio) when it runs, not at
the top of its module: `mrhash --help` and every other command start without them."""
