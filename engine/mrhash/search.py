"""Query an index: encode a query patch (or take a stored tile's code), Hamming search, spatial
filters, ranked hits.

A query is a point (read from the indexed raster that contains it), a footprint on any raster,
or a tile id. The patch is encoded with the model the index records; a model whose fingerprint
differs from the index's is refused. Filters: `within` (WKT in EPSG:4326; a hit is kept when
its footprint centre lies in it; candidates come from the R-tree, then an exact Hamming scan of
just those) and `exclude_radius` (metres; a hit is dropped when its centre is that close to the
query's centre, great-circle distance), applied while widening the search until k hits remain.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from mrhash.errors import BadInput, IndexCorrupted, MrHashError, OutsideIndex
from mrhash.index import BinaryIndex
from mrhash.indexer import DB_FILE, IndexFolder, index_bands, open_for_model
from mrhash.metadata import TileRecord
from mrhash.sources import Footprint, Source, SourceSpec, parse_crs, regular_file

EARTH_RADIUS_M = 6_371_008.8
OPEN_SOURCES = 8  # rasters a Searcher keeps open for point queries
MAX_K = 100_000  # hits a query may ask for (thumbnails and layers beyond that are no use)


@dataclass
class Query:
    """One of: point (+crs), raster + footprint WKT (+footprint_crs), tile id."""

    point: tuple[float, float] | None = None
    crs: str = "EPSG:4326"
    raster: str | None = None
    footprint: str | None = None        # WKT
    footprint_crs: str | None = None    # default: the raster's CRS
    tile: int | None = None
    k: int = 20
    within: str | None = None           # WKT, EPSG:4326
    exclude_radius: float = 0.0         # metres
    thumbnails: bool = False

    @classmethod
    def from_params(cls, params: dict) -> Query:
        """From a worker request's params (raises BadInput on wrong types)."""
        try:
            point = params.get("point")
            return cls(
                point=(float(point[0]), float(point[1])) if point is not None else None,
                crs=str(params.get("crs") or "EPSG:4326"),
                raster=params.get("raster"), footprint=params.get("footprint"),
                footprint_crs=params.get("footprint_crs"),
                tile=int(params["tile"]) if params.get("tile") is not None else None,
                k=int(params.get("k", 20)), within=params.get("within"),
                exclude_radius=float(params.get("exclude_radius") or 0.0),
                thumbnails=bool(params.get("thumbnails", False)))
        except (TypeError, ValueError, IndexError) as error:
            raise BadInput(f"bad query parameters: {error}") from None

    def validate(self) -> None:
        if self.crs.isdigit():  # "--crs 32632" means EPSG:32632
            self.crs = f"EPSG:{self.crs}"
        if self.footprint_crs and self.footprint_crs.isdigit():
            self.footprint_crs = f"EPSG:{self.footprint_crs}"
        modes = sum(x is not None for x in (self.point, self.footprint, self.tile))
        if modes != 1:
            raise BadInput("give exactly one of a point, a raster footprint or a tile id")
        if self.footprint is not None and not self.raster:
            raise BadInput("a footprint query needs the raster to read it from")
        if not 1 <= self.k <= MAX_K:
            raise BadInput(f"k must be between 1 and {MAX_K:,}, got {self.k}")
        if not math.isfinite(self.exclude_radius) or self.exclude_radius < 0:
            raise BadInput(f"exclude radius must be a distance >= 0 metres, got "
                           f"{self.exclude_radius}")
        if self.point is not None and not all(math.isfinite(v) for v in self.point):
            raise BadInput(f"the point {self.point} is not a finite position")
        if self.tile is not None and not 1 <= self.tile < 2**62:
            raise BadInput(f"no tile {self.tile}: tile ids are positive integers")


def _geojson(footprint: Footprint) -> dict:
    """The footprint's outline in EPSG:4326 as a GeoJSON geometry (RFC 7946)."""
    geometry = shapely.geometry.mapping(footprint.geometry_in("EPSG:4326", densify=1))
    return json.loads(json.dumps(geometry))  # tuples -> lists


def _parse_wkt(wkt: str, what: str) -> shapely.Geometry:
    try:
        geometry = shapely.from_wkt(wkt)
    except shapely.errors.GEOSException as error:
        raise BadInput(f"{what} is not valid WKT ({error})") from None
    if geometry is None or geometry.is_empty:
        raise BadInput(f"{what} is an empty geometry")
    return geometry


def _centers(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2


def query_threads() -> None:
    """One OpenMP thread for FAISS in query processes: a single query's scan does not split
    across threads anyway, and on a busy CPU OpenMP workers waiting at barriers multiply tail
    latency (p95 of a 1M-code scan: 17 ms with 1 thread, 170-430 ms with 2, same p50)."""
    import faiss

    faiss.omp_set_num_threads(1)


def transform_point(x: float, y: float, src: str, dst: str) -> tuple[float, float]:
    from rasterio.warp import transform

    try:
        xs, ys = transform(parse_crs(src), parse_crs(dst), [x], [y])
    except MrHashError:
        raise
    except Exception as error:  # PROJ errors for points outside a CRS's domain
        raise BadInput(f"cannot place point ({x}, {y}) of {src} in {dst}: {error}") from None
    if not (np.isfinite(xs[0]) and np.isfinite(ys[0])):
        raise BadInput(f"point ({x}, {y}) of {src} has no position in {dst}")
    return float(xs[0]), float(ys[0])


def haversine_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float))
                              for v in (lon1, lat1, lon2, lat2))
    a = (np.sin((lat2 - lat1) / 2) ** 2
         + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


class Searcher:
    """An opened index (store + codes in memory) and, once needed, its model. Kept warm by
    the worker; `stale()` tells when the index on disk changed."""

    def __init__(self, index_dir: str | Path, model=None,
                 model_loader: Callable[[str], object] | None = None):
        self.folder = IndexFolder(index_dir, read_only=True)  # queries never write
        meta = self.folder.meta()
        self._meta = meta
        self.fingerprint = meta.get("fingerprint")
        self.model_path = meta.get("model_path")
        self.tile_size = int(meta.get("tile_size", 0))
        self.index: BinaryIndex = self.folder.load_codes()
        self._opened = self._identity()
        self._model = None
        self._model_loader = model_loader
        self._sources: dict[tuple[str, ...], Source] = {}
        if model is not None:
            self.use_model(model)

    def _identity(self) -> tuple[int, int]:
        """(database inode, generation): changes when the index is rebuilt or updated."""
        db = self.folder.root / DB_FILE
        return (db.stat().st_ino if db.exists() else -1, self.folder.store.generation)

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()
        self.folder.close()

    def _source(self, paths: tuple[str, ...]) -> Source:
        """A raster kept open between queries (a few, oldest closed first); windowed reads,
        since a query reads one patch and loading whole files would cost more than that."""
        source = self._sources.pop(paths, None)
        if source is None:
            spec = SourceSpec("primary", paths, self.bands)
            source = open_for_model(spec, self.model, cache_bytes=0)
        self._sources[paths] = source  # most recently used last
        while len(self._sources) > OPEN_SOURCES:
            self._sources.pop(next(iter(self._sources))).close()
        return source

    def stale(self) -> bool:
        return self._identity() != self._opened

    def use_model(self, model) -> None:
        if model.fingerprint != self.fingerprint:
            raise IndexCorrupted(
                f"index was built with model {self.fingerprint[:12]} "
                f"({self.model_path}), not {model.fingerprint[:12]}: query with that model "
                "or rebuild the index with `mrhash index --rebuild`",
                path=str(self.folder.root))
        self._model = model

    @property
    def bands(self) -> tuple[int | str, ...] | None:
        """The band selection the index was built with (queries read rasters with it)."""
        return index_bands(self._meta, self.model)

    @property
    def model(self):
        if self._model is None:
            from mrhash.package import load_model

            if not self.model_path or not Path(self.model_path).is_file():
                raise IndexCorrupted(f"the index's model {self.model_path} is missing",
                                     path=str(self.folder.root))
            self.use_model((self._model_loader or load_model)(self.model_path))
        return self._model

    # -- the query patch -----------------------------------------------------------------
    def _covering_file(self, x: float, y: float, crs: str) -> tuple[str, tuple[str, ...]]:
        lon, lat = transform_point(x, y, crs, "EPSG:4326")
        rows = self.folder.store.db.execute(
            "SELECT path, paths FROM files WHERE west <= ? AND east >= ? AND south <= ? "
            "AND north >= ? AND status = 'done' ORDER BY path", (lon, lon, lat, lat)).fetchall()
        for row in rows:
            paths = tuple(json.loads(row[1]))
            source = self._source(paths)
            px, py = transform_point(x, y, crs, source.crs)
            minx, miny, maxx, maxy = source.footprint.bounds
            if minx <= px <= maxx and miny <= py <= maxy:
                return row[0], paths
        raise OutsideIndex(f"point ({x}, {y}) in {crs} is outside every indexed raster; "
                           "give the raster to read the query patch from")

    def _read_patch(self, paths: tuple[str, ...], footprint: Footprint | None,
                    point: tuple[float, float] | None, crs: str) -> tuple[np.ndarray, Footprint]:
        """Encode the patch at `footprint`, or the tile-sized patch centred on `point`."""
        size = self.model.patch_size
        source = self._source(paths)
        if footprint is None:
            px, py = transform_point(*point, crs, source.crs)
            half_x = (self.tile_size or size) * source.res[0] / 2
            half_y = (self.tile_size or size) * source.res[1] / 2
            footprint = Footprint(source.crs, (px - half_x, py - half_y,
                                               px + half_x, py + half_y))
        patch, valid = source.read(footprint, (size, size))
        if not valid.any():
            raise BadInput(f"the query footprint {footprint.bounds} ({footprint.crs}) holds "
                           "no valid pixels", path=paths[0])
        return self.model.encode(patch[None], valid[None]), footprint

    def query_code(self, query: Query) -> tuple[np.ndarray, Footprint, dict]:
        if query.tile is not None:
            record = self.folder.store.tiles([query.tile]).get(query.tile)
            if record is None:
                raise BadInput(f"no tile with id {query.tile} in this index")
            footprint = Footprint(record.crs, record.bounds)
            code = np.frombuffer(record.code, np.uint8)[None]
            return code, footprint, {"tile": query.tile, "path": record.path}
        if query.point is not None:
            # the raster given (any raster, indexed or not), else the indexed one under it
            if query.raster:
                path, paths = regular_file(query.raster, "raster"), (query.raster,)
            else:
                path, paths = self._covering_file(*query.point, query.crs)
            code, footprint = self._read_patch(paths, None, query.point, query.crs)
            return code, footprint, {"path": path}
        geometry = _parse_wkt(query.footprint, "footprint")
        if not Path(query.raster).exists():
            raise BadInput("file not found", path=query.raster)
        crs = query.footprint_crs
        if crs is None:
            from mrhash.sources import open_source

            with open_source(SourceSpec("primary", (query.raster,))) as source:
                crs = source.crs
        code, footprint = self._read_patch((query.raster,), Footprint(crs, geometry.bounds),
                                           None, crs)
        return code, footprint, {"path": query.raster}

    # -- search --------------------------------------------------------------------------
    def _ranked(self, code: np.ndarray, query: Query,
                center: tuple[float, float]) -> list[tuple[int, int, TileRecord]]:
        """[(distance, id, record)] of the k best hits passing the filters."""
        store = self.folder.store
        within = _parse_wkt(query.within, "within area") if query.within else None
        if within is not None:
            import faiss

            shapely.prepare(within)
            ids, codes = store.codes_within(within.bounds, code.shape[1])
            if not len(ids):
                return []
            dist, pos = faiss.knn_hamming(code, codes, len(ids))
            order = [(int(d), int(ids[p])) for d, p in zip(dist[0], pos[0], strict=True) if p >= 0]
            return self._filter(order, query, center, within)
        want = query.k
        while True:
            dist, ids = self.index.search(code, want)
            order = [(int(d), int(i)) for d, i in zip(dist[0], ids[0], strict=True) if i >= 0]
            hits = self._filter(order, query, center, None)
            if len(hits) >= query.k or want >= self.index.ntotal:
                return hits
            want = min(want * 4 + 64, self.index.ntotal)

    def _filter(self, order: list[tuple[int, int]], query: Query,
                center: tuple[float, float], within) -> list[tuple[int, int, TileRecord]]:
        order.sort()  # (distance, id): ties in a stable order
        hits: list[tuple[int, int, TileRecord]] = []
        chunk_size = max(query.k * 2, 256)
        for start in range(0, len(order), chunk_size):
            chunk = order[start:start + chunk_size]
            records = self.folder.store.tiles(i for _, i in chunk)
            kept = [(d, i, records[i]) for d, i in chunk if i in records]
            if kept and (within is not None or query.exclude_radius > 0):
                bounds = np.array([r.bounds4326 for _, _, r in kept])
                lon, lat = _centers(bounds)
                keep = np.ones(len(kept), bool)
                if within is not None:
                    keep &= shapely.contains_xy(within, lon, lat)
                if query.exclude_radius > 0:
                    keep &= haversine_m(center[0], center[1], lon, lat) >= query.exclude_radius
                kept = [hit for hit, ok in zip(kept, keep, strict=True) if ok]
            hits.extend(kept)
            if len(hits) >= query.k:
                return hits[:query.k]
        return hits

    def search(self, query: Query) -> dict:
        query.validate()
        started = time.perf_counter()
        if self.index.ntotal == 0:
            raise BadInput("the index holds no tiles: index a folder with rasters first",
                           path=str(self.folder.root))
        code, footprint, about = self.query_code(query)
        box4326 = footprint.to("EPSG:4326").bounds
        center = ((box4326[0] + box4326[2]) / 2, (box4326[1] + box4326[3]) / 2)
        ranked = self._ranked(code, query, center)
        hits = []
        for rank, (distance, tile_id, record) in enumerate(ranked, start=1):
            hit = {"rank": rank, "id": tile_id, "distance": distance, "path": record.path,
                   "paths": list(record.paths), "window": list(record.window),
                   "crs": record.crs, "bounds": list(record.bounds),
                   "footprint": _geojson(Footprint(record.crs, record.bounds))}
            if query.thumbnails:
                from mrhash.thumbnails import thumbnail

                try:
                    hit["thumbnail"] = str(thumbnail(self.folder.thumbnail_dir, record,
                                                         self.model, self.bands))
                except MrHashError as error:  # a moved raster must not lose the hit
                    print(f"mrhash: no thumbnail for tile {tile_id}: {error}", file=sys.stderr)
                    hit["thumbnail"] = None
            hits.append(hit)
        return {
            "query": {"footprint": _geojson(footprint), "crs": footprint.crs,
                      "bounds": list(footprint.bounds), "code": code[0].tobytes().hex(),
                      **about},
            "hits": hits, "index": str(self.folder.root), "n_tiles": self.index.ntotal,
            "layout": self.index.kind, "seconds": round(time.perf_counter() - started, 4),
        }


def run_query(index_dir: str | Path, query: Query, model=None) -> dict:
    searcher = Searcher(index_dir, model)
    try:
        return searcher.search(query)
    finally:
        searcher.close()
