"""The kinds of remote source, one class each, and their registry (`KINDS`): how a source's
text is recognised, how its band list is read, which search options apply, and what GDAL
opens for a place. The pull cache (raster/pull_cache.py) and the front ends only ask a kind;
a new kind is one class (here or in a module of its own) and its entry in `KINDS`.

A kind's `name` is what a source description and a model package record (`RemoteOptions.
kind`): "raster" for a source GDAL reads as it is (a raster by URL, a web service), "stac" for
one searched for each place. Those two names are stable (packages made before name them)."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mrhash.errors import BadInput
from mrhash.fileio import atomic_write_bytes
from mrhash.remote.access import (
    RASTER_SUFFIXES,
    RemoteOptions,
    gdal_path,
    is_service,
    stac_url,
    with_timeout,
)


@dataclass(frozen=True)
class Covering:
    """What covers one place: the paths GDAL opens, the band selection to read them with,
    and what the pull cache records of it (urls, the STAC item, ...)."""

    paths: tuple[str, ...]
    bands: tuple[int | str, ...] | None
    record: dict[str, Any]


class Resolver(ABC):
    """One remote source's `covering` of each place (it may keep state: a STAC search)."""

    @abstractmethod
    def covering(self, area_4326: Any, check: Callable[[], None] | None) -> Covering:
        """What covers `area_4326` (a shapely geometry in EPSG:4326); NoCoverage when
        nothing does. `check`: called between requests (a job's cancel)."""


class RemoteKind(ABC):
    """A kind of remote source."""

    name: ClassVar[str]
    # searched for each place (a catalogue): date, cloud cover and collection apply, and the
    # bands are asset names, which must be given
    searches: ClassVar[bool] = False

    @abstractmethod
    def claims(self, text: str) -> bool:
        """Whether a source's text (a URL, a service description) is of this kind."""

    def band_list(self, names: Sequence[str]) -> tuple[int | str, ...]:
        """The bands of `text@B1,B2` as this kind reads them (numbers: band positions)."""
        return tuple(int(name) if name.isdigit() else name for name in names)

    @abstractmethod
    def resolver(self, name: str, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
                 options: RemoteOptions, folder: Path) -> Resolver:
        """The resolver of the source `name` (`folder`: its folder in the pull cache)."""


class _Fixed(Resolver):
    """The same paths for every place (GDAL reads the window)."""

    def __init__(self, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
                 urls: tuple[str, ...]):
        self.found = Covering(paths, bands, {"urls": list(urls)})

    def covering(self, area_4326: Any, check: Callable[[], None] | None) -> Covering:
        return self.found


class WebService(RemoteKind):
    """A GDAL web-service description: the WMS driver's XML (XYZ/TMS/WMS, inline or a .xml
    file), or a `WMTS:` / `WCS:` connection string (what a QGIS web layer holds)."""

    name = "raster"

    def claims(self, text: str) -> bool:
        return is_service(text)

    def resolver(self, name: str, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
                 options: RemoteOptions, folder: Path) -> Resolver:
        return _Fixed(tuple(self._file(p, options, folder) for p in paths), bands, paths)

    @staticmethod
    def _file(text: str, options: RemoteOptions, folder: Path) -> str:
        """An inline WMS driver XML written into the cache (GDAL opens it as a file), with a
        timeout; WMTS:/WCS: strings and .xml files as given."""
        if not text.lstrip().startswith("<GDAL_WMS"):
            return text
        digest = hashlib.sha256(json.dumps(text).encode()).hexdigest()[:8]  # (as the cache)
        path = folder / f"service-{digest}.xml"
        if not path.is_file():
            atomic_write_bytes(path, with_timeout(text, options.http).encode())
        return str(path)


class GdalRaster(RemoteKind):
    """A raster by URL: a COG or any GDAL-readable file over http(s), s3:// or gs://, or a
    network `/vsi…` path."""

    name = "raster"

    def claims(self, text: str) -> bool:
        if text.startswith(("/vsi", "s3://")):
            return True
        return urllib.parse.urlparse(text).path.lower().endswith(RASTER_SUFFIXES)

    def resolver(self, name: str, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
                 options: RemoteOptions, folder: Path) -> Resolver:
        return _Fixed(tuple(gdal_path(p) for p in paths), bands, paths)


class Stac(RemoteKind):
    """A STAC catalogue, collection or API (`stac+URL` says so where the URL would not): for
    each place the best item (fewest clouds, then latest) and the named assets' files."""

    name = "stac"
    searches = True

    def claims(self, text: str) -> bool:
        return text.startswith("stac+") or "://" in text

    def band_list(self, names: Sequence[str]) -> tuple[int | str, ...]:
        return tuple(names)  # asset names, even "1"

    def resolver(self, name: str, paths: tuple[str, ...], bands: tuple[int | str, ...] | None,
                 options: RemoteOptions, folder: Path) -> Resolver:
        if not bands:
            raise BadInput(f"STAC source {name!r}: name the assets to read, e.g. "
                           "URL@B05,B8A,B11", path=paths[0])
        return _StacResolver(paths[0], bands, options)


class _StacResolver(Resolver):
    def __init__(self, text: str, assets: tuple[int | str, ...], options: RemoteOptions):
        from mrhash.remote.stac import DateRange, StacSearch  # (the STAC client: only here)

        self.assets = assets
        self.search = StacSearch(stac_url(text), options.collection,
                                 DateRange.parse(options.date), options.max_cloud,
                                 options.http)

    def covering(self, area_4326: Any, check: Callable[[], None] | None) -> Covering:
        self.search.check = check
        item = self.search.best(area_4326)
        hrefs = [item.asset_href(str(asset)) for asset in self.assets]
        return Covering(tuple(gdal_path(h) for h in hrefs), None,
                        {"item": item.id, "item_url": item.url, "datetime": item.datetime,
                         "cloud_cover": item.cloud_cover, "urls": hrefs,
                         "names": [str(a) for a in self.assets]})


# the order they are asked in: a service description or a raster URL before a catalogue,
# which takes any other web address
KINDS: tuple[RemoteKind, ...] = (WebService(), GdalRaster(), Stac())


def kind_of(text: str) -> RemoteKind:
    """The kind of a remote source's text (`guess_kind`'s answer as an object)."""
    if text.startswith("stac+"):
        return next(k for k in KINDS if k.searches)
    for kind in KINDS:
        if kind.claims(text):
            return kind
    return KINDS[-1]


def kind_for(options: RemoteOptions, text: str) -> RemoteKind:
    """The kind a recorded source is: among those of its recorded name, the one that claims
    its text (a "raster" source is a web service or a raster URL), else the first."""
    named = [kind for kind in KINDS if kind.name == options.kind]
    if not named:
        raise BadInput(f"remote source kind must be one of "
                       f"{sorted({k.name for k in KINDS})}, got {options.kind!r}")
    return next((kind for kind in named if kind.claims(text)), named[0])


def guess_kind(text: str) -> str:
    """"stac" or "raster" for a `--aux-source` URL: a raster file name, a /vsi path or a web
    service is a raster; `stac+https://…`, JSON, `/collections/…`, `/search` and any other
    web address are STAC."""
    return kind_of(text).name
