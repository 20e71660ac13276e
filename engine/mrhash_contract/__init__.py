"""What the QGIS plugin and the engine must agree on, in one place: the choices a request may
make, the band parser, the index folder's layout and the read-only queries the plugin makes of
an index. Standard library only, so it is imported by the engine (`mrhash_contract`) and, in
QGIS, by the plugin (`mrhash_qgis.contract`, the same files: linked in a checkout, copied into
the plugin zip). Modules import each other relatively, so both names work."""
