"""The worker protocol, typed (docs/ARCHITECTURE.md, *Protocol*): the method names, the
error codes, one request dataclass per method and the shapes of the results.

The plugin builds a request and sends `to_params()`; the engine reads it back with
`from_params()`, which raises `RequestError` naming the parameter and the problem, and then
`validate()`s it. Results stay JSON objects on the wire; their keys are the `TypedDict`s at
the end, read by both sides. Standard library only (the plugin imports it inside QGIS).
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypedDict

# -- method names --------------------------------------------------------------------------
SCAN = "scan"
TRAIN = "train"
INDEX = "index"
EXPORT = "export"
STAC_ITEMS = "stac_items"
QUERY = "query"
REFINE = "refine"
STATUS = "status"
CANCEL = "cancel"
DOCTOR = "doctor"
SHUTDOWN = "shutdown"
JOB_METHODS = (TRAIN, INDEX, SCAN, EXPORT, STAC_ITEMS)   # run as jobs, with progress
LONG_JOBS = (TRAIN, INDEX)                              # one of these at a time
ANSWERED = (STATUS, CANCEL, QUERY, REFINE, DOCTOR)      # answered at once

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
        """The Place fields of a params object, typed (RequestError on wrong types)."""
        try:
            point = params.get("point")
            return {"point": (float(point[0]), float(point[1])) if point is not None else None,
                    "crs": _epsg(str(params.get("crs") or "EPSG:4326")),
                    "raster": params.get("raster") or None,
                    "footprint": params.get("footprint") or None,
                    "footprint_crs": _epsg(params.get("footprint_crs") or None),
                    "tile": int(params["tile"]) if params.get("tile") is not None else None,
                    "bands": _band_list(params.get("bands"))}
        except (TypeError, ValueError, IndexError, KeyError) as error:
            raise RequestError(f"bad place (point, crs, raster, footprint, tile): {error}") \
                from None

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


def _band_list(value: Any) -> list[int | str] | None:
    """A list of 1-based band numbers or band names (None or [] for none)."""
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(
            (isinstance(b, int) and not isinstance(b, bool) and b >= 1)
            or (isinstance(b, str) and b.strip()) for b in value):
        raise RequestError(f"bands must be a list of band numbers (1, 2, ...) or names, got "
                           f"{value!r}")
    return list(value)


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
        try:
            return cls(**cls.place_params(params), index=str(params.get("index") or ""),
                       model=params.get("model") or None, k=int(params.get("k", 20)),
                       within=params.get("within") or None,
                       exclude_radius=float(params.get("exclude_radius") or 0.0),
                       thumbnails=bool(params.get("thumbnails", False)))
        except (TypeError, ValueError) as error:
            raise RequestError(f"bad query parameters: {error}") from None

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
        return cls(**cls.place_params(item), relevant=item["relevant"])

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
        try:
            return cls([Example.from_params(e, n) for n, e in enumerate(examples, start=1)],
                       index=str(params.get("index") or ""), model=params.get("model") or None,
                       k=int(params.get("k", 20)),
                       exclude_examples=bool(params.get("exclude_examples", True)),
                       within=params.get("within") or None,
                       thumbnails=bool(params.get("thumbnails", False)))
        except (TypeError, ValueError) as error:
            if isinstance(error, RequestError):
                raise
            raise RequestError(f"bad refine parameters: {error}") from None

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


# -- jobs ----------------------------------------------------------------------------------
@dataclass
class ScanRequest:
    """`scan`: describe every raster source under a folder."""

    METHOD: ClassVar[str] = SCAN
    folder: str

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ScanRequest:
        _required(params, "scan", "folder")
        return cls(str(params["folder"]))

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

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IndexRequest:
        _required(params, "index", "folder", "model", "index")
        try:
            return cls(str(params["folder"]), str(params["model"]), str(params["index"]),
                       _optional_int(params.get("tile_size")), _optional_int(params.get("stride")),
                       float(params.get("min_valid", 0.5)), bool(params.get("rebuild", False)),
                       list(params["bands"]) if params.get("bands") else None,
                       str(params["dask"]) if params.get("dask") else None)
        except (TypeError, ValueError) as error:
            raise RequestError(f"bad index parameters: {error}") from None

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)},
                        _defaults(IndexRequest))


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


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
        return cls(str(params["index"]), str(params["output"]), params.get("format") or None)

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)}, {})


@dataclass
class SourceEntry:
    """A training source: local rasters (paths, or a folder) with their bands, or a remote
    one: `url` (a raster URL or a GDAL web-service description, with bands) or `stac` (a STAC
    catalogue or API, with assets, and optional collection, date and max_cloud)."""

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

    @property
    def remote(self) -> bool:
        return bool(self.url or self.stac)

    @classmethod
    def local(cls, paths: list[str], bands: list[int | str] | None = None,
              name: str | None = None) -> SourceEntry:
        """Local rasters: one folder, or the files of one product."""
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
        values = dict(entry)
        if isinstance(values.get("paths"), str):
            values["paths"] = [values["paths"]]
        source = cls(**values)
        if not (source.remote or source.paths or source.folder):
            raise RequestError(f"{what} needs paths or a folder")
        if source.stac and not source.assets:
            raise RequestError(f"{what}: a STAC source needs assets, e.g. [\"B05\", \"B8A\"]")
        return source

    def to_params(self) -> dict[str, Any]:
        return _dropped({f.name: getattr(self, f.name) for f in fields(self)}, {})


@dataclass
class TrainRequest:
    """`train`: a model package from a primary and auxiliary sources. `options` holds the
    engine's training settings by name (bits, clusters, epochs, patch_size, rgb, ...: the
    fields of `mrhash.config.TrainConfig`, checked by the engine)."""

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
    options: dict[str, Any] = field(default_factory=dict)

    SPECIAL: ClassVar[tuple[str, ...]] = ("output", "primary", "auxiliary", "aux_bands",
                                          "aux_date", "aux_max_cloud", "pull_cache")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainRequest:
        _required(params, "train", "output")
        auxiliary = params.get("auxiliary") or []
        groups = params.get("aux_bands") or []
        if not isinstance(auxiliary, list) or not isinstance(groups, list):
            raise RequestError("auxiliary and aux_bands must be lists")
        try:
            aux_bands = [(str(_object(g, "aux_bands entry")["name"]), list(g["bands"]))
                         for g in groups]
        except (KeyError, TypeError) as error:
            raise RequestError(f"aux_bands entries need name and bands ({error})") from None
        cloud = params.get("aux_max_cloud")
        return cls(str(params["output"]),
                   SourceEntry.from_params(params.get("primary"), "primary"),
                   [SourceEntry.from_params(e, f"auxiliary[{i}]")
                    for i, e in enumerate(auxiliary)],
                   aux_bands, params.get("aux_date") or None,
                   float(cloud) if cloud is not None else None,
                   params.get("pull_cache") or None,
                   {k: v for k, v in params.items() if k not in cls.SPECIAL and v is not None})

    def to_params(self) -> dict[str, Any]:
        params = {**self.options, "output": self.output, "primary": self.primary.to_params()}
        if self.auxiliary:
            params["auxiliary"] = [a.to_params() for a in self.auxiliary]
        if self.aux_bands:
            params["aux_bands"] = [{"name": n, "bands": list(b)} for n, b in self.aux_bands]
        return params | _dropped({"aux_date": self.aux_date, "aux_max_cloud": self.aux_max_cloud,
                                  "pull_cache": self.pull_cache}, {})


# -- results (JSON objects on the wire; these are their keys) ------------------------------
class Hit(TypedDict, total=False):
    rank: int
    id: int
    distance: int            # Hamming distance to the query's code
    score: float             # similarity of the embeddings (orders ties); refine: its score
    path: str                # the raster read (the primary's first file)
    paths: list[str]
    window: list[int]        # col, row, width, height in the raster's pixels
    crs: str
    bounds: list[float]      # in crs
    footprint: dict          # GeoJSON geometry, EPSG:4326
    thumbnail: str | None
    index: str               # the index folder (sharded searches)


class Ties(TypedDict):
    distance: int | None     # rank 1's distance
    count: int               # indexed tiles at that distance (passing the filters)
    capped: bool             # count is a lower bound


class QueryResult(TypedDict, total=False):
    query: dict              # footprint (GeoJSON), crs, bounds, code, path / tile, thumbnail
    hits: list[Hit]
    n_tiles: int
    seconds: float
    ties: Ties
    display_bands: list[int]  # the rasters' bands the thumbnails show (R, G, B), 1-based
    display_limits: list[list[float]]  # [low, high] raw values of each, stretched to 0-255


class IndexResult(TypedDict, total=False):
    index: str
    n_tiles: int
    added: int
    removed: int
    unchanged: int
    files_indexed: int
    files_removed: int
    skipped: list[dict]      # [{path, error}]
    kept: list[dict]
    seconds: float
    tiles_per_s: float


class ScanResult(TypedDict):
    folder: str
    n_files: int
    sources: list[dict]      # name, paths, crs, res, bands, footprint, footprint_wgs84, ...
    errors: list[dict]       # [{path, error}]


class ExportResult(TypedDict):
    output: str
    format: str
    n_tiles: int
    seconds: float


REQUESTS: dict[str, Any] = {cls.METHOD: cls for cls in (
    ScanRequest, TrainRequest, IndexRequest, ExportRequest, QueryRequest, RefineRequest)}
