"""`mrhash map`: every tile of an index scored with the refine model of the marked examples
(refine.py), kept as a GeoPackage of the likely tiles and of the areas they form.

Scores. The same logistic regression as refine (`refine.Marks` + `refine.logistic_fit`, on
the same background of the same pool), so a tile's `logit` here is its logistic score in
refine (`refine(..., propagation_weight=0)`), and both rank the tiles alike. The calibrated
`score` is the fitted model's own probability, sigmoid(logit + bias): the bias is the fit's
intercept, which refine drops because the order does not need it. Why not Platt scaling:
fitted again on the same handful of marks, which the regression already separates, a second
sigmoid only gets steeper (the marks at 0 and 1) and says nothing about unmarked tiles;
the fit's own probability is already a maximum-likelihood one of the marks against the
background (each background tile weighs BACKGROUND_WEIGHT of a mark) and is regularised (L2),
so 0.5 means "more like the relevant examples than like the rest", as a threshold should.
(docs/BENCHMARKS.md, *Map*: the F1 of the tiles at 0.5.)

Scale. The embedding table is the one searches keep in memory (embeddings.py); it is scored
SCORE_CHUNK rows at a time (one BLAS pass each, a bounded temporary), and only the tiles at
or above the floor are kept: their records are read from the store and written
RECORD_CHUNK at a time, so memory grows with the tiles kept, not the index.

Areas. The detected tiles (score >= threshold) of each raster, their EPSG:4326 boxes
dissolved (shapely.union_all) and split into connected parts: one area a part, with the
number of tiles in it, the max and mean score, and its area on the WGS84 ellipsoid (km²):
exact for polygons whose edges are meridians and parallels, as unions of lon/lat boxes are,
through Lambert's cylindrical equal-area projection of the ellipsoid (`area_km2`).

Output: written beside `output` and renamed over it once complete (fileio.atomic_output); it
may not be in the index folder or be the model, and replaces only an earlier map.
"""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import shapely
from mrhash_contract.protocol import (
    IRRELEVANT,
    RELEVANT,
    ExportMapResult,
    MapDetection,
    MapParquet,
    MapRequest,
    MapResult,
)

from mrhash.errors import BadInput, validated
from mrhash.fileio import atomic_output
from mrhash.index.export import (
    BBOX,
    GeoParquetWriter,
    GpkgLayer,
    geoparquet_written,
    gpkg_boxes,
    gpkg_create,
    gpkg_finish,
    gpkg_geometry,
    gpkg_insert,
    gpkg_written,
    hilbert_keys,
)
from mrhash.index.store import MetadataStore
from mrhash.jobs import JobControl
from mrhash.outputs import INDEX_FOLDER, MODEL_FILE, OutputKind, check_output
from mrhash.search.refine import Marks, logistic_fit, marked_tiles
from mrhash.search.searcher import Searcher, ShardedSearcher

SCORE_CHUNK = 262_144  # rows scored at once: an 84 MB temporary at 80 dimensions
RECORD_CHUNK = 20_000  # kept tiles read from the store and written at once
CALIBRATION = "logistic"  # the fitted model's own probability (module doc)
TILES = GpkgLayer("tiles", "MrHash map tiles",
                  "id INTEGER NOT NULL, path TEXT NOT NULL, col MEDIUMINT NOT NULL, "
                  "row MEDIUMINT NOT NULL, width MEDIUMINT NOT NULL, "
                  "height MEDIUMINT NOT NULL, score REAL NOT NULL, logit REAL NOT NULL, "
                  "detected BOOLEAN NOT NULL, mark TEXT, index_dir TEXT NOT NULL")
AREAS = GpkgLayer("areas", "MrHash map areas",
                  "path TEXT NOT NULL, n_tiles INTEGER NOT NULL, area_km2 REAL NOT NULL, "
                  "max_score REAL NOT NULL, mean_score REAL NOT NULL")
MAP_OUTPUT = OutputKind("a GeoPackage written by mrhash map",
                        partial(gpkg_written, layer=TILES.name, description=TILES.description))

# WGS84 ellipsoid: semi-major axis (m), first eccentricity
_A = 6378137.0
_E = math.sqrt(0.0066943799901413165)


@dataclass
class Scored:
    """The tiles at or above a floor, in table order: ids, logistic scores, probabilities."""

    ids: np.ndarray       # int64
    logits: np.ndarray    # float32
    scores: np.ndarray    # float32, in [0, 1]
    n_scored: int


def probability(logits: np.ndarray, bias: float) -> np.ndarray:
    """sigmoid(logit + bias), float32 (clipped: no overflow warning at any logit)."""
    return (1 / (1 + np.exp(-np.clip(logits + np.float32(bias), -30, 30)))).astype(np.float32)


def score_pool(table, weights: np.ndarray, bias: float, rows: np.ndarray | None,
               floor: float, job: JobControl | None = None,
               marked: np.ndarray | None = None) -> Scored:
    """Every tile of the pool (`rows` of the table; None: all) scored, SCORE_CHUNK at a time
    (unit @ weights: refine's score), those at or above `floor` kept, and the `marked` ids
    whatever their score (a tile marked not relevant stays on the map with its mark)."""
    table.compact()
    weights = np.asarray(weights, np.float32)
    marked = np.sort(np.asarray([] if marked is None else marked, np.int64))
    n = len(table) if rows is None else len(rows)
    ids, logits, scores = [], [], []
    for start in range(0, n, SCORE_CHUNK):
        stop = min(start + SCORE_CHUNK, n)
        block = table.unit[start:stop] if rows is None else table.unit[rows[start:stop]]
        logit = block @ weights
        score = probability(logit, bias)
        chunk_ids = table.ids[start:stop] if rows is None else table.ids[rows[start:stop]]
        keep = np.flatnonzero((score >= floor) | _member(chunk_ids, marked))
        ids.append(chunk_ids[keep])
        logits.append(logit[keep])
        scores.append(score[keep])
        if job:
            job.check()
            job.report(stop, n, f"{stop:,}/{n:,} tiles scored")
    if not ids:
        return Scored(np.zeros(0, np.int64), np.zeros(0, np.float32),
                      np.zeros(0, np.float32), 0)
    return Scored(np.concatenate(ids), np.concatenate(logits), np.concatenate(scores), n)


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Which of `ids` are in `sorted_ids` (a binary search each: few marks, many ids)."""
    if not len(sorted_ids):
        return np.zeros(len(ids), bool)
    pos = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


def _q(lat_deg: np.ndarray) -> np.ndarray:
    """q(φ) of the ellipsoid's authalic latitude (Snyder 1987, eq. 3-12)."""
    s = np.sin(np.radians(lat_deg))
    return (1 - _E ** 2) * (s / (1 - (_E * s) ** 2)
                            - np.log((1 - _E * s) / (1 + _E * s)) / (2 * _E))


def area_km2(geometries: np.ndarray) -> np.ndarray:
    """Areas (km²) on the WGS84 ellipsoid of lon/lat polygons whose edges are meridians and
    parallels (exact for them; close for small polygons of any shape): Lambert's cylindrical
    equal-area projection, x = a λ, y = a q(φ) / 2, then the planar area."""
    def project(xy: np.ndarray) -> np.ndarray:
        return np.stack([_A * np.radians(xy[:, 0]), _A * _q(xy[:, 1]) / 2], axis=1)

    return shapely.area(shapely.transform(geometries, project)) / 1e6


@dataclass
class Areas:
    """The dissolved detections: one polygon (EPSG:4326) an area, its raster, tile count,
    geodesic area and scores."""

    polygons: np.ndarray   # shapely Polygons
    paths: list[str]
    n_tiles: np.ndarray
    km2: np.ndarray
    max_score: np.ndarray
    mean_score: np.ndarray


def dissolve(paths: list[str], bounds: np.ndarray, scores: np.ndarray) -> Areas:
    """The boxes [n, 4] (west, south, east, north) of each raster merged where they touch or
    overlap (shapely.union_all), one area a connected part; each tile is counted in the part
    holding its centre."""
    names, raster = np.unique(np.asarray(paths, dtype=object), return_inverse=True)
    boxes = shapely.box(*np.asarray(bounds, np.float64).reshape(-1, 4).T)
    polygons, area_paths, members = [], [], []
    for r in range(len(names)):
        tiles = np.flatnonzero(raster == r)
        parts = shapely.get_parts(shapely.union_all(boxes[tiles]))
        centres = shapely.centroid(boxes[tiles])
        # (tile, part) pairs: a tile's centre is inside its own box, so in exactly one part
        tile_of, part_of = shapely.STRtree(parts).query(centres, predicate="intersects")
        _, first = np.unique(tile_of, return_index=True)
        members.append((tiles[tile_of[first]], part_of[first] + len(polygons)))
        polygons += list(parts)
        area_paths += [str(names[r])] * len(parts)
    n = len(polygons)
    tile, area = (np.concatenate(a) for a in zip(*members, strict=True)) if members \
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    n_tiles = np.bincount(area, minlength=n)
    top = np.full(n, -np.inf)
    np.maximum.at(top, area, scores[tile])
    total = np.bincount(area, weights=scores[tile], minlength=n)
    polygons = np.asarray(polygons, dtype=object)
    return Areas(polygons, area_paths, n_tiles, area_km2(polygons) if n else np.zeros(0),
                 top, total / np.maximum(n_tiles, 1))


def _extent(bounds: np.ndarray) -> tuple | None:
    if not len(bounds):
        return None
    return (*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0))


@dataclass
class ShardScores:
    """One index's part of a map: its store and folder, the tiles kept, the marked ones."""

    store: MetadataStore
    root: str
    scored: Scored
    marks: dict[int, bool]


def _write(path: Path, parts: list[ShardScores], threshold: float
           ) -> tuple[list[MapDetection], Areas, tuple | None]:
    """The tiles layer (streamed from each index's store, RECORD_CHUNK tiles at a time; each
    marked tile with its mark, and its index folder) and the areas layer; -> (the detections
    {id, path, score, index} best first, the areas, tiles' extent). A feature's fid is its
    tile id when there is one index (the plugin marks a tile by it), else a running number."""
    db = sqlite3.connect(path, isolation_level=None)
    detected: list[tuple[int, str, float, np.ndarray, str]] = []
    extent = None
    next_fid = 1
    try:
        gpkg_create(db, [TILES, AREAS])
        for part in parts:
            scored, marks = part.scored, part.marks
            for start in range(0, len(scored.ids), RECORD_CHUNK):
                chunk = slice(start, start + RECORD_CHUNK)
                ids, logits, scores = (scored.ids[chunk], scored.logits[chunk],
                                       scored.scores[chunk])
                records = part.store.tiles(ids.tolist())
                found = [n for n, i in enumerate(ids) if int(i) in records]  # gone: out
                rec = [records[int(ids[n])] for n in found]
                bounds = np.array([r.bounds4326 for r in rec], np.float64).reshape(-1, 4)
                fids = (ids[found] if len(parts) == 1
                        else np.arange(next_fid, next_fid + len(found)))
                next_fid += len(found)
                gpkg_insert(db, TILES, fids,
                            ((int(f), g.tobytes(), int(r.id), r.path, *map(int, r.window),
                              float(scores[n]), float(logits[n]), bool(scores[n] >= threshold),
                              mark_word(marks.get(int(r.id))), part.root)
                             for f, r, g, n in zip(fids, rec, gpkg_boxes(bounds), found,
                                                   strict=True)), bounds)
                detected += [(r.id, r.path, float(scores[n]), b, part.root) for r, n, b
                             in zip(rec, found, bounds, strict=True) if scores[n] >= threshold]
                chunk_extent = _extent(bounds)
                if chunk_extent is not None:
                    extent = chunk_extent if extent is None else (
                        *np.minimum(extent[:2], chunk_extent[:2]),
                        *np.maximum(extent[2:], chunk_extent[2:]))
        bounds = np.array([d[3] for d in detected], np.float64).reshape(-1, 4)
        areas = dissolve([d[1] for d in detected], bounds,
                         np.array([d[2] for d in detected], np.float64))
        area_bounds = shapely.bounds(areas.polygons).reshape(-1, 4)
        fids = np.arange(1, len(areas.paths) + 1)
        gpkg_insert(db, AREAS, fids,
                    ((int(f), gpkg_geometry(shapely.to_wkb(p, byte_order=1), tuple(b)), path,
                      int(n), round(float(k), 6), float(top), float(mean))
                     for f, p, b, path, n, k, top, mean
                     in zip(fids, areas.polygons, area_bounds.tolist(), areas.paths,
                            areas.n_tiles, areas.km2, areas.max_score, areas.mean_score,
                            strict=True)), area_bounds)
        gpkg_finish(db, {TILES.name: extent, AREAS.name: _extent(area_bounds)})
    finally:
        db.close()
    several = len(parts) > 1
    detections = [MapDetection(int(i), p, round(s, 6), root if several else None)
                  for i, p, s, _, root in sorted(detected, key=lambda d: (-d[2], d[4], d[0]))]
    return detections, areas, extent


def mark_word(relevant: bool | None) -> str | None:
    """A tile's `mark` in the layers (NULL: not marked)."""
    return None if relevant is None else (RELEVANT if relevant else IRRELEVANT)


def map_index(searcher: Searcher | ShardedSearcher, request: MapRequest,
              job: JobControl | None = None) -> dict:
    """Score every tile of the searcher's index (or of each index of a ShardedSearcher, with
    one scorer fitted for all) for the request's examples and write the GeoPackage (module
    doc). -> the MapResult as the worker sends it: output, calibration, threshold, floor,
    n_scored, n_tiles (in the tiles layer), n_detected, detected_km2 (of the areas), n_areas,
    detections [{id, path, score, index (several indexes)}] best first, seconds. Every bad
    input (no relevant example, an unknown tile, a threshold outside [0, 1], an output that
    may not be written) is BadInput before anything is written."""
    started = time.perf_counter()
    validated(request)
    shards = searcher.shards if isinstance(searcher, ShardedSearcher) else [searcher]
    if isinstance(searcher, ShardedSearcher):
        searcher.share_model()
    protected = [p for s in shards for p in ((s.folder.root, INDEX_FOLDER),
                                             (s.folder.store.get("model_path"), MODEL_FILE))]
    check_output(request.output, MAP_OUTPUT, protected)
    marks = Marks.of_shards(shards, request.refine_request())
    weights, bias = logistic_fit(*marks[0].fit_arrays())
    parts = []
    for shard, shard_marks in zip(shards, marks, strict=True):
        marked = marked_tiles(shard, shard_marks.probes)
        parts.append(ShardScores(shard.folder.store, str(shard.folder.root), score_pool(
            shard.embeddings, weights, bias, shard_marks.rows, request.tile_floor, job,
            np.fromiter(marked, np.int64)), marked))
    with atomic_output(request.output) as tmp:
        detections, areas, _ = _write(tmp, parts, request.threshold)
    n_scored = sum(part.scored.n_scored for part in parts)
    if job:
        job.report(n_scored, n_scored, "done", force=True)
    return MapResult(str(Path(request.output).resolve()), CALIBRATION, request.threshold,
                     request.tile_floor, n_scored, sum(len(part.scored.ids) for part in parts),
                     len(detections), round(float(areas.km2.sum()), 6), len(areas.paths),
                     detections, round(time.perf_counter() - started, 3)).to_result()


def run_map(request: MapRequest, model=None, job: JobControl | None = None,
            indexes: list[str] | None = None) -> dict:
    """`map_index` on the request's index (or on `indexes`, several of one model mapped as
    one), opened for it (the CLI; the worker keeps its searchers warm)."""
    folders = indexes or [request.index]
    searcher = (ShardedSearcher(folders, model) if len(folders) > 1
                else Searcher(folders[0], model))
    try:
        return map_index(searcher, request, job)
    finally:
        searcher.close()


# -- a map as GeoParquet ------------------------------------------------------------------
TILE_PARQUET = [("id", "int64"), ("path", "string"), ("col", "int32"), ("row", "int32"),
                ("width", "int32"), ("height", "int32"), ("score", "float64"),
                ("detected", "bool_"), ("mark", "string"), ("index_dir", "string")]
AREA_PARQUET = [("path", "string"), ("n_tiles", "int32"), ("area_km2", "float64"),
                ("max_score", "float64"), ("mean_score", "float64")]


def parquet_outputs(output: str | Path) -> dict[str, Path]:
    """The two files a map's GeoParquet export writes for `output` (X.parquet):
    X_areas.parquet and X_tiles.parquet (GeoParquet holds one layer a file)."""
    output = Path(output)
    return {layer: output.with_name(f"{output.stem}_{layer}.parquet")
            for layer in (AREAS.name, TILES.name)}


def _map_parquet(columns: list[tuple[str, str]]) -> OutputKind:
    names = (*(name for name, _ in columns), "geometry", BBOX)
    return OutputKind("a GeoParquet file written by a map export",
                      lambda path, head: geoparquet_written(path, head, names))


PARQUET_KINDS = {TILES.name: _map_parquet(TILE_PARQUET), AREAS.name: _map_parquet(AREA_PARQUET)}


def _geometry_wkb(blob: bytes) -> bytes:
    """The WKB of a GeoPackage geometry blob (after its header and envelope)."""
    envelope = (0, 32, 48, 48, 64)[(blob[3] >> 1) & 0b111]
    return bytes(blob[8 + envelope:])


def _space_order(bounds: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """Rows in Hilbert order of their box centres, and the extent."""
    extent = _extent(bounds)
    if extent is None:
        return np.zeros(0, np.int64), None
    keys = hilbert_keys((bounds[:, :2] + bounds[:, 2:]) / 2, extent)
    return np.argsort(keys, kind="stable"), extent


def export_map(map_path: str | Path, output: str | Path, threshold: float,
               job: JobControl | None = None) -> dict:
    """A map's GeoPackage (written by `map_index`) as two GeoParquet 1.1 files (see
    `parquet_outputs`): the tiles and the areas at or above `threshold` (areas by their best
    tile, as the plugin's confidence slider shows them), and every marked tile (`detected`
    says which are detections, `mark` what the analyst said), rows in space order with the
    bbox covering column (export.py). -> {outputs: {areas, tiles}, n_tiles (detected),
    n_marked, n_areas, threshold, seconds}. Bad input (not a map, a threshold outside [0, 1],
    an output that may not be written) is BadInput before anything is written."""
    started = time.perf_counter()
    map_path = Path(map_path)
    if not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise BadInput(f"the threshold must be between 0 and 1, got {threshold}")
    try:
        head = map_path.read_bytes()[:100] if map_path.is_file() else b""
    except OSError as error:
        raise BadInput(f"cannot read the map: {error.strerror}", path=str(map_path)) from error
    if not MAP_OUTPUT.written_before(map_path, head):
        raise BadInput("is not a map written by mrhash map (a GeoPackage with its tiles "
                       "and areas)", path=str(map_path))
    outputs = parquet_outputs(output)
    for layer, path in outputs.items():
        check_output(path, PARQUET_KINDS[layer], [(map_path, "the map")])
    with closing(sqlite3.connect(f"{map_path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        tiles = db.execute("SELECT id, path, col, row, width, height, score, score >= ?, mark, "
                           f"index_dir, geom FROM {TILES.name} WHERE score >= ? OR mark IS "
                           "NOT NULL ORDER BY id", (threshold, threshold)).fetchall()
        tiles = [(*t[:7], bool(t[7]), *t[8:]) for t in tiles]  # SQLite's 0/1 as a boolean
        areas = db.execute("SELECT path, n_tiles, area_km2, max_score, mean_score, geom FROM "
                           f"{AREAS.name} WHERE max_score >= ? ORDER BY fid",
                           (threshold,)).fetchall()
    for layer, rows, columns in ((TILES.name, tiles, TILE_PARQUET),
                                 (AREAS.name, areas, AREA_PARQUET)):
        wkb = [_geometry_wkb(row[-1]) for row in rows]
        bounds = shapely.bounds(shapely.from_wkb(wkb)).reshape(-1, 4)
        order, extent = _space_order(bounds)
        values = [[rows[i][c] for i in order] for c in range(len(columns))]
        geometry_types = ("Polygon",) if layer == TILES.name else ("Polygon", "MultiPolygon")
        with atomic_output(outputs[layer]) as tmp, \
                GeoParquetWriter(tmp, columns, extent, geometry_types) as writer:
            for start in range(0, len(order), RECORD_CHUNK):  # row groups of RECORD_CHUNK
                part = slice(start, start + RECORD_CHUNK)
                writer.write([v[part] for v in values], [wkb[i] for i in order[part]],
                             bounds[order[part]])
        if job:
            job.check()
    if job:
        job.report(1, 1, "done", force=True)
    return ExportMapResult(
        MapParquet(**{layer: str(path.resolve()) for layer, path in outputs.items()}),
        sum(bool(t[7]) for t in tiles), sum(t[8] is not None for t in tiles), len(areas),
        threshold, round(time.perf_counter() - started, 3)).to_result()
