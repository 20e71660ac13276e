"""The front ends: the `mrhash` command line (`commands/`), the JSON-lines worker the QGIS
plugin talks to (`mrhash serve`), and the environment check (`doctor`)."""
