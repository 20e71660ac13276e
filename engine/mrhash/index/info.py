"""`mrhash info`: what an index holds, and a digest of it that does not depend on how it was
built (one process or a Dask cluster, in one run or resumed)."""

from __future__ import annotations

import json
from pathlib import Path

from mrhash.index.folder import IndexFolder


def folder_bytes(root: Path) -> int:
    """Bytes on disk of every file under `root` (database, caches, thumbnails)."""
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def index_info(index_dir: str | Path) -> dict:
    folder = IndexFolder(index_dir, read_only=True)
    try:
        store = folder.store
        meta = folder.meta()
        rasters = store.file_counts()
        return {
            "index": str(folder.root.resolve()),
            "tiles": store.count(),
            "bits": int(meta["bits"]) if "bits" in meta else None,
            "model_fingerprint": meta.get("fingerprint"),
            "model_path": meta.get("model_path"),
            "tile_size": int(meta["tile_size"]) if "tile_size" in meta else None,
            "stride": int(meta["stride"]) if "stride" in meta else None,
            "bands": json.loads(meta.get("bands") or "null"),
            # what encoded the last build; indexes from before recorded none
            "encoder": meta.get("encoder"),
            "encoder_precision": meta.get("encoder_precision", "float"),
            "rasters": rasters["done"],
            "rasters_unfinished": rasters["partial"],
            "generation": store.generation,
            "size_bytes": folder_bytes(folder.root),
            "digest": store.content_digest(),
        }
    finally:
        folder.close()
