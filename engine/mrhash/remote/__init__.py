"""Sources that are not local files: reaching a URL (HTTP settings, GDAL's network options, the
errors a server gives), checking a remote VRT points nowhere local, and searching a STAC API.
Below `raster`, which opens what these name."""
