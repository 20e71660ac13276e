"""Training and evaluation samples: for every sample, one raw patch per source (primary first).

`Samples` is what training reads; `RasterSamples` reads them through the raster layer: a
primary raster no bigger than about one patch is one sample (a folder of small scenes such as
EuroSAT), a bigger one is cut into a tile grid; auxiliary sources are either named band
groups of the primary file itself or other rasters read over the same footprint
(co-registered by `coreg.MultiSourceReader`). An auxiliary source given by several rasters
(a folder of SAR tiles, another satellite's scenes) is a collection: each primary raster is
paired, by coordinates, with the member that overlaps it most. A remote auxiliary source (a
URL, a web service, a STAC catalogue: remote.py) is pulled over each primary raster's
footprint into the local cache (pull_cache.py) and read from there; a primary raster it does
not cover (no STAC item there) is skipped and listed like an unreadable one.
No label is ever read here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from mrhash_contract.protocol import SourceEntry, TrainRequest

from mrhash.errors import BadInput
from mrhash.model.config import check_remote_defaults
from mrhash.raster.coreg import MultiSourceReader
from mrhash.raster.pull_cache import (
    PullStats,
    RemotePuller,
    default_cache_dir,
    ensure_cache,
    remote_specs,
    stats_of,
)
from mrhash.raster.sources import (
    Source,
    SourceSpec,
    open_source,
    raster_files,
    regular_file,
    source_groups,
)
from mrhash.raster.tiling import Tile, tile_grid
from mrhash.remote.access import RemoteOptions, is_remote
from mrhash.remote.kinds import kind_of


class Samples(Protocol):
    names: tuple[str, ...]          # source names, primary first
    band_counts: tuple[int, ...]    # bands per source
    refs: list[str]                 # one id per sample (path, or path#col,row,w,h)

    def __len__(self) -> int: ...

    def read_batch(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per source: (raw float32 [B, C, H, W], bool valid mask [B, H, W])."""
        ...


def specs_from_paths(paths: Sequence[str | Path], bands: Sequence[int | str] | None = None,
                     name: str = "primary") -> list[SourceSpec]:
    """Sources named on a command line: a file is one source; a folder (searched recursively)
    gives one source per raster, except that per-band files of one product (s2_B02.jp2,
    s2_B03.jp2, ...) form a single source, and lone files beside a product (a preview image)
    are ignored."""
    specs = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            groups = source_groups(raster_files(p))
            if not groups:
                raise BadInput("no raster files in this folder", path=str(p))
        else:
            groups = [(regular_file(p, "raster"),)]
        specs += [SourceSpec(name, group, tuple(bands) if bands else None) for group in groups]
    return specs


def aux_source_specs(name: str, paths: Sequence[str | Path],
                     bands: Sequence[int | str] | None = None) -> list[SourceSpec]:
    """One auxiliary source: raster file(s) whose bands are concatenated in order (one spec),
    or a folder: one product (its per-band files, a lone preview ignored) or a collection of
    rasters and products, one spec each, paired with the primaries by coordinates."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return specs_from_paths(paths, bands, name)
    for path in paths:
        if not Path(path).is_file():
            raise BadInput(f"auxiliary source {name!r}: no such file", path=str(path))
    return [SourceSpec(name, tuple(str(p) for p in paths), tuple(bands) if bands else None)]


@dataclass
class _Collection:
    """The members of a many-raster auxiliary source, with their EPSG:4326 outlines."""

    name: str
    members: list[tuple[SourceSpec, object]]  # (spec, shapely polygon in EPSG:4326)

    def best_for(self, primary: Source) -> SourceSpec:
        area = primary.footprint.to("EPSG:4326").polygon()
        overlap, spec = max(((outline.intersection(area).area, spec)
                             for spec, outline in self.members), key=lambda item: item[0])
        if overlap <= 0:
            raise BadInput(f"no raster of auxiliary source {self.name!r} overlaps it",
                           path=primary.path)
        return spec


@dataclass(frozen=True)
class _Sample:
    primary: int          # index into the primary specs
    tile: Tile | None     # None: the whole (small) raster is the sample
    ref: str


class RasterSamples:
    """Samples read through the raster layer (see the module docstring). Unreadable primary
    rasters are skipped and listed in `skipped` ({path, error}); one bad file never stops a
    folder. Sources of the current primary file stay open while its samples are read (samples
    are ordered by file), auxiliary rasters stay open until `close()`."""

    def __init__(self, primary: Sequence[SourceSpec], auxiliary: Sequence[SourceSpec] = (),
                 aux_bands: Sequence[tuple[str, tuple[int | str, ...]]] = (),
                 patch_size: int = 64, stride: int | None = None, min_valid: float = 0.5,
                 max_samples: int | None = None, seed: int = 0):
        self.primary_specs = list(primary)
        self.aux_bands = [(name, tuple(bands)) for name, bands in aux_bands]
        self.patch_size = patch_size
        groups: dict[str, list[SourceSpec]] = {}
        for spec in auxiliary:  # specs sharing a name form one source (a collection)
            groups.setdefault(spec.name, []).append(spec)
        self.names = ("primary", *(n for n, _ in self.aux_bands), *groups)
        if len(set(self.names)) != len(self.names):
            raise BadInput(f"source names must differ, got {', '.join(self.names)}")
        self.skipped: list[dict[str, str]] = []
        # one raster: opened once for the whole run; several: paired per primary raster;
        # remote: pulled per primary raster (from the cache when it was pulled before)
        self._auxiliary: list[Source | _Collection | RemotePuller] = []
        self._open: tuple[int, MultiSourceReader, list[Source]] | None = None
        self._samples: list[_Sample] = []
        counts: tuple[int, ...] | None = None
        try:
            for name, specs in groups.items():
                if specs[0].remote is not None:
                    puller = RemotePuller(specs[0])
                    ensure_cache(puller.root)
                    self._auxiliary.append(puller)
                    continue
                self._auxiliary.append(open_source(specs[0]) if len(specs) == 1
                                       else self._collection(name, specs))
            for i, spec in enumerate(self.primary_specs):
                try:
                    reader = self._reader(i)
                    file_counts = tuple(s.count for s in reader.sources)
                    if counts is not None and file_counts != counts:
                        raise BadInput(f"bands per source {file_counts} differ from the first "
                                       f"raster's {counts}", path=spec.paths[0])
                    self._samples += self._plan(i, reader.primary, stride, min_valid)
                    counts = file_counts
                except BadInput as error:
                    self._close_current()
                    self.skipped.append({"path": spec.paths[0], "error": error.message})
        except BaseException:
            self.close()
            raise
        if max_samples is not None and len(self._samples) > max_samples:
            # a large archive trains on a random sample of its tiles (in their order, so
            # reads stay sequential): the time a user gave, not the archive's size
            keep = sorted(random.Random(seed).sample(range(len(self._samples)), max_samples))
            self._samples = [self._samples[i] for i in keep]
        self.band_counts = counts or ()
        self.refs = [s.ref for s in self._samples]

    @classmethod
    def from_config(cls, config) -> RasterSamples:
        return cls(config.primary, remote_specs(config.auxiliary, config.output),
                   config.aux_bands, config.patch_size, config.stride,
                   max_samples=config.max_samples, seed=config.seed)

    @property
    def pull(self) -> PullStats | None:
        """What the remote sources pulled or found cached (None: no remote source)."""
        return stats_of(a for a in self._auxiliary if isinstance(a, RemotePuller))

    def _plan(self, i: int, source, stride: int | None, min_valid: float) -> list[_Sample]:
        path = source.path
        # a raster up to 1.5 patches wide is one scene, read whole at patch_size
        if max(source.width, source.height) <= 1.5 * self.patch_size:
            return [_Sample(i, None, path)]
        return [_Sample(i, t, f"{path}#{','.join(map(str, t.window))}")
                for t in tile_grid(source, self.patch_size, stride, min_valid)]

    def _collection(self, name: str, specs: list[SourceSpec]) -> _Collection:
        members = []
        for spec in specs:
            try:
                with open_source(spec) as source:  # lazy: no pixel is read here
                    members.append((spec, source.footprint.to("EPSG:4326").polygon()))
            except BadInput as error:
                self.skipped.append({"path": spec.paths[0], "error": error.message})
        if not members:
            raise BadInput(f"auxiliary source {name!r}: none of its {len(specs)} rasters "
                           "can be read", path=specs[0].paths[0])
        return _Collection(name, members)

    def _reader(self, i: int) -> MultiSourceReader:
        if self._open is not None and self._open[0] == i:
            return self._open[1]
        self._close_current()
        spec = self.primary_specs[i]
        owned = [open_source(SourceSpec("primary", spec.paths, spec.bands))]
        try:
            owned += [open_source(SourceSpec(name, spec.paths, bands))
                      for name, bands in self.aux_bands]
            auxiliaries = [*owned[1:]]
            for aux in self._auxiliary:
                if isinstance(aux, _Collection):
                    owned.append(open_source(aux.best_for(owned[0])))
                    auxiliaries.append(owned[-1])
                elif isinstance(aux, RemotePuller):
                    local = aux.for_primary(owned[0]).local_spec(owned[0].footprint)
                    owned.append(open_source(local))
                    auxiliaries.append(owned[-1])
                else:
                    auxiliaries.append(aux)
            reader = MultiSourceReader(owned[0], auxiliaries)
        except BaseException:
            for source in owned:
                source.close()
            raise
        self._open = (i, reader, owned)
        return reader

    def _close_current(self) -> None:
        if self._open is not None:
            for source in self._open[2]:
                source.close()
            self._open = None

    def close(self) -> None:
        self._close_current()
        for aux in self._auxiliary:
            if isinstance(aux, (Source, RemotePuller)):
                aux.close()

    def __enter__(self) -> RasterSamples:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._samples)

    def read_batch(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        per_source: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.names]
        for index in indices:
            sample = self._samples[int(index)]
            reader = self._reader(sample.primary)
            if sample.tile is None:
                patches = reader.read(reader.primary.footprint, self.patch_size)
            else:
                patches = reader.read_tile(sample.tile)
            for s, patch in enumerate(patches):
                per_source[s].append(patch)
        return [(np.stack([a for a, _ in items]), np.stack([m for _, m in items]))
                for items in per_source]


def remote_entry(name: str, text: str) -> SourceEntry | None:
    """The source entry of `--aux-source NAME=TEXT` when TEXT is remote (None when local):
    `URL[@BANDS]` (a COG or any GDAL raster by http(s)/s3 URL or /vsicurl/ path), a GDAL
    web-service description (WMS driver XML inline or as a .xml file, `WMTS:…`, `WCS:…`) or a
    STAC URL with its assets, `URL@B05,B8A,B11` (`stac+URL` says STAC when the guess from the
    URL would not)."""
    if not is_remote(text):
        return None
    head, sep, tail = text.rpartition("@")
    # a band list has no "/" or "<" (the "@" of user@host or of XML is not one)
    if sep and tail and not any(ch in tail for ch in "/<>:"):
        text, bands = head, tuple(b.strip() for b in tail.split(",") if b.strip())
    else:
        bands = ()
    kind = kind_of(text)
    parsed = list(kind.band_list(bands)) or None
    if not kind.searches:
        return SourceEntry(name, url=text, bands=parsed)
    if not parsed:
        raise BadInput(f"--aux-source {name}: a STAC source needs its assets, e.g. "
                       f"{name}={text}@B05,B8A,B11", path=text)
    return SourceEntry(name, stac=text, assets=[str(asset) for asset in parsed])


def remote_spec(entry: SourceEntry, defaults: RemoteOptions | None = None) -> SourceSpec:
    """The spec of a remote source entry; `defaults` carry the date range and cloud limit of
    a STAC entry that sets none, the cache folder and the HTTP settings."""
    text = str(entry.stac or entry.url)
    kind = kind_of("stac+" + text if entry.stac else text)  # the entry says which it is
    base = defaults or RemoteOptions(kind.name)
    cloud = entry.max_cloud if entry.max_cloud is not None else base.max_cloud
    options = RemoteOptions(
        kind.name, entry.collection or base.collection,
        (entry.date or base.date) if kind.searches else None,
        float(cloud) if cloud is not None and kind.searches else None, base.cache_dir,
        base.http)
    bands = entry.assets if kind.searches else entry.bands
    return SourceSpec(entry.name or "auxiliary", (text,), tuple(bands) if bands else None,
                      options)


def entry_specs(entry: SourceEntry, name: str, remote: RemoteOptions | None = None
                ) -> list[SourceSpec]:
    """The source specs of a train request's entry, named `name` unless it names itself:
    a folder's rasters, its paths' (one raster of them all when `stacked`), or its remote
    source with the `remote` defaults (None: the primary, which must be local)."""
    label = entry.name or name
    if entry.remote:
        if remote is None:
            raise BadInput("the primary must be local rasters (paths or a folder); remote "
                           "sources are auxiliary only", path=entry.url or entry.stac)
        return [remote_spec(replace(entry, name=label), remote)]
    if entry.stacked:
        return aux_source_specs(label, entry.paths or [], entry.bands)
    return specs_from_paths(entry.paths or [str(entry.folder)], entry.bands, label)


def auxiliary_specs(request: TrainRequest) -> list[SourceSpec]:
    """The specs of a train request's auxiliary entries (aux1, aux2, ... where unnamed);
    remote ones default to the request's aux_date, aux_max_cloud and pull_cache (else the
    cache beside the model)."""
    check_remote_defaults(request.aux_date, request.aux_max_cloud,
                          any(entry.stac for entry in request.auxiliary))
    remote = RemoteOptions("stac", date=request.aux_date, max_cloud=request.aux_max_cloud,
                           cache_dir=request.pull_cache or default_cache_dir(request.output))
    return [spec for i, entry in enumerate(request.auxiliary, 1)
            for spec in entry_specs(entry, f"aux{i}", remote)]


def encode_samples(model, samples, batch: int = 256) -> np.ndarray:
    """Packed codes of every sample's primary patch, with its valid mask."""
    out = []
    for start in range(0, len(samples), batch):
        arrays, masks = samples.read_batch(range(start, min(start + batch, len(samples))))[0]
        out.append(model.encode(arrays, masks))
    return np.concatenate(out)
