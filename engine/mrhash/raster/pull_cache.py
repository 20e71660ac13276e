"""The local cache of what remote sources gave (remote.py, stac.py), per source and footprint.

For every primary raster, a remote auxiliary source is pulled once over the primary's
footprint: the window of each remote file covering it (plus a margin of MARGIN_PX pixels, so
bilinear reads at the edge find their neighbours) is written as a GeoTIFF on the remote's
own grid, and a JSON record naming those files is written last (atomically): a footprint
with a record is done, one without is pulled again. So an interrupted run resumes where it
stopped, repeated reads never go to the network and a run whose records are all there works
offline. The cached windows are exact copies of the remote pixels, so co-registered reads of
them give the same numbers as reads of the remote files themselves (a web service much finer
than the primary is read at about the primary's resolution instead: its overview levels).

Layout: `<cache>/mrhash-pull-cache.json` (the marker `clear` looks for), one folder per source
`<name>-<hash of its description>/`, and in it `<footprint hash>.json` + `<footprint
hash>-<k>.tif`. A place no STAC item covers is recorded too (`no_coverage`), so it is skipped
offline as well.

The cache may be a folder of the user's (`--pull-cache ~/data`): the marker records whether
the cache created the folder and which source folders it created, and the cache's files
are those it names itself (CACHE_FILE) in those folders. Its size counts them only, and
`clear` deletes them only, then the folders it created once empty: never a file it did not
write nor a folder it did not make."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from mrhash_contract.protocol import PullSummary
from rasterio._err import CPLE_BaseError  # GDAL's errors (a failed HTTP range read)
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mrhash.errors import BadInput
from mrhash.fileio import atomic_output, atomic_write_bytes
from mrhash.jobs import JobControl
from mrhash.raster.crs import crs_string
from mrhash.raster.geometry import Footprint
from mrhash.raster.sources import Source, SourceSpec, open_source
from mrhash.remote.access import (
    HttpSettings,
    NoCoverage,
    diagnose,
    display_url,
    gdal_http,
    is_http,
    is_service,
)
from mrhash.remote.kinds import Resolver, kind_for
from mrhash.remote.vrt import check_remote_raster

MARKER = "mrhash-pull-cache.json"
MARKER_VERSION = 2  # 1 (no version): no record of what the cache created
# what the cache names the files it writes in a source folder: a footprint's record, the
# windows pulled for it, a web service's description; and fileio.atomic_output's temporary
# files of these (left by a kill -9)
_NAMES = r"[0-9a-f]{16}\.json|[0-9a-f]{16}-\d+\.tif|service-[0-9a-f]{8}\.xml"
CACHE_FILE = re.compile(rf"(?:{_NAMES})|\.(?:{_NAMES})\.[a-z0-9_]+\.tmp")
MARKER_FILE = re.compile(rf"{re.escape(MARKER)}|\.{re.escape(MARKER)}\.[a-z0-9_]+\.tmp")
SOURCE_FOLDER = re.compile(r"[\w-]{1,40}-[0-9a-f]{12}")  # _safe(name)-<digest>
MARGIN_PX = 3
BLOCK_ROWS = 256  # rows of a window read between two cancel checks


def default_cache_dir(output: str) -> str:
    """`<model>.pull-cache` beside the model file."""
    return f"{output}.pull-cache"


@dataclass
class PullStats(PullSummary):
    """What pulling did in a run (the train result's `pull`), added up over the pullers."""

    def add(self, other: PullStats) -> None:
        for name in ("footprints", "pulled", "from_cache", "no_coverage", "bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds = round(self.seconds + other.seconds, 2)

    def summary(self) -> str:
        return (f"pulled {self.pulled} footprint(s) ({self.bytes / 1e6:.1f} MB in "
                f"{self.seconds:.1f} s), {self.from_cache} from the cache, {self.no_coverage} "
                f"not covered (skipped); cache {self.cache_dir}: {self.cache_files} files, "
                f"{self.cache_bytes / 1e6:.1f} MB (mrhash cache --clear {self.cache_dir})")


def _marker(root: Path) -> dict | None:
    """The cache's marker (None: not a pull cache; {} when unreadable: nothing recorded)."""
    path = root / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _write_marker(root: Path, marker: dict) -> None:
    atomic_write_bytes(root / MARKER, json.dumps(marker, indent=1).encode())


def _cache_folders(root: Path, marker: dict) -> list[Path]:
    """The source folders the cache created: those its marker names (a marker of version 1,
    which names none, made every folder of the layout's names); never a symbolic link."""
    named = marker.get("folders")
    if isinstance(named, list):
        candidates = [root / str(n) for n in named if SOURCE_FOLDER.fullmatch(str(n))]
    else:
        candidates = sorted(p for p in root.iterdir() if SOURCE_FOLDER.fullmatch(p.name))
    return [p for p in candidates if p.is_dir() and not p.is_symlink()]


def _own_files(folder: Path, names: re.Pattern) -> list[Path]:
    """The regular files (not links) of `folder` named as the cache names its own."""
    return sorted(p for p in folder.iterdir()
                  if names.fullmatch(p.name) and not p.is_symlink() and p.is_file())


def cache_files(root: str | Path) -> dict[Path, list[Path]]:
    """What the cache wrote, by folder (the root: its marker; each source folder it created:
    the files it named itself); {} when `root` is not a pull cache."""
    root = Path(root)
    marker = _marker(root) if root.is_dir() else None
    if marker is None:
        return {}
    return {root: _own_files(root, MARKER_FILE),
            **{folder: _own_files(folder, CACHE_FILE) for folder in _cache_folders(root, marker)}}


def _size(files: Iterable[Path]) -> tuple[int, int]:
    files = list(files)
    return len(files), sum(p.stat().st_size for p in files)


def cache_size(root: str | Path) -> tuple[int, int]:
    """(files, bytes) the cache wrote under `root` (0, 0 when it is not a pull cache)."""
    return _size(f for files in cache_files(root).values() for f in files)


def cache_report(root: str | Path) -> dict:
    """Size of a pull cache (what it wrote, nothing else in its folder), whole and per
    source."""
    root = Path(root)
    if not (root / MARKER).is_file():
        raise BadInput(f"not a MrHash pull cache (no {MARKER})", path=str(root))
    owned = cache_files(root)
    sources = []
    for folder, files in owned.items():
        if folder != root:
            count, size = _size(files)
            sources.append({"source": folder.name, "footprints": sum(
                1 for f in files if f.suffix == ".json"), "files": count, "bytes": size})
    files, size = _size(f for listed in owned.values() for f in listed)
    return {"cache": str(root), "files": files, "bytes": size, "sources": sources}


def clear_cache(root: str | Path) -> dict:
    """Delete what the cache wrote (a folder carrying the marker only): its files, then the
    folders it created once they are empty. Whatever else is there is kept and listed
    (`kept`): a folder of the user's given as the cache keeps all its own files."""
    root = Path(root)
    report = cache_report(root)
    marker = _marker(root) or {}
    owned = cache_files(root)
    for path in (f for files in owned.values() for f in files):
        if path.name != MARKER:  # the marker last: an interrupted clear can be re-run
            path.unlink(missing_ok=True)
    for folder in owned:
        if folder != root:
            _remove_if_empty(folder)
    (root / MARKER).unlink(missing_ok=True)
    if marker.get("created") is True:
        _remove_if_empty(root)
    kept = [] if not root.is_dir() else sorted(
        str(p.relative_to(root)) for folder in owned if folder.is_dir()  # the root first
        for p in folder.iterdir() if p not in owned)
    return {**report, "kept": kept}


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: it holds files the cache did not write, they stay
        pass


def _digest(payload: object, size: int = 16) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()
                          ).hexdigest()[:size]


class RemotePuller:
    """One remote auxiliary source: `local_spec(footprint)` is the SourceSpec of the cached
    files covering a primary footprint (pulled first when not cached)."""

    def __init__(self, spec: SourceSpec, cache_dir: str | None = None):
        if spec.remote is None:
            raise BadInput(f"source {spec.name!r} is not remote")
        self.spec, self.options = spec, spec.remote
        root = cache_dir or self.options.cache_dir
        if not root:
            raise BadInput(f"remote source {spec.name!r} needs a cache folder")
        self.root = Path(root)
        description = {"paths": list(spec.paths), "bands": spec.bands,
                       **{k: v for k, v in self.options.to_dict().items() if k != "cache_dir"}}
        self.folder = self.root / f"{_safe(spec.name)}-{_digest(description, 12)}"
        self.http: HttpSettings = self.options.http
        self.stats = PullStats(cache_dir=str(self.root))
        self._opened: dict[tuple[str, ...], Source] = {}
        self._resolver: Resolver | None = None
        # the primary's pixel as a fraction of its footprint's side (for_primary): a web
        # service is read no finer than about twice that
        self._primary_res: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    # -- the cache -----------------------------------------------------------------------
    def _record_path(self, footprint: Footprint) -> Path:
        key = _digest({"crs": footprint.crs, "bounds": [round(b, 6) for b in footprint.bounds]})
        return self.folder / f"{key}.json"

    def cached(self, footprint: Footprint) -> dict | None:
        path = self._record_path(footprint)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        files = [self.folder / name for name in record.get("files", [])]
        return record if all(f.is_file() for f in files) else None

    def local_spec(self, footprint: Footprint, job: JobControl | None = None) -> SourceSpec:
        """The cached files covering `footprint` as a local source (NoCoverage when the
        remote has nothing there: the caller skips that sample)."""
        self.stats.footprints += 1
        record = self.cached(footprint)
        if record is None:
            started = time.monotonic()
            record = self._pull(footprint, job)
            self.stats.seconds = round(self.stats.seconds + time.monotonic() - started, 2)
            self.stats.pulled += 1
        else:
            self.stats.from_cache += 1
        if record.get("no_coverage"):
            self.stats.no_coverage += 1
            raise NoCoverage(record["no_coverage"])  # the message names the URL
        return SourceSpec(self.spec.name, tuple(str(self.folder / f) for f in record["files"]),
                          tuple(record["bands"]))

    def _write_record(self, footprint: Footprint, record: dict) -> dict:
        record = {"footprint": footprint.to_dict(), **record}
        atomic_write_bytes(self._record_path(footprint), json.dumps(record, indent=1).encode())
        return record

    # -- pulling -------------------------------------------------------------------------
    def _remote_spec(self, footprint: Footprint, job: JobControl | None
                     ) -> tuple[SourceSpec, dict]:
        """The GDAL-readable spec of what covers `footprint`, and what to record of it (its
        kind says: remote/kinds.py)."""
        if self._resolver is None:
            self._resolver = kind_for(self.options, self.spec.paths[0]).resolver(
                self.spec.name, self.spec.paths, self.spec.bands, self.options, self.folder)
        found = self._resolver.covering(footprint.geometry_in("EPSG:4326"),
                                        job.check if job else None)
        return SourceSpec(self.spec.name, found.paths, found.bands), found.record

    def _open(self, spec: SourceSpec) -> Source:
        if spec.paths not in self._opened:
            for path in spec.paths:  # a remote VRT naming local files is refused unread
                if path.startswith("/vsicurl/") and is_http(display_url(path)):
                    check_remote_raster(display_url(path), self.http)
            with gdal_http(self.http):
                try:
                    self._opened[spec.paths] = open_source(spec)
                except BadInput as error:
                    raise self._diagnose(error.path or spec.paths[0], error) from None
        return self._opened[spec.paths]

    def _diagnose(self, path: str, error: BaseException) -> BaseException:
        """The remote error behind a failed GDAL open or read (remote.diagnose)."""
        return diagnose(display_url(path), error, self.http)

    def _pull(self, footprint: Footprint, job: JobControl | None) -> dict:
        make_source_folder(self.root, self.folder)
        try:
            spec, about = self._remote_spec(footprint, job)
        except NoCoverage as error:
            return self._write_record(footprint, {"no_coverage": str(error),
                                                  "url": self.spec.paths[0]})
        source = self._open(spec)
        key = self._record_path(footprint).stem
        files, written = [], 0
        with gdal_http(self.http):
            for k, band_file in enumerate(source.files):
                name = f"{key}-{k}.tif"
                try:
                    size = self._pull_file(source, band_file, footprint, self.folder / name, job)
                except (RasterioError, CPLE_BaseError) as error:
                    raise self._diagnose(band_file.path, error) from None
                if size is None:
                    continue
                files.append(name)
                written += size
        if not files:
            return self._write_record(footprint, {
                "no_coverage": f"the remote source {self.spec.name!r} does not cover the "
                               f"place {footprint.bounds} ({footprint.crs})",
                "url": self.spec.paths[0]})
        self.stats.bytes += written
        return self._write_record(footprint, {"files": files,
                                              "bands": _cached_band_order(source, files, key),
                                              "bytes": written, **about})

    def _pull_file(self, source: Source, band_file, footprint: Footprint, target: Path,
                   job: JobControl | None) -> int | None:
        """Write the window of one remote file covering `footprint`; None when it misses."""
        ds = band_file.dataset
        # only a web service (no native grid worth keeping) is read coarser than it is
        finest = self._primary_res if band_file.path.endswith(".xml") or is_service(
            band_file.path) else None
        window, factor = _window_for(ds, footprint, finest)
        if window is None:
            return None
        out_h, out_w = window.height // factor, window.width // factor
        data = np.zeros((len(band_file.indexes), out_h, out_w), dtype=ds.dtypes[0])
        step = BLOCK_ROWS * factor
        for row in range(0, out_h * factor, step):
            if job is not None:
                job.check()
            rows = min(step, out_h * factor - row)
            data[:, row // factor: (row + rows) // factor] = ds.read(
                band_file.indexes, window=Window(window.col_off, window.row_off + row,
                                                 out_w * factor, rows),
                out_shape=(len(band_file.indexes), rows // factor, out_w))
        transform = ds.window_transform(window) * rasterio.Affine.scale(factor)
        profile = {"driver": "GTiff", "height": out_h, "width": out_w,
                   "count": len(band_file.indexes), "dtype": ds.dtypes[0],
                   "crs": ds.crs, "transform": transform, "nodata": ds.nodata,
                   "compress": "deflate"}
        if out_h >= 256 and out_w >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        with atomic_output(target) as tmp:
            with rasterio.open(tmp, "w", **profile) as out:
                out.write(data)
                for i, position in enumerate(band_file.positions, start=1):
                    out.set_band_description(i, source.band_names[position])
        return target.stat().st_size

    def for_primary(self, primary: Source) -> RemotePuller:
        """Use the primary's pixel size to read web services no finer than needed."""
        self._primary_res = min(primary.res) / math.sqrt(
            max(primary.footprint.polygon().area, 1e-12))
        return self

    def close(self) -> None:
        for source in self._opened.values():
            source.close()
        self._opened.clear()


def _cached_band_order(source: Source, files: list[str], key: str) -> list[int]:
    """1-based indexes, in the cached files' concatenated bands, of the source's bands in
    their order (files split the bands by remote file; the spec's order may interleave)."""
    offsets, offset, order = {}, 0, [0] * source.count
    for k, band_file in enumerate(source.files):
        if f"{key}-{k}.tif" in files:
            offsets[k] = offset
            offset += len(band_file.indexes)
    for k, band_file in enumerate(source.files):
        for i, position in enumerate(band_file.positions):
            order[position] = offsets[k] + i + 1 if k in offsets else 0
    return [o for o in order if o]


def _window_for(ds, footprint: Footprint, primary_res: float | None
                ) -> tuple[Window | None, int]:
    """The pixel window of `ds` covering `footprint` (+ MARGIN_PX), clipped to the raster, and
    the decimation factor (1 = native pixels; >1 for a service much finer than the primary)."""
    try:
        box = footprint.to(crs_string(ds.crs))
    except BadInput:
        return None, 1
    inverse = ~ds.transform
    cols, rows = zip(*(inverse * (x, y) for x in box.bounds[0::2] for y in box.bounds[1::2]),
                     strict=True)
    c0 = max(math.floor(min(cols)) - MARGIN_PX, 0)
    r0 = max(math.floor(min(rows)) - MARGIN_PX, 0)
    c1 = min(math.ceil(max(cols)) + MARGIN_PX, ds.width)
    r1 = min(math.ceil(max(rows)) + MARGIN_PX, ds.height)
    if c1 <= c0 or r1 <= r0:
        return None, 1
    factor = 1
    if primary_res:  # remote pixels per primary pixel, along the footprint's side
        side_px = math.sqrt(max((max(cols) - min(cols)) * (max(rows) - min(rows)), 1.0))
        factor = max(1, int(side_px * primary_res / 2))  # keep 2x the primary's detail
    width = (c1 - c0) // factor * factor
    height = (r1 - r0) // factor * factor
    if width < factor or height < factor:
        factor, width, height = 1, c1 - c0, r1 - r0
    return Window(c0, r0, width, height), factor


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "source"


def ensure_cache(root: str | Path) -> Path:
    """The cache folder, made with its marker when missing; the marker says whether the
    folder was made here (`clear` removes only a folder it made)."""
    root = Path(root)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / MARKER).is_file():
        _write_marker(root, {"what": "MrHash pull cache: pixels of remote sources, per "
                             "footprint", "version": MARKER_VERSION, "created": created,
                             "folders": []})
    return root


def make_source_folder(root: Path, folder: Path) -> None:
    """A source's folder in the cache, made (and named in the marker first: a kill in
    between leaves a name without a folder, never a folder of the cache's unnamed) when
    missing. Two runs sharing a cache may lose one's name: that folder is then kept by
    `clear`, the safe side. A folder that already exists is not claimed."""
    if folder.is_dir():
        return
    ensure_cache(root)
    marker = _marker(root)
    if marker is not None and isinstance(marker.get("folders"), list):  # version 1: none
        if folder.name not in marker["folders"]:
            _write_marker(root, {**marker, "folders": [*marker["folders"], folder.name]})
    folder.mkdir(exist_ok=True)


def remote_specs(specs: Iterable[SourceSpec], output: str) -> list[SourceSpec]:
    """The specs with every remote one given a cache folder (default: beside the model)."""
    return [s if s.remote is None else SourceSpec(
        s.name, s.paths, s.bands, s.remote.with_cache(default_cache_dir(output)))
        for s in specs]


def prefetch(primary: Iterable[SourceSpec], auxiliary: Iterable[SourceSpec],
             job: JobControl | None = None) -> PullStats | None:
    """Pull every remote auxiliary source over every primary footprint before training, with
    progress (stage "pull") and cancel between reads; None when no source is remote."""
    pullers = [RemotePuller(s) for s in auxiliary if s.remote is not None]
    if not pullers:
        return None
    primaries = list(primary)
    total, done = len(primaries) * len(pullers), 0
    try:
        for puller in pullers:
            ensure_cache(puller.root)
        for spec in primaries:
            try:
                source = open_source(SourceSpec("primary", spec.paths, spec.bands))
            except BadInput:  # an unreadable primary: training skips it and says why
                done += len(pullers)
                continue
            with source:
                for puller in pullers:
                    if job is not None:
                        job.check()
                    try:
                        puller.for_primary(source).local_spec(source.footprint, job)
                    except NoCoverage:
                        pass  # recorded and counted; the sample is skipped in training
                    done += 1
                    if job is not None:
                        pulled = sum(p.stats.bytes for p in pullers)
                        job.report(done, total, f"pulling {puller.name}: {done}/{total} "
                                   f"footprints ({pulled / 1e6:.1f} MB)", stage="pull",
                                   pulled_bytes=pulled)
    finally:
        for puller in pullers:
            puller.close()
    return stats_of(pullers)


def stats_of(pullers: Iterable[RemotePuller]) -> PullStats | None:
    """The pullers' stats together, with the cache's size now (None: no puller)."""
    pullers = list(pullers)
    if not pullers:
        return None
    stats = PullStats(cache_dir=str(pullers[0].root))
    for puller in pullers:
        stats.add(puller.stats)
    stats.cache_files, stats.cache_bytes = cache_size(stats.cache_dir)
    return stats
