"""Raster sources: a `SourceSpec` (file(s) + band selection) opened into a `Source` that keeps
its datasets open and reads any `Footprint` (in any CRS) onto a fixed-shape grid.

Footprints and reads across CRSs live here (CRS parsing: crs.py; resampling: resample.py). A
source is one raster file or the single-band files of one product (Landsat B1..B11, Sentinel-2
per-band files at 10/20/60 m). When its files differ in resolution the finest one defines the
source grid (`transform`, `width`, `height`, `res`); every read resamples each file onto the
requested grid anyway, so coarser bands are simply bilinearly upsampled there. Sampling is
bilinear at output pixel centres (a plain copy when those sit on the file's pixel centres); a
finer source read onto a coarser grid (PAN 15 m onto 30 m) is point-sampled, not area-averaged.

Reads map each output pixel centre to fractional source pixel coordinates (resample.py) and
sample there. Files that fit a memory budget are loaded once and then sampled from memory;
larger ones are read by window around each footprint.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from mrhash_contract.bands import normalize_band_name
from mrhash_contract.choices import RASTER_EXTENSIONS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from mrhash.device import cpu_threads
from mrhash.errors import BadInput
from mrhash.raster.crs import crs_string
from mrhash.raster.geometry import Footprint
from mrhash.raster.resample import mask_and, neighbours, pixel_coords, separable_inside, take
from mrhash.remote.access import RemoteOptions, is_remote

# Raster files a folder scan or a product folder considers (others, like labels JSON, are ignored).
# Default memory a Source may use to keep whole files in memory (beyond it: windowed reads).
DEFAULT_CACHE_BYTES = 1 << 30

# band token at the end of a file stem: s2_B04, l8_B4, ..._B8A, l8_BQA, S1 ..._VV / _VH
_BAND_TOKEN = re.compile(r"^(?P<prefix>.*?)[_\-.]?(?P<band>B\d{1,2}A?|BQA|VV|VH|HH|HV)$", re.I)


def band_token(path: str | Path) -> str | None:
    """The band a single-band product file holds, from its name (s2_B04.jp2 -> "B04")."""
    match = _BAND_TOKEN.match(Path(path).stem)
    return match.group("band").upper() if match else None


def _band_sort_key(path: str) -> tuple:
    token = band_token(path) or ""
    number = re.search(r"\d+", token)
    return (int(number.group()) if number else 99, token, path)


def group_band_files(paths: Iterable[str | Path]) -> list[tuple[str, ...]]:
    """Group raster files into products: files of one folder sharing a name prefix and
    differing only by a band token (`l8_B1.tif`, `l8_B2.tif`, ...) form one group, in band
    order; every other file is a group of its own."""
    groups: dict[tuple[str, str], list[str]] = {}
    singles: list[tuple[str, ...]] = []
    for path in sorted(str(p) for p in paths):
        match = _BAND_TOKEN.match(Path(path).stem)
        if match:
            groups.setdefault((str(Path(path).parent), match.group("prefix")), []).append(path)
        else:
            singles.append((path,))
    for members in groups.values():
        if len(members) > 1:
            singles.append(tuple(sorted(members, key=_band_sort_key)))
        else:
            singles.append((members[0],))
    return sorted(singles)


def source_groups(paths: Iterable[str | Path]) -> list[tuple[str, ...]]:
    """The one rule for which raster files form the sources of a folder, used by training,
    indexing, the catalogue and `spec_from_folder`: the per-band files of one product
    (s2_B02.jp2, s2_B03.jp2, ...) are one source, any other raster is a source of its own,
    except a lone file in a folder that holds a product (a preview image), which is left out."""
    groups = group_band_files(paths)
    product_dirs = {Path(g[0]).parent for g in groups if len(g) > 1}
    return [g for g in groups if len(g) > 1 or Path(g[0]).parent not in product_dirs]


def printable_path(path: str | os.PathLike) -> str:
    """A path fit for a message even when its name is not valid UTF-8 (bytes shown escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class FolderListing:
    """What a folder walk saw. Removing an indexed raster needs positive evidence that it is
    gone: its folder is in `listed` (read successfully) and the file is not in `files`."""

    root: str
    files: list[str] = field(default_factory=list)        # raster files, absolute, sorted
    listed: set[str] = field(default_factory=set)          # folders read, not empty
    problems: list[dict] = field(default_factory=list)     # [{path, error}]: skipped, said why

    def was_listed(self, path: str) -> bool:
        return os.path.dirname(os.path.abspath(path)) in self.listed


def list_rasters(folder: str | Path, recursive: bool = True) -> FolderListing:
    """Raster-looking files (by extension) under `folder`, as absolute paths. Symlinked
    folders are followed (each real folder once); a folder that cannot be read and a name
    that is not valid UTF-8 are reported in `problems`. Neither an unreadable folder nor an
    empty one (an unmounted share's mount point) is evidence that its files were deleted."""
    root = os.path.abspath(folder)
    listing = FolderListing(root)
    if not os.path.isdir(root):
        raise BadInput("is a file, not a folder" if os.path.exists(root)
                       else "does not exist", path=str(folder))
    seen: set[str] = set()

    def walk(directory: str) -> None:
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop, or a folder linked twice
            return
        seen.add(real)
        try:
            with os.scandir(directory) as entries:
                found = sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            if directory == root:
                raise BadInput(f"cannot read the folder ({error.strerror or error})",
                               path=printable_path(root)) from None
            listing.problems.append({"path": printable_path(directory), "error": "folder "
                                     f"cannot be read ({error.strerror or error}); its rasters "
                                     "are left as they were"})
            return
        if found:
            listing.listed.add(directory)
        for entry in found:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                listing.problems.append({"path": printable_path(entry.path), "error":
                                         "file name is not valid UTF-8: rename it"})
                continue
            try:
                if entry.is_dir():
                    if recursive:
                        walk(entry.path)
                elif entry.is_file() and Path(entry.name).suffix.lower() in RASTER_EXTENSIONS:
                    listing.files.append(entry.path)
            except OSError as error:
                listing.problems.append({"path": entry.path,
                                         "error": f"cannot be read ({error.strerror})"})

    walk(root)
    listing.files.sort()
    return listing


def raster_files(folder: str | Path, recursive: bool = True) -> list[str]:
    """Raster-looking files (by extension) under `folder`, absolute and sorted."""
    return list_rasters(folder, recursive).files


def regular_file(path: str | os.PathLike, what: str = "file") -> str:
    """`path` if it is an existing regular file; BadInput for a missing path, a folder, or a
    special file (a FIFO or a device would block a reader forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise BadInput("file not found (no such file or folder)" if error.errno == errno.ENOENT
                       else f"cannot read the {what} ({error.strerror})",
                       path=printable_path(path)) from None
    if stat.S_ISDIR(mode):
        raise BadInput(f"is a folder, not a {what}", path=printable_path(path))
    if not stat.S_ISREG(mode):
        raise BadInput(f"is not a regular file (a pipe, socket or device): not a {what}",
                       path=printable_path(path))
    return str(path)


def spec_from_folder(folder: str | Path, bands: Sequence[int | str] | None = None,
                     name: str = "primary") -> SourceSpec:
    """The source held by a product folder (its per-band files, or its single raster file)."""
    if not Path(folder).is_dir():
        raise BadInput("not a folder", path=str(folder))
    groups = source_groups(raster_files(folder, recursive=False))
    if len(groups) != 1:
        found = ", ".join(Path(g[0]).name for g in groups) or "no raster files"
        raise BadInput(f"expected one product (one raster or per-band files), found {found}",
                       path=str(folder))
    return SourceSpec(name=name, paths=groups[0], bands=tuple(bands) if bands else None)


@dataclass(frozen=True)
class SourceSpec:
    name: str                                   # "primary", "nir", "pan", "sar", ...
    paths: tuple[str, ...]                      # one multi-band file, or one product's band files
    bands: tuple[int | str, ...] | None = None  # 1-based indices or band names; None = all
    # set for a source that is not a local file (remote.py): `paths` then holds its URL or
    # web-service description, and for STAC `bands` are asset names
    remote: RemoteOptions | None = None

    def __post_init__(self) -> None:
        # accept lists (e.g. from JSON) while keeping the spec hashable
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))

    def to_dict(self) -> dict:
        d = {"name": self.name, "paths": list(self.paths),
             "bands": list(self.bands) if self.bands is not None else None}
        if self.remote is not None:
            d["remote"] = self.remote.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SourceSpec:
        paths = d.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not paths:
            raise BadInput(f"source {d.get('name', '?')!r} has no paths")
        remote = RemoteOptions.from_dict(d["remote"]) if d.get("remote") else None
        return cls(name=str(d.get("name", "primary")), paths=tuple(paths),
                   bands=tuple(d["bands"]) if d.get("bands") else None, remote=remote)


@dataclass
class _BandFile:
    """One opened file of a source and the bands of it the source uses."""

    path: str
    dataset: rasterio.DatasetReader
    crs: str
    transform: Affine
    indexes: list[int] = field(default_factory=list)  # 1-based band indexes in this file
    positions: list[int] = field(default_factory=list)  # where they go in the source's bands
    data: np.ndarray | None = None  # whole selected bands, when within the memory budget

    @property
    def nodata(self) -> float | None:
        return self.dataset.nodata

    @property
    def is_float(self) -> bool:
        return np.dtype(self.dataset.dtypes[0]).kind == "f"

    @property
    def checks_values(self) -> bool:
        """Whether pixel values can be invalid (a nodata value, or NaN in float data)."""
        return self.nodata is not None or self.is_float


def check_raster(path: str) -> rasterio.DatasetReader:
    """Open a raster and verify it is georeferenced and its data is readable (a read of the
    last block catches truncated files, which open fine; not done for remote data, where it
    costs a request, or a tile of a web service's far corner of the world)."""
    remote = is_remote(str(path))
    if not remote and not str(path).startswith("/vsi"):  # local files
        regular_file(path, "raster")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("file name is not valid UTF-8: rename it",
                       path=printable_path(path)) from None
    try:
        with warnings.catch_warnings():  # reported below as BadInput instead
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as error:
        raise BadInput(f"not a readable raster ({error})", path=path) from None
    try:
        if dataset.crs is None:
            raise BadInput("raster has no CRS (not georeferenced)", path=path)
        if dataset.transform == Affine.identity():
            raise BadInput("raster has no geotransform (not georeferenced)", path=path)
        if dataset.transform.b != 0 or dataset.transform.d != 0:
            raise BadInput("rotated geotransforms are not supported; warp the raster first",
                           path=path)
        if remote:
            return dataset
        block_h, block_w = dataset.block_shapes[0]
        row, col = (dataset.height - 1) // block_h, (dataset.width - 1) // block_w
        dataset.read(1, window=Window(col * block_w, row * block_h,
                                      min(block_w, dataset.width - col * block_w),
                                      min(block_h, dataset.height - row * block_h)))
    except BadInput:
        dataset.close()
        raise
    except RasterioError as error:
        dataset.close()
        raise BadInput(f"truncated or corrupt raster data ({error})", path=path) from None
    return dataset


def _band_names(path: str, dataset: rasterio.DatasetReader) -> list[str]:
    token = band_token(path)
    names = []
    for index, description in enumerate(dataset.descriptions, start=1):
        if description:
            names.append(description)
        elif dataset.count == 1 and token:
            names.append(token)
        else:
            names.append(f"band{index}")
    return names


class Source:
    """An opened source: datasets stay open until `close()`; reads are thread-safe."""

    def __init__(self, spec: SourceSpec, cache_bytes: int = DEFAULT_CACHE_BYTES):
        if not spec.paths:
            raise BadInput(f"source {spec.name!r} has no files")
        self.spec = spec
        self._lock = threading.Lock()
        self._cache_left = cache_bytes
        datasets: dict[str, rasterio.DatasetReader] = {}
        try:
            available: list[tuple[str, int, str]] = []  # (path, 1-based index, name)
            for path in spec.paths:
                dataset = check_raster(path)
                datasets[path] = dataset
                names = _band_names(path, dataset)
                available += [(path, i + 1, n) for i, n in enumerate(names)]
            chosen = self._select(spec, available)
        except BaseException:
            for dataset in datasets.values():
                dataset.close()
            raise
        # keep only the files that hold selected bands
        self._files: list[_BandFile] = []
        by_path: dict[str, _BandFile] = {}
        for position, (path, index, _) in enumerate(chosen):
            if path not in by_path:
                ds = datasets[path]
                by_path[path] = _BandFile(path, ds, crs_string(ds.crs), ds.transform)
                self._files.append(by_path[path])
            by_path[path].indexes.append(index)
            by_path[path].positions.append(position)
        for path, dataset in datasets.items():
            if path not in by_path:
                dataset.close()
        self.band_names: list[str] = [name for _, _, name in chosen]
        # (file, 1-based index in it) of each selected band
        self.band_files: list[tuple[str, int]] = [(path, index) for path, index, _ in chosen]
        self.count = len(chosen)
        # finest file defines the source grid
        finest = min(self._files, key=lambda f: abs(f.transform.a * f.transform.e))
        grid = finest.dataset
        self.crs: str = finest.crs
        self.transform: Affine = grid.transform
        self.width: int = grid.width
        self.height: int = grid.height
        self.res: tuple[float, float] = (abs(grid.transform.a), abs(grid.transform.e))
        first = self._files[0].dataset
        self.dtype: str = first.dtypes[self._files[0].indexes[0] - 1]
        self.nodata: float | None = first.nodata
        self.footprint = Footprint(self.crs, tuple(grid.bounds))
        # (x, y) resolution of each selected band (they differ in e.g. a Sentinel-2 product)
        res_of = {f.path: (abs(f.transform.a), abs(f.transform.e)) for f in self._files}
        self.band_resolutions: list[tuple[float, float]] = [res_of[p] for p, _, _ in chosen]
        self.path = spec.paths[0]

    @staticmethod
    def _select(spec: SourceSpec, available: list[tuple[str, int, str]]):
        if spec.bands is None:
            return available
        chosen = []
        for band in spec.bands:
            if isinstance(band, (int, np.integer)) or (isinstance(band, str) and band.isdigit()):
                number = int(band)
                if not 1 <= number <= len(available):
                    raise BadInput(f"band {number} does not exist (source {spec.name!r} has "
                                   f"{len(available)} bands)", path=spec.paths[0])
                chosen.append(available[number - 1])
                continue
            wanted = normalize_band_name(band)
            matches = [a for a in available if normalize_band_name(a[2]) == wanted]
            if not matches:
                names = ", ".join(a[2] for a in available)
                raise BadInput(f"band {band!r} does not exist (available: {names})",
                               path=spec.paths[0])
            chosen.append(matches[0])
        return chosen

    @property
    def files(self) -> list[_BandFile]:
        """The opened files with the bands selected in each (pull_cache.py copies windows of
        them); read-only use."""
        return self._files

    @property
    def block_side(self) -> int:
        """The largest side of its files' blocks (a striped file's strips are as wide as
        the file): a window read decodes the blocks it touches."""
        return max(max(band_file.dataset.block_shapes[0]) for band_file in self._files)

    def keep_in_memory(self, cache_bytes: int) -> None:
        """From now on, load whole selected bands into memory up to `cache_bytes` (read
        once, then served from memory) instead of reading each window from the files."""
        self._cache_left = cache_bytes

    def __repr__(self) -> str:
        return (f"Source({self.spec.name!r}, {self.width}x{self.height}, {self.count} bands, "
                f"{self.crs}, res={self.res})")

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for band_file in self._files:
            band_file.dataset.close()
            band_file.data = None

    # -- reading -------------------------------------------------------------------------

    def read(self, footprint: Footprint, shape: tuple[int, int], *,
             allow_outside: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw values of the selected bands on a `shape` grid spanning `footprint`:
        (float32 [bands, h, w], bool [h, w] valid mask). Bilinear resampling, nodata-aware.
        A footprint that misses the source entirely raises BadInput unless `allow_outside`
        (then the mask is all False)."""
        height, width = int(shape[0]), int(shape[1])
        if height < 1 or width < 1:
            raise BadInput(f"read shape must be positive, got {shape}")
        out = np.zeros((self.count, height, width), dtype=np.float32)
        valid = np.ones((height, width), dtype=bool)
        touched = False
        coords_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        with self._lock:
            for band_file in self._files:
                key = (band_file.crs, band_file.transform)
                if key not in coords_cache:
                    coords_cache[key] = pixel_coords(footprint, (height, width),
                                                      band_file.crs, band_file.transform)
                cols, rows = coords_cache[key]
                touched |= self._sample(band_file, cols, rows, out, valid)
        if not touched:
            if not allow_outside:
                raise BadInput(f"footprint {footprint.bounds} ({footprint.crs}) is outside "
                               f"the raster", path=self.path)
            valid[:] = False
        return out, valid

    def read_window(self, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Read a (col_off, row_off, width, height) window of the source grid."""
        return self.read(self._window_footprint(window), (window[3], window[2]))

    def beyond_float32(self) -> bool:
        """Whether a float64 source holds finite values float32 cannot represent (they would
        read as infinite, hence invalid); looked for in a decimated read of each file."""
        limit = float(np.finfo(np.float32).max)
        for band_file in self._files:
            ds = band_file.dataset
            if np.dtype(ds.dtypes[band_file.indexes[0] - 1]) != np.float64:
                continue
            shape = (len(band_file.indexes), min(ds.height, 64), min(ds.width, 64))
            values = ds.read(band_file.indexes, out_shape=shape)
            finite = values[np.isfinite(values)]
            if finite.size and float(np.abs(finite).max()) > limit:
                return True
        return False

    def valid_mask(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """bool [h, w] valid-data mask of a window of the source grid, without resampling any
        value: a pixel is valid when the nearest pixel of every file lies inside that file
        and, in files that can mark pixels invalid (nodata, float NaN), holds valid values.
        The tile grid needs only this, so files without nodata are never read for it."""
        col, row, width, height = window
        footprint = self._window_footprint(window)
        valid = np.ones((height, width), dtype=bool)
        with self._lock:
            for band_file in self._files:
                cols, rows = pixel_coords(footprint, (height, width), band_file.crs,
                                           band_file.transform)
                c = np.floor(cols).astype(np.int64)  # the pixel holding each sample point
                r = np.floor(rows).astype(np.int64)
                if not band_file.checks_values:
                    ds = band_file.dataset
                    valid &= (c >= 0) & (c < ds.width) & (r >= 0) & (r < ds.height)
                    continue
                block = self._block(band_file, r, c, 0)
                if block is None:
                    valid[:] = False
                    continue
                data, row_off, col_off = block
                values, inside = take(data, r - row_off, c - col_off, (height, width))
                ok = mask_and(self._valid_values(band_file, values), inside)
                if ok is not None:
                    valid &= ok
        return valid

    def _window_footprint(self, window: tuple[int, int, int, int]) -> Footprint:
        col, row, width, height = window
        t = self.transform
        x0, y0 = t @ (col, row)
        x1, y1 = t @ (col + width, row + height)
        return Footprint(self.crs, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))

    def _load(self, band_file: _BandFile) -> np.ndarray | None:
        """Whole selected bands of a file in memory, if the budget allows (loaded once)."""
        if band_file.data is not None:
            return band_file.data
        ds = band_file.dataset
        size = len(band_file.indexes) * ds.width * ds.height * np.dtype(ds.dtypes[0]).itemsize
        if size > self._cache_left:
            return None
        try:  # decoded by several threads: the build's first batch waits for this
            with rasterio.Env(GDAL_NUM_THREADS=str(cpu_threads())):
                band_file.data = ds.read(band_file.indexes)
        except RasterioError as error:
            raise BadInput(f"cannot read raster data ({error})", path=band_file.path) from None
        self._cache_left -= size
        return band_file.data

    def _block(self, band_file: _BandFile, rows: np.ndarray, cols: np.ndarray,
               margin: int) -> tuple[np.ndarray, int, int] | None:
        """Data covering pixel rows/cols (+`margin`) and its (row, col) offset; None when they
        all fall outside the file."""
        ds = band_file.dataset
        rmin, rmax = int(rows.min()), int(rows.max()) + margin
        cmin, cmax = int(cols.min()), int(cols.max()) + margin
        if cmax < 0 or rmax < 0 or cmin >= ds.width or rmin >= ds.height:
            return None
        data = self._load(band_file)
        if data is not None:
            return data, 0, 0
        # too big for memory: read just the window the samples need
        r0, c0 = max(rmin, 0), max(cmin, 0)
        r1, c1 = min(rmax, ds.height - 1), min(cmax, ds.width - 1)
        try:
            data = ds.read(band_file.indexes, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1))
        except RasterioError as error:
            raise BadInput(f"cannot read raster data ({error})", path=band_file.path) from None
        return data, r0, c0

    def _sample(self, band_file: _BandFile, cols: np.ndarray, rows: np.ndarray,
                out: np.ndarray, valid: np.ndarray) -> bool:
        """Sample one file at fractional pixel coords (arrays broadcasting to [h, w]) into
        `out`, AND its validity into `valid`: a plain gather when the coords sit on the file's
        pixel centres, bilinear otherwise (weights renormalised over valid neighbours; a pixel
        is valid when its nearest neighbour is). Returns whether any pixel fell inside."""
        shape = valid.shape
        u, v = cols - 0.5, rows - 0.5  # pixel centres sit at integer + 0.5
        ru, rv = np.rint(u), np.rint(v)
        aligned = bool(np.abs(u - ru).max() < 1e-6 and np.abs(v - rv).max() < 1e-6)
        c0 = (ru if aligned else np.floor(u)).astype(np.int64)
        r0 = (rv if aligned else np.floor(v)).astype(np.int64)
        block = self._block(band_file, r0, c0, 0 if aligned else 1)
        if block is None:
            valid[:] = False
            return False
        data, row_off, col_off = block
        r0, c0 = r0 - row_off, c0 - col_off
        checks = band_file.checks_values
        if aligned:
            values, inside = take(data, r0, c0, shape)
            ok = mask_and(self._valid_values(band_file, values) if checks else None, inside)
            if ok is not None:
                values[:, ~ok] = 0.0
                valid &= ok
            out[band_file.positions] = values
            return inside is None or bool(inside.any())
        fu = (u - np.floor(u)).astype(np.float32)
        fv = (v - np.floor(v)).astype(np.float32)
        if not checks and separable_inside(data, r0, c0):
            # the common case (same CRS, other resolution): two 1-D passes on a slice, the
            # same bilinear values without gathering four [h, w] neighbour grids
            r, c = r0[:, 0], c0[0]
            c_lo = int(c.min())
            columns = data[:, :, c_lo:int(c.max()) + 2]
            top = np.take(columns, r, axis=1).astype(np.float32)
            rows_mixed = top + (np.take(columns, r + 1, axis=1) - top) * fv
            left = np.take(rows_mixed, c - c_lo, axis=2)
            out[band_file.positions] = left + (np.take(rows_mixed, c - c_lo + 1, axis=2)
                                               - left) * fu
            return True
        # neighbours k = 0..3 are (r0, c0), (r0, c0+1), (r0+1, c0), (r0+1, c0+1)
        weights = np.stack([np.broadcast_to(w, shape) for w in
                            ((1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu)])
        values, inside = neighbours(data, r0, c0, shape)  # [bands, 4, h, w], [4, h, w]
        ok = mask_and(self._valid_values(band_file, values) if checks else None, inside)
        if ok is None or ok.all():  # common case: plain bilinear
            out[band_file.positions] = (values * weights).sum(axis=1)
            return True
        weights = np.where(ok, weights, np.float32(0.0))
        weights_sum = weights.sum(axis=0)
        acc = (np.where(ok, values, np.float32(0.0)) * weights).sum(axis=1)
        nearest = 2 * np.broadcast_to(fv >= 0.5, shape) + np.broadcast_to(fu >= 0.5, shape)
        ok = np.take_along_axis(ok, nearest[None], axis=0)[0] & (weights_sum > 0)
        result = np.divide(acc, weights_sum, out=np.zeros_like(acc), where=weights_sum > 0)
        result[:, ~ok] = 0.0
        out[band_file.positions] = result
        valid &= ok
        return bool(inside is None or inside.any())

    @staticmethod
    def _valid_values(band_file: _BandFile, values: np.ndarray) -> np.ndarray | None:
        """Mask of pixels valid in every band (values [bands, ...] -> [...]): not nodata, and
        finite in float data (None: the file has no way to mark a pixel invalid)."""
        nodata = band_file.nodata
        ok = None
        if band_file.is_float:
            ok = np.isfinite(values).all(axis=0)
        if nodata is not None and not math.isnan(nodata):
            differs = (values != np.float32(nodata)).all(axis=0)
            ok = differs if ok is None else ok & differs
        return ok


def open_source(spec: SourceSpec, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Source:
    """Open a source's files (kept open); raises BadInput naming the file and the problem."""
    return Source(spec, cache_bytes=cache_bytes)
