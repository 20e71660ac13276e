"""Sources to patches: CRSs and footprints, opening a raster or a per-band product (local or
remote) as one `Source`, resampling, tile grids, co-registered multisource reads, band
statistics and layouts, folder scans, and remote windows pulled into a local cache."""
