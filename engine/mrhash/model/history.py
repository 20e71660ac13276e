"""Model generations kept for the indexes that need them (docs/RELIABILITY.md).

An index records the model file it was built with and that model's fingerprint (the sha256
of its bytes). Training onto an existing model file (`mrhash train -o`, the worker's `train`)
would leave indexes built with the old model unable to encode a query, so the model it
replaces is first kept beside it under a content-addressed name, `<stem>.<fp16><suffix>`
(the first 16 hex digits of its fingerprint: `m.safetensors` -> `m.3fa2…c4d5.safetensors`),
and opening an index finds its generation there by the fingerprint it records.

What is kept is bounded by what is used: each index build registers itself in
`<model>.indexes.json` beside the model, and a training keeps the generations that a
registered index still names (its folder still there and its database still recording that
fingerprint and this model) and the one it replaces; every other generation is removed (an
index gone or rebuilt with another model no longer holds one). Indexes built before this
register themselves on their next update."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from mrhash_contract import index_layout
from mrhash_contract.index_layout import DB_FILE

from mrhash.fileio import atomic_write_bytes, atomic_write_text

FINGERPRINT_DIGITS = 16  # 64 bits of sha256: no two generations of one model collide
_FINGERPRINT = rf"\.([0-9a-f]{{{FINGERPRINT_DIGITS}}})"  # as a generation's name has it
REGISTRY_SUFFIX = ".indexes.json"
REGISTRY_VERSION = 1


@dataclass
class Generations:
    """What a training did to the model it replaced and the generations beside it."""

    kept: str                      # where the replaced model is kept
    removed: list[str] = field(default_factory=list)  # generations no index names any more
    in_use: int = 0                # generations kept because a registered index names them


def generation_path(model: str | Path, fingerprint: str) -> Path:
    """Where the generation of `model` with `fingerprint` is kept."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{fingerprint[:FINGERPRINT_DIGITS]}{model.suffix}")


def _generation_pattern(model: Path) -> re.Pattern:
    return re.compile(re.escape(model.stem) + _FINGERPRINT + re.escape(model.suffix) + "$")


def owner(model: str | Path) -> Path:
    """The model file a generation was kept from (an index updated with a kept generation
    stays registered with the model it came from); any other file as it is."""
    model = Path(model)
    found = re.match("(.+)" + _FINGERPRINT + "$", model.stem)
    if found:
        named = model.with_name(found.group(1) + model.suffix)
        if named.is_file() and _generation_pattern(named).match(model.name):
            return named
    return model


def model_file(model_path: str, fingerprint: str) -> Path:
    """The file holding the index's model: its generation when the model file was retrained
    since, else the model file itself."""
    kept = generation_path(model_path, fingerprint)
    return kept if kept.is_file() else Path(model_path)


def _registry_path(model: Path) -> Path:
    return model.with_name(model.name + REGISTRY_SUFFIX)


def _registered(model: Path) -> dict[str, str]:
    """index folder -> fingerprint it was built with, as registered (empty when unreadable:
    then only the replaced generation is kept, as before registries)."""
    try:
        data = json.loads(_registry_path(model).read_text(encoding="utf-8"))
        indexes = data["indexes"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in indexes.items()} if isinstance(indexes, dict) else {}


def register_index(model_path: str | Path, index_dir: str | Path, fingerprint: str) -> None:
    """Record that the index at `index_dir` needs the generation `fingerprint` of the model.
    A model folder that cannot be written is no place a training can write either: nothing
    to protect, so that is not an error."""
    model = Path(model_path).resolve()
    indexes = _registered(model)
    indexes[str(Path(index_dir).resolve())] = fingerprint
    try:
        _write_registry(model, indexes)
    except OSError:
        pass


def _write_registry(model: Path, indexes: dict[str, str]) -> None:
    atomic_write_text(_registry_path(model), json.dumps(
        {"version": REGISTRY_VERSION, "indexes": dict(sorted(indexes.items()))}, indent=1))


def _still_named(model: Path, index_dir: str, fingerprint: str) -> bool:
    """Whether the index at `index_dir` still records this model with `fingerprint` (read
    from its database as the plugin reads it: this layer is below the index's). An index
    that exists but cannot be read is taken to need it (nothing is removed on a guess)."""
    if not Path(index_dir).is_dir():
        return False
    try:
        uri = (Path(index_dir) / DB_FILE).absolute().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            meta = index_layout.meta(db)
    except (sqlite3.Error, OSError):
        return True
    named = meta.get("model_path")
    return (meta.get("fingerprint") == fingerprint
            and named is not None and owner(named).resolve() == model)


def keep_replaced(output: Path) -> Generations | None:
    """Before a training writes `output`: the model there kept as its generation, and the
    generations no registered index names removed; None when there is no model there."""
    if not output.is_file():
        return None
    model = output.resolve()
    data = model.read_bytes()
    replaced = hashlib.sha256(data).hexdigest()
    kept = generation_path(model, replaced)
    if not kept.is_file():
        atomic_write_bytes(kept, data)
    live = {index: fp for index, fp in _registered(model).items()
            if _still_named(model, index, fp)}
    named = {fp[:FINGERPRINT_DIGITS] for fp in live.values()}
    pattern, removed = _generation_pattern(model), []
    for path in sorted(model.parent.iterdir()):
        found = pattern.match(path.name)
        if (found and found.group(1) not in named and path != kept and path.is_file()
                and not path.is_symlink()):
            path.unlink()
            removed.append(str(path))
    if _registry_path(model).is_file():  # the indexes gone or rebuilt are forgotten
        _write_registry(model, live)
    return Generations(str(kept), removed, len(named - {replaced[:FINGERPRINT_DIGITS]}))
