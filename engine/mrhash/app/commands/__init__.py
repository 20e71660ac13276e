"""CLI sub-commands, one module per area: raster (scan, tiles), model (train, encode, eval),
index (index, query, serve, bench), doctor."""
