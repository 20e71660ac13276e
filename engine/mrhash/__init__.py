"""MrHash engine: unsupervised deep hashing for remote-sensing scene retrieval.

Never imports QGIS: the engine runs as its own process (`mrhash serve`) or headless CLI.
"""

__version__ = "0.1.0"
