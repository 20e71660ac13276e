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

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import shapely
from mrhash_contract import index_layout
from mrhash_contract.protocol import (
    FIX_MODEL,
    FIX_REBUILD,
    Hit,
    Place,
    QueryPlace,
    QueryRequest,
    QueryResult,
    Ties,
)

from mrhash.errors import BadInput, IndexCorrupted, MrHashError, OutsideIndex, validated
from mrhash.index.build import DB_FILE
from mrhash.index.embeddings import EmbeddingTable, unit_parts
from mrhash.index.encode import open_for_model
from mrhash.index.folder import IndexFolder, index_bands
from mrhash.index.hamming import BinaryIndex
from mrhash.index.store import TileRecord
from mrhash.index.thumbnail_store import ThumbnailReader
from mrhash.index.thumbnails import display_bands, query_thumbnail, thumbnail
from mrhash.log import log
from mrhash.model import history as model_history
from mrhash.model.onnx_encoder import ENCODER_OF_PRECISION, encoder_precision
from mrhash.model.package import load_model, pack_codes, read_card
from mrhash.raster.bandinfo import query_bands
from mrhash.raster.geometry import (
    Footprint,
    geojson,
    geojsons,
    haversine_m,
    parse_wkt,
    transform_point,
)
from mrhash.raster.sources import Source, SourceSpec, open_source, regular_file

OPEN_SOURCES = 8  # rasters a Searcher keeps open for point queries
SHORTLIST_MIN = 2048  # candidates re-ranked inside ties: at least this many, or 4k
TIE_COUNT_MAX = 10_000  # tiles counted in rank 1's tie group


def shortlist_cap(k: int) -> int:
    return max(4 * k, SHORTLIST_MIN)


@dataclass
class Probe:
    """What a query (or a refine example) searches with."""

    code: np.ndarray        # packed uint8 [1, bits // 8]
    embedding: np.ndarray   # float32 [bits + latent], scaled as the table's rows (unit_parts)
    footprint: Footprint
    about: dict             # path, and tile for a stored tile
    paths: tuple[str, ...] = ()  # the raster files read (a stored tile: none)

    @classmethod
    def of(cls, values: np.ndarray, bits: int, footprint: Footprint, about: dict,
           paths: tuple[str, ...] = ()) -> Probe:
        """From an encoded patch's embedding [1, bits + latent]: the sign of its first `bits`
        values is the code."""
        return cls(pack_codes(values[:, :bits]), unit_parts(values, bits)[0], footprint, about,
                   paths)

    def centre4326(self) -> tuple[float, float]:
        west, south, east, north = self.footprint.to("EPSG:4326").bounds
        return (west + east) / 2, (south + north) / 2

    def describe(self) -> QueryPlace:
        """The `query` part of a result."""
        return QueryPlace(geojson(self.footprint), self.footprint.crs,
                          list(self.footprint.bounds), self.code[0].tobytes().hex(),
                          self.about["path"], self.about.get("tile"))


def _pairs(dist: np.ndarray, ids: np.ndarray) -> list[tuple[int, int]]:
    """(distance, id) of a search's hits ([1, n] or [n] arrays; id -1 = no hit)."""
    dist, ids = np.ravel(dist), np.ravel(ids)
    found = ids >= 0
    return list(zip(dist[found].tolist(), ids[found].tolist(), strict=True))


class Searcher:
    """An opened index (store + codes in memory) and, once needed, its model. Kept warm by
    the worker; `stale()` tells when the index on disk changed."""

    def __init__(self, index_dir: str | Path, model=None,
                 model_loader: Callable[[str], object] | None = None,
                 model_file: str | None = None):
        """`model_file`: the index's model where it is now (moved since indexing), loaded
        only when needed (`model_loader`, default `load_model`)."""
        self.folder = IndexFolder(index_dir, read_only=True)  # queries never write
        meta = self.folder.meta()
        self._meta = meta
        self.fingerprint = meta.get("fingerprint")
        self.model_path = model_file or meta.get("model_path")
        self.tile_size = int(meta.get("tile_size", 0))
        self.index: BinaryIndex = self.folder.load_codes()
        # kept warm with the codes: the tie re-rank and refine read them (float32 in memory:
        # 328 MB at 1M tiles of 64 bits + a 16-value latent, ids included)
        self.embeddings: EmbeddingTable = self.folder.load_embeddings()
        self._opened = self._identity()
        self._model = None
        self._card = None  # the model's config alone (package.ModelCard), read without torch
        self._stored = None  # thumbnail_store.ThumbnailReader, once thumbnails are asked
        self._stored_opened = False
        self._model_loader = model_loader
        self._sources: dict[tuple, Source] = {}  # (paths, bands) -> opened raster
        self._query_bands: dict[tuple[str, ...], tuple[int, ...] | None] = {}
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
        if self._stored is not None:
            self._stored.close()
        self.folder.close()

    def stored_thumbnails(self):
        """The pictures stored at index time (a ThumbnailReader), None when the index has
        none for its model and bands: then thumbnails are rendered from the rasters."""
        if not self._stored_opened:
            self._stored = ThumbnailReader.open(self.folder.root, self._meta)
            self._stored_opened = True
        return self._stored

    def _thumbnail(self, record: TileRecord) -> Path:
        """The PNG of an indexed tile: stored at index time, else rendered with the model's
        colours (a moved model loses only the thumbnails that must be rendered)."""
        stored = self.stored_thumbnails()
        try:
            card, bands = self.card, self.bands
        except MrHashError:
            if stored is None:
                raise
            card = bands = None
        return thumbnail(self.folder.thumbnail_dir, record, card, bands, stored=stored)

    def _source(self, paths: tuple[str, ...], bands: tuple[int | str, ...] | None = None
                ) -> Source:
        """A raster kept open between queries (a few, oldest closed first), read with `bands`
        (default: the index's selection); windowed reads, since a query reads one patch and
        loading whole files would cost more than that."""
        bands = bands or self.bands
        key = (paths, bands)
        source = self._sources.pop(key, None)
        if source is None:
            spec = SourceSpec("primary", paths, bands)
            source = open_for_model(spec, self.model, cache_bytes=0)
        self._sources[key] = source  # most recently used last
        while len(self._sources) > OPEN_SOURCES:
            self._sources.pop(next(iter(self._sources))).close()
        return source

    def stale(self) -> bool:
        return self._identity() != self._opened

    def _check_fingerprint(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise IndexCorrupted(
                f"index was built with model {self.fingerprint[:12]} "
                f"({self.model_path}), not {fingerprint[:12]}: query with that model "
                "or rebuild the index with `mrhash index --rebuild`",
                path=str(self.folder.root), fix=FIX_REBUILD)

    def use_model(self, model) -> None:
        """Encode queries with `model`, at the precision the index was built with (an int8
        index's queries are int8 codes too, whatever the worker's encoder)."""
        self._check_fingerprint(model.fingerprint)
        precision = self._meta.get("encoder_precision", "float")
        if encoder_precision(model.encoder) != precision:
            model = model.with_encoder(ENCODER_OF_PRECISION[precision])
        self._model = model

    @property
    def bands(self) -> tuple[int | str, ...] | None:
        """The band selection the index was built with (queries read rasters with it)."""
        return index_bands(self._meta, self.card)

    def _model_file(self) -> str:
        """The index's model file: where it recorded it, or, retrained since, the generation
        kept beside it (model_history)."""
        path = (model_history.model_file(self.model_path, self.fingerprint)
                if self.model_path else None)
        if path is None or not Path(path).is_file():
            raise IndexCorrupted(f"the index's model {self.model_path} is missing; give "
                                 "the same model where it is now (--model)",
                                 path=str(self.folder.root), fix=FIX_MODEL)
        return str(path)

    @property
    def model(self):
        """The model that encodes (torch): only a query by point or footprint needs it."""
        if self._model is None:
            self.use_model((self._model_loader or load_model)(self._model_file()))
        return self._model

    @property
    def card(self):
        """What thumbnails and the display read of the model: the loaded model, else its
        package's config (`package.read_card`, no torch import)."""
        if self._model is not None:
            return self._model
        if self._card is None:
            card = read_card(self._model_file())
            self._check_fingerprint(card.fingerprint)
            self._card = card
        return self._card

    def warm(self) -> None:
        """Do now what a first query would do once (the index was chosen): load the model and
        run one encode and one Hamming scan, so the first query costs what the next ones do
        (torch's first forward pass allocates its buffers; the scan pages the codes in)."""
        model = self.model
        size = model.patch_size
        model.embed(np.zeros((1, model.n_bands, size, size), np.float32),
                    np.ones((1, size, size), bool))
        if self.index.ntotal:
            self.index.search(np.zeros((1, model.bits // 8), np.uint8), 1)

    # -- the query patch -----------------------------------------------------------------
    def _covering_file(self, x: float, y: float, crs: str, what: str = "point"
                       ) -> tuple[str, tuple[str, ...]]:
        lon, lat = transform_point(x, y, crs, "EPSG:4326")
        for path, paths in index_layout.rasters_at(self.folder.store.db, lon, lat):
            source = self._source(paths)
            px, py = transform_point(x, y, crs, source.crs)
            minx, miny, maxx, maxy = source.footprint.bounds
            if minx <= px <= maxx and miny <= py <= maxy:
                return path, paths
        raise OutsideIndex(f"{what} ({x:.6g}, {y:.6g}) in {crs} is outside every indexed "
                           "raster; give the raster to read the query patch from")

    def _read_patch(self, paths: tuple[str, ...], footprint: Footprint | None,
                    point: tuple[float, float] | None, crs: str,
                    bands: tuple[int | str, ...] | None = None) -> tuple[np.ndarray, Footprint]:
        """The embedding [1, bits + latent] of the patch at `footprint`, or of the tile-sized
        patch centred on `point` (read with `bands`, default the index's)."""
        size = self.model.patch_size
        source = self._source(paths, bands)
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
        return self.model.embed(patch[None], valid[None]), footprint

    def probe(self, query: Place) -> Probe:
        """What `query` searches with: a stored tile's code and embedding, or the encoded
        patch at a point or footprint."""
        if query.tile is not None:
            record = self.folder.store.tiles([query.tile]).get(query.tile)
            if record is None:
                raise BadInput(f"no tile with id {query.tile} in this index")
            return Probe(np.frombuffer(record.code, np.uint8)[None],
                         self.embeddings.rows(np.array([query.tile]))[0],
                         Footprint(record.crs, record.bounds),
                         {"tile": query.tile, "path": record.path})
        bands = None
        if query.raster:  # any raster, indexed or not, read with the model's bands
            path, paths = regular_file(query.raster, "raster"), (query.raster,)
            bands = tuple(query.bands) if query.bands else self._bands_of(paths)
        if query.point is not None:
            if not query.raster:  # the indexed raster under the point
                path, paths = self._covering_file(*query.point, query.crs)
            values, footprint = self._read_patch(paths, None, query.point, query.crs, bands)
            return Probe.of(values, self.model.bits, footprint, {"path": path}, paths)
        geometry = parse_wkt(query.footprint, "footprint")
        crs = query.footprint_crs
        if query.raster:
            if crs is None:
                crs = self._source(paths, bands).crs
        else:  # the indexed raster under the footprint's centre
            crs = crs or "EPSG:4326"
            centre = shapely.centroid(shapely.box(*geometry.bounds))
            path, paths = self._covering_file(centre.x, centre.y, crs, "the footprint's centre")
        values, footprint = self._read_patch(paths, Footprint(crs, geometry.bounds), None, crs,
                                             bands)
        return Probe.of(values, self.model.bits, footprint, {"path": path}, paths)

    def _bands_of(self, paths: tuple[str, ...]) -> tuple[int, ...] | None:
        """The bands of a query raster that hold the model's (None: laid out like the indexed
        rasters); BandMismatch when what its bands say cannot tell."""
        if paths in self._query_bands:
            return self._query_bands[paths]
        reference_paths = index_layout.first_raster(self.folder.store.db)
        if reference_paths is None or tuple(reference_paths) == tuple(paths):
            return None
        with (open_source(SourceSpec("query", paths)) as query_source,
              open_source(SourceSpec("reference", reference_paths)) as reference,
              open_source(SourceSpec("primary", reference_paths, self.bands)) as selected):
            bands = query_bands(query_source, reference, selected)
        self._query_bands[paths] = bands
        return bands

    # -- search --------------------------------------------------------------------------
    def _candidates(self, probe: Probe, query: QueryRequest, centre: tuple[float, float]
                    ) -> tuple[list[tuple[int, int]], bool]:
        """(distance, id) of the hits passing the filters, in (distance, id) order: all of
        those at most as far as the k-th (up to `shortlist_cap`, the tie re-rank's pool),
        and whether every indexed tile that near was seen (False: a tie group went on)."""
        within = parse_wkt(query.within, "within area") if query.within else None
        if within is not None:
            shapely.prepare(within)
            ids, codes = self.folder.store.codes_within(within.bounds, probe.code.shape[1])
            if not len(ids):
                return [], True
            dist, pos = faiss.knn_hamming(probe.code, codes, len(ids))
            order = _pairs(dist, np.where(pos >= 0, ids[pos.clip(0)], -1))
            return self._passing(order, query, centre, within), True
        cap, total = shortlist_cap(query.k), self.index.ntotal
        want = min(query.k + 1, total)  # one more than k: is the k-th hit's tie group over?
        while True:
            order = _pairs(*self.index.search(probe.code, want))
            passing = self._passing(order, query, centre, None)
            seen_all = want >= total
            if len(passing) >= query.k:
                kth = passing[query.k - 1][0]
                if seen_all or order[-1][0] > kth:  # every tile at <= kth was seen
                    return passing, True
                group = self._tie_group(probe, query, centre, kth, cap)
                if group is not None:
                    return group, True
                if sum(d <= kth for d, _ in passing) >= cap:
                    return passing, False
                want = min(max(want * 4, cap + 1), total)
            elif seen_all:
                return passing, True
            else:
                want = min(want * 4 + 64, total)

    def _tie_group(self, probe: Probe, query: QueryRequest, centre: tuple[float, float], kth: int,
                   cap: int) -> list[tuple[int, int]] | None:
        """Every passing candidate at most `kth` away, from one range scan of the exact
        layout; None where that does not give k of them within the cap (cells layout, a
        tie group beyond the shortlist, filters dropping too many): the caller widens."""
        found = self.index.within(probe.code, kth)
        if found is None or len(found[0]) > cap:
            return None
        passing = self._passing(_pairs(*found), query, centre, None)
        return passing if len(passing) >= query.k else None

    def _passing(self, order: list[tuple[int, int]], query: QueryRequest,
                 centre: tuple[float, float], within) -> list[tuple[int, int]]:
        """The candidates whose footprint centre passes `within` and `exclude_radius`."""
        order.sort()  # (distance, id)
        if within is None and query.exclude_radius <= 0:
            return order
        centres = self.folder.store.centres4326(i for _, i in order)
        order = [(d, i) for d, i in order if i in centres]
        if not order:
            return []
        lon, lat = np.array([centres[i] for _, i in order]).T
        keep = np.ones(len(order), bool)
        if within is not None:
            keep &= shapely.contains_xy(within, lon, lat)
        if query.exclude_radius > 0:
            keep &= haversine_m(centre[0], centre[1], lon, lat) >= query.exclude_radius
        return [hit for hit, ok in zip(order, keep, strict=True) if ok]

    def _reranked(self, probe: Probe, passing: list[tuple[int, int]], k: int
                  ) -> list[tuple[int, int, float]]:
        """The k best (distance, id, score): by Hamming distance, then inside a tie by the
        similarity of the query's and the tile's embeddings (embeddings.unit_parts: mostly the
        code cosine, and the latent's; then id, for a stable order), over every candidate at
        most as far as the k-th."""
        if not passing:
            return []
        kth = passing[min(k, len(passing)) - 1][0]
        pool = np.array([hit for hit in passing if hit[0] <= kth][:shortlist_cap(k)], np.int64)
        dist, ids = pool[:, 0], pool[:, 1]
        by_id = np.argsort(ids)  # looked up in id order: the table is read forward
        scores = np.empty(len(ids), np.float32)
        scores[by_id] = self.embeddings.rows(ids[by_id]) @ probe.embedding
        order = np.lexsort((ids, -scores, dist))[:k]
        return [(int(dist[j]), int(ids[j]), float(scores[j])) for j in order]

    def _ties(self, probe: Probe, query: QueryRequest, passing: list[tuple[int, int]],
              complete: bool) -> Ties:
        """How many indexed tiles (passing the filters) share rank 1's distance: "37 places
        tie at distance 0". `capped`: the count is a lower bound (at most TIE_COUNT_MAX)."""
        if not passing:
            return Ties(None, 0, False)
        first = passing[0][0]
        count = sum(d == first for d, _ in passing)
        exact = complete or passing[-1][0] > first
        if not exact and not query.within and query.exclude_radius <= 0:
            # the tie group fills the shortlist: count it up to the cap with one wider scan
            dist, ids = self.index.search(probe.code, min(TIE_COUNT_MAX + 1, self.index.ntotal))
            count = int(((dist[0] == first) & (ids[0] >= 0)).sum())
            exact = count <= TIE_COUNT_MAX
        return Ties(first, min(count, TIE_COUNT_MAX), not exact or count > TIE_COUNT_MAX)

    def hit(self, rank: int, tile_id: int, distance: int, score: float, record: TileRecord,
            thumbnails: bool, footprint: dict | None = None) -> Hit:
        """One hit of a result; `footprint`: its GeoJSON when made with others' (`hits`)."""
        hit = Hit(rank, tile_id, distance, round(score, 4), record.path,
                  footprint or geojson(Footprint(record.crs, record.bounds)), list(record.paths),
                  list(record.window), record.crs, list(record.bounds))
        if thumbnails:
            try:
                hit.thumbnail = str(self._thumbnail(record))
            except MrHashError as error:  # a moved raster must not lose the hit
                log.warning(f"no thumbnail for tile {tile_id}: {error}")
        return hit

    def describe(self, probe: Probe, thumbnails: bool) -> QueryPlace:
        """The `query` part of a result, with the query's own thumbnail when asked (a stored
        tile's, or the picture of the footprint read)."""
        described = probe.describe()
        if thumbnails:
            try:
                if "tile" in probe.about:
                    record = self.folder.store.tiles([probe.about["tile"]])[probe.about["tile"]]
                    picture = self._thumbnail(record)
                else:
                    picture = query_thumbnail(self.folder.thumbnail_dir, probe.paths,
                                              probe.footprint, self.card, self.bands)
                described.thumbnail = str(picture)
            except (MrHashError, OSError) as error:  # the hits matter more than the picture
                log.warning(f"no thumbnail for the query: {error}")
        return described

    def hits(self, ranked: list[tuple[int, int, float]], thumbnails: bool,
             distance: Callable[[TileRecord], int] | None = None) -> list[Hit]:
        """Hits of (distance, id, score) in rank order (tiles gone from the store dropped);
        `distance` replaces the ranked distance (refine: to the nearest relevant code)."""
        records = self.folder.store.tiles(i for _, i, _ in ranked)
        kept = [(d, i, s) for d, i, s in ranked if i in records]
        outlines = geojsons([Footprint(records[i].crs, records[i].bounds) for _, i, _ in kept])
        return [self.hit(rank, i, distance(records[i]) if distance else d, s, records[i],
                         thumbnails, outline)
                for rank, ((d, i, s), outline) in enumerate(zip(kept, outlines, strict=True),
                                                            start=1)]

    def display(self) -> dict:
        """How the thumbnails show the indexed rasters, so a client shows a hit's raster the
        same way: `display_bands` (1-based, red, green, blue) and `display_limits` (the raw
        values stretched to 0-255, per band), from the model's config (its card: no torch).
        Empty when the model's file is missing (a query by tile needs none) or for bands
        chosen by name."""
        try:
            card, bands = self.card, self.bands
        except MrHashError:  # the model moved: the hits matter more than their colours
            return {}
        count = len(bands) if bands else int(card.config.get("bands") or 0)
        positions = display_bands(count, card.config.get("rgb"))
        if bands is not None and not all(isinstance(b, int) for b in bands):
            return {}
        stats = card.stats
        return {"display_bands": [p + 1 if bands is None else int(bands[p]) for p in positions],
                "display_limits": [[round(stats.low[p], 4), round(stats.high[p], 4)]
                                   for p in positions]}

    def result(self, query_part: QueryPlace, hits: list[Hit], started: float,
               ties: Ties | None) -> QueryResult:
        """The result of a query, refine or tiles request over this index."""
        return QueryResult(query_part, hits, self.index.ntotal,
                           round(time.perf_counter() - started, 4), ties,
                           index=str(self.folder.root), layout=self.index.kind,
                           **self.display())

    def check_not_empty(self) -> None:
        if self.index.ntotal == 0:
            raise BadInput("the index holds no tiles: index a folder with rasters first",
                           path=str(self.folder.root))

    def search(self, query: QueryRequest) -> dict:
        """The QueryResult of `query`, as the worker sends it."""
        validated(query)
        started = time.perf_counter()
        self.check_not_empty()
        probe = self.probe(query)
        centre = probe.centre4326()
        passing, complete = self._candidates(probe, query, centre)
        ranked = self._reranked(probe, passing, query.k)
        return self.result(self.describe(probe, query.thumbnails),
                           self.hits(ranked, query.thumbnails), started,
                           self._ties(probe, query, passing, complete)).to_result()

    def tiles(self, request) -> dict:
        """The `tiles` request's tiles as hits, in its order (an unknown id: BadInput)."""
        started = time.perf_counter()
        records = self.folder.store.tiles(request.ids)
        missing = [i for i in request.ids if i not in records]
        if missing:
            raise BadInput(f"no tile with id {missing[0]} in the index",
                           path=str(self.folder.root))
        return self.result(QueryPlace(), self.hits([(0, i, 0.0) for i in request.ids],
                                                   request.thumbnails), started, None).to_result()


def merge_top_k(per_shard: list[list[tuple[int, int, float]]], k: int
                ) -> list[tuple[int, int, int, float]]:
    """The k best (distance, shard, id, score) of each shard's ranked (distance, id, score):
    by distance, then score, then shard and id (a stable order)."""
    merged = [(d, -score, shard, i) for shard, ranked in enumerate(per_shard)
              for d, i, score in ranked]
    merged.sort()
    return [(d, shard, i, -negative) for d, negative, shard, i in merged[:k]]


class ShardedSearcher:
    """Several index folders built with one model, searched as one: an archive split where
    one index (or one disk, one machine's memory) is not enough. The query is encoded once;
    each shard gives its k best (Hamming distance, then embedding similarity inside ties) and
    the k best of those are the hits, each naming its index."""

    def __init__(self, index_dirs: list[str | Path], model=None, *,
                 model_file: str | None = None,
                 model_loader: Callable[[str], object] | None = None):
        self.shards: list[Searcher] = []
        try:
            for index_dir in index_dirs:
                self.shards.append(Searcher(index_dir, model, model_loader, model_file))
        except BaseException:
            self.close()
            raise
        fingerprints = {shard.fingerprint for shard in self.shards}
        if len(fingerprints) > 1:
            self.close()
            raise BadInput("these indexes were built with different models ("
                           + ", ".join(sorted(f[:12] for f in fingerprints if f)) + "): "
                           "indexes searched together must share one model")

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def share_model(self) -> None:
        """One model for every shard (loaded once, by the first)."""
        model = self.shards[0].model
        for shard in self.shards[1:]:
            if shard._model is None:
                shard.use_model(model)

    def _probe(self, query: QueryRequest) -> tuple[Searcher, Probe]:
        """The query's probe, read by the first shard holding its place (any shard reads a
        raster given with it)."""
        for shard in self.shards:
            try:
                return shard, shard.probe(query)
            except OutsideIndex:
                continue
        raise OutsideIndex(f"the query is outside every raster of the {len(self.shards)} "
                           "indexes; give the raster to read the query patch from")

    def search(self, query: QueryRequest) -> dict:
        validated(query)
        started = time.perf_counter()
        if query.tile is not None:
            raise BadInput("a tile id names a tile of one index: query that index alone, or "
                           "query several by point or footprint")
        if not any(shard.index.ntotal for shard in self.shards):
            raise BadInput("the indexes hold no tiles: index a folder with rasters first")
        self.share_model()
        reader, probe = self._probe(query)
        centre = probe.centre4326()
        found = [shard._candidates(probe, query, centre) if shard.index.ntotal else ([], True)
                 for shard in self.shards]
        best = merge_top_k([shard._reranked(probe, passing, query.k)
                            for shard, (passing, _) in zip(self.shards, found, strict=True)],
                           query.k)
        records = [shard.folder.store.tiles(i for _, n, i, _ in best if n == number)
                   for number, shard in enumerate(self.shards)]
        hits = []
        for d, number, tile_id, score in best:
            record = records[number].get(tile_id)
            if record is not None:
                shard = self.shards[number]
                hit = shard.hit(len(hits) + 1, tile_id, d, score, record, query.thumbnails)
                hit.index = str(shard.folder.root)
                hits.append(hit)
        first = best[0][0] if best else None
        tie_counts = [shard._ties(probe, query, passing, complete)
                      for shard, (passing, complete) in zip(self.shards, found, strict=True)]
        ties = Ties(first, sum(t.count for t in tie_counts if t.distance == first),
                    any(t.capped for t in tie_counts if t.distance == first))
        return QueryResult(reader.describe(probe, query.thumbnails), hits,
                           sum(shard.index.ntotal for shard in self.shards),
                           round(time.perf_counter() - started, 4), ties,
                           indexes=[str(shard.folder.root) for shard in self.shards]
                           ).to_result()


def run_query(index_dirs: str | Path | list[str | Path], query: QueryRequest, model=None,
              model_file: str | None = None,
              model_loader: Callable[[str], object] | None = None) -> dict:
    """Search one index folder, or several as one (ShardedSearcher), with `model`, else the
    model of `model_file` (the index's moved) or of the index, loaded only when the query
    needs the encoder."""
    if isinstance(index_dirs, (list, tuple)) and len(index_dirs) > 1:
        searcher: Searcher | ShardedSearcher = ShardedSearcher(
            list(index_dirs), model, model_file=model_file, model_loader=model_loader)
    else:
        one = index_dirs[0] if isinstance(index_dirs, (list, tuple)) else index_dirs
        searcher = Searcher(one, model, model_loader, model_file)
    try:
        return searcher.search(query)
    finally:
        searcher.close()
