"""STAC: the items of a catalogue that cover a place, and the asset URLs of the bands asked for.

A STAC URL may be a static catalogue (Catalog JSON whose `child`/`item` links are followed), a
static or API collection (its `items` link is queried with bbox/datetime, else its `item`
links are read), an item collection (a FeatureCollection of items), an API root (its `search`
link) or a `/search` endpoint. Static JSON is read once per run and filtered here; APIs are
asked with the place's bbox. Filters: a date range on `datetime` (or start/end_datetime) and
`eo:cloud_cover` at most `max_cloud` (items without it are kept: SAR has no clouds). Of the
items left, the one covering most of the place wins, then the least cloudy, then the latest.

A crawl (one `items` call) is bounded (CrawlLimits): MAX_PAGES `next` pages, MAX_LINKS item
and child links, MAX_DEPTH catalogue levels, MAX_CRAWL_S seconds; going past one is a
RemoteError naming the bound (never results silently cut short). A document or page already
read in the crawl is not read again, so a catalogue linking back to itself ends at once.
From a remote catalogue only http(s) links are followed, and only http(s) or object-store
assets used (remote.follow_link): a remote document never makes the engine read local
files."""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone

import shapely
from mrhash_contract.bands import normalize_band_name
from mrhash_contract.protocol import StacItem, StacItemsResult
from shapely.geometry import shape

from mrhash.errors import BadInput
from mrhash.remote.access import (
    ASSET_SCHEMES,
    AssetMissing,
    HttpSettings,
    NoCoverage,
    RemoteError,
    follow_link,
    http_json,
    stac_url,
)

MAX_PAGES = 50
MAX_LINKS = 10_000
MAX_DEPTH = 4
MAX_CRAWL_S = 300.0
PAGE_LIMIT = 100


@dataclass(frozen=True)
class CrawlLimits:
    """Bounds of one crawl of a catalogue (see the module docstring)."""

    pages: int = MAX_PAGES       # `next` pages of one search or item collection
    links: int = MAX_LINKS       # item and child links followed
    depth: int = MAX_DEPTH       # catalogue levels below the one given
    seconds: float = MAX_CRAWL_S  # wall time, checked before every request


@dataclass(frozen=True)
class Item:
    """One STAC item: its outline (EPSG:4326), time, cloud cover and assets {key: asset}."""

    id: str
    url: str                       # where it was read (relative asset hrefs resolve here)
    geometry: shapely.Geometry
    datetime: str | None
    cloud_cover: float | None
    assets: dict = field(hash=False, compare=False)

    @classmethod
    def from_json(cls, d: dict, base_url: str) -> Item:
        if d.get("type") != "Feature" or "assets" not in d:
            raise RemoteError("not a STAC item (no Feature with assets)", url=base_url)
        props = d.get("properties") or {}
        try:
            geometry = shape(d["geometry"]) if d.get("geometry") else shapely.box(*d["bbox"][:4])
        except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as error:
            raise RemoteError(f"STAC item {d.get('id')!r} has no usable geometry ({error})",
                              url=base_url) from None
        self_link = next((link["href"] for link in d.get("links", [])
                          if link.get("rel") == "self" and link.get("href")), None)
        # relative asset hrefs resolve against it: a remote item's must stay remote too
        url = follow_link(base_url, str(self_link), "self link") if self_link else base_url
        cloud = props.get("eo:cloud_cover")
        return cls(str(d.get("id")), url, geometry,
                   props.get("datetime") or props.get("start_datetime"),
                   float(cloud) if cloud is not None else None, dict(d["assets"]))

    def asset_href(self, name: str) -> str:
        """The absolute URL of an asset: by key (case and zero padding aside: b5 = B05), else
        by an `eo:bands` name or common name."""
        wanted = normalize_band_name(name)
        for key, asset in self.assets.items():
            if normalize_band_name(key) == wanted:
                return self._absolute(asset)
        for asset in self.assets.values():
            for band in asset.get("eo:bands") or []:
                if wanted in (normalize_band_name(band.get("name", "")),
                              normalize_band_name(band.get("common_name", ""))):
                    return self._absolute(asset)
        raise AssetMissing(f"STAC item {self.id!r} has no asset {name!r} (it has: "
                           f"{', '.join(sorted(self.assets))})", url=self.url)

    def _absolute(self, asset: dict) -> str:
        href = asset.get("href") if isinstance(asset, dict) else None
        if not href:
            raise RemoteError(f"STAC item {self.id!r} has an asset without href", url=self.url)
        return follow_link(self.url, str(href), "asset href", ASSET_SCHEMES)

    def summary(self) -> StacItem:
        """The item as the worker's `stac_items` answers it (GeoJSON outline)."""
        return StacItem(self.id, self.url, self.datetime, self.cloud_cover,
                        list(self.geometry.bounds), shapely.geometry.mapping(self.geometry),
                        sorted(self.assets))


@dataclass(frozen=True)
class DateRange:
    start: datetime | None
    end: datetime | None
    text: str

    @classmethod
    def parse(cls, text: str | None) -> DateRange | None:
        """"2020-01-01/2020-12-31", "2020-06-01/..", "../2021-01-01" or one date (that day)."""
        if not text:
            return None
        parts = text.split("/")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        if len(parts) != 2:
            raise BadInput(f"date range {text!r}: expected FROM/TO, e.g. 2020-01-01/2020-12-31")
        start, end = (_parse_time(p, text, end=i == 1) for i, p in enumerate(parts))
        if start and end and end < start:
            raise BadInput(f"date range {text!r} ends before it starts")
        return cls(start, end, text)

    def contains(self, when: str | None) -> bool:
        if when is None:
            return False
        moment = _parse_time(when, when)
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment <= self.end)

    def api_text(self) -> str:
        return "/".join(t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else ".."
                        for t in (self.start, self.end))


def _parse_time(text: str, whole: str, end: bool = False) -> datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"date {text!r} in {whole!r}: expected an ISO date like 2020-06-01"
                       ) from None
    if len(text) == 10 and end:  # a whole day: up to its last second
        moment = moment.replace(hour=23, minute=59, second=59)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class StacSearch:
    """Items of one STAC URL, filtered by date and cloud cover (see the module docstring)."""

    url: str
    collection: str | None = None
    date: DateRange | None = None
    max_cloud: float | None = None
    http: HttpSettings = field(default_factory=HttpSettings)
    check: object = None             # JobControl.check, called between requests
    limits: CrawlLimits = field(default_factory=CrawlLimits)
    _static: list[Item] | None = None
    _root: dict | None = None
    requests: int = 0
    _started: float = 0.0             # of the crawl under way (monotonic clock)
    _links: int = 0                   # item and child links it followed
    _visited: set = field(default_factory=set)  # (url, body) it read

    def _get(self, url: str, body: dict | None = None) -> dict:
        elapsed = time.monotonic() - self._started
        if elapsed > self.limits.seconds:
            raise RemoteError(f"reading the STAC catalogue took more than "
                              f"{self.limits.seconds:g} s ({self.requests} requests): use a "
                              "STAC API search or a smaller collection", url=url)
        self.requests += 1
        return http_json(url, self.http, body=body, check=self.check)

    def _first_visit(self, url: str, body: dict | None = None) -> bool:
        """Whether `url` (with `body`) is read for the first time in this crawl: a page or
        document seen already brings nothing new (a catalogue linking back to itself)."""
        key = (urllib.parse.urldefrag(url).url, json.dumps(body, sort_keys=True, default=str))
        if key in self._visited:
            return False
        self._visited.add(key)
        return True

    def _follow(self, base: str, href: str, what: str) -> str:
        """A link to follow (remote stays remote; counted against the links bound)."""
        target = follow_link(base, href, what)
        self._links += 1
        if self._links > self.limits.links:
            raise RemoteError(f"more than {self.limits.links} links to follow: use a STAC API "
                              "search or a smaller collection", url=base)
        return target

    def items(self, bbox: tuple[float, float, float, float]) -> list[Item]:
        """Items intersecting an EPSG:4326 bbox that pass the filters (one bounded crawl)."""
        self._started, self._links, self._visited = time.monotonic(), 0, set()
        if urllib.parse.urlparse(self.url).path.rstrip("/").endswith("/search"):
            found = self._search(self.url, bbox)  # an endpoint: nothing to read first
        else:
            if self._root is None:
                self._root = self._get(self.url)
            self._first_visit(self.url)
            found = self._query(self._root, bbox)
        area = shapely.box(*bbox)
        return [item for item in found if item.geometry.intersects(area) and self._keep(item)]

    def best(self, outline: shapely.Geometry) -> Item:
        """The item covering most of `outline` (EPSG:4326); NoCoverage when none does."""
        scored = []
        for item in self.items(outline.bounds):
            overlap = item.geometry.intersection(outline).area
            if overlap > 0:
                scored.append((overlap, -(item.cloud_cover if item.cloud_cover is not None
                                          else 100.0), item.datetime or "", item))
        if not scored:
            place = tuple(round(b, 5) for b in outline.bounds)
            raise NoCoverage(f"no STAC item covers the place {place} (EPSG:4326)"
                             f"{self._filters_text()}", path=self.url)
        return max(scored, key=lambda s: s[:3])[3]

    def _filters_text(self) -> str:
        parts = []
        if self.date:
            parts.append(f"dates {self.date.text}")
        if self.max_cloud is not None:
            parts.append(f"cloud cover <= {self.max_cloud:g}%")
        return f" with {', '.join(parts)}" if parts else ""

    def _keep(self, item: Item) -> bool:
        if self.date and not self.date.contains(item.datetime):
            return False
        return self.max_cloud is None or item.cloud_cover is None or (
            item.cloud_cover <= self.max_cloud)

    def _query(self, doc: dict, bbox) -> list[Item]:
        kind = doc.get("type")
        links = {link.get("rel"): link for link in doc.get("links", []) if link.get("href")}
        if kind == "FeatureCollection":
            return self._static_items(lambda: self._pages(doc, self.url))
        if kind == "Feature":
            return [Item.from_json(doc, self.url)]
        if kind == "Catalog" and "search" in links:  # an API root
            return self._search(follow_link(self.url, links["search"]["href"], "search link"),
                                bbox)
        if kind == "Collection" and "items" in links:  # an API's (or static) items endpoint
            return self._items_endpoint(follow_link(self.url, links["items"]["href"],
                                                    "items link"), bbox)
        if kind in ("Catalog", "Collection"):
            return self._static_items(lambda: self._walk(doc, self.url, 0))
        raise RemoteError(f"not a STAC catalogue, collection, item collection or API (type "
                          f"{kind!r})", url=self.url)

    def _static_items(self, read) -> list[Item]:
        if self._static is None:
            self._static = list(read())
        return self._static

    def _walk(self, doc: dict, url: str, depth: int):
        """Items of a static catalogue/collection: its item links, then its children's."""
        for link in doc.get("links", []):
            rel, href = link.get("rel"), link.get("href")
            if not href or rel not in ("item", "child"):
                continue
            target = self._follow(url, str(href), f"{rel} link")
            if not self._first_visit(target):
                continue
            if rel == "item":
                yield Item.from_json(self._get(target), target)
            else:
                if depth >= self.limits.depth:
                    raise RemoteError(f"the catalogue is nested more than {self.limits.depth} "
                                      f"levels deep (child link {href!r}): give a collection "
                                      "or a sub-catalogue", url=url)
                child = self._get(target)
                if self.collection and child.get("type") == "Collection" and (
                        child.get("id") != self.collection):
                    continue
                yield from self._walk(child, target, depth + 1)

    def _pages(self, page: dict, url: str, body: dict | None = None):
        """Features of a FeatureCollection and of its `next` pages (bounded; a `next` page
        already read ends the paging: it holds nothing new)."""
        self._first_visit(url, body)
        for number in range(1, self.limits.pages + 1):
            for feature in page.get("features", []):
                yield Item.from_json(feature, url)
            nxt = next((link for link in page.get("links", [])
                        if link.get("rel") == "next" and link.get("href")), None)
            if nxt is None:
                return
            if number == self.limits.pages:
                raise RemoteError(f"more than {self.limits.pages} pages of results: give a "
                                  "smaller place, dates or a collection", url=url)
            url = follow_link(url, str(nxt["href"]), "next page link")
            body = nxt.get("body") if nxt.get("method") == "POST" else None
            if not self._first_visit(url, body):
                return
            page = self._get(url, body)

    def _search(self, url: str, bbox) -> list[Item]:
        body: dict = {"bbox": list(bbox), "limit": PAGE_LIMIT}
        if self.collection:
            body["collections"] = [self.collection]
        if self.date:
            body["datetime"] = self.date.api_text()
        return list(self._pages(self._get(url, body), url, body))

    def _items_endpoint(self, url: str, bbox) -> list[Item]:
        query = {"bbox": ",".join(f"{b:.8f}" for b in bbox), "limit": str(PAGE_LIMIT)}
        if self.date:
            query["datetime"] = self.date.api_text()
        full = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"
        return list(self._pages(self._get(full), full))


def find_items(params: dict, check=None) -> dict:
    """The worker's `stac_items`: {url, collection?, bbox (EPSG:4326), date?, max_cloud?,
    limit? (500)} -> the StacItemsResult as the worker sends it: {url, count, items:
    [Item.summary()], requests}, the best first (most
    of the bbox covered, then least cloudy, then latest)."""
    url = params.get("url")
    if not url:
        raise BadInput("stac_items needs a url")
    try:
        bbox = tuple(float(b) for b in params.get("bbox") or ())
    except (TypeError, ValueError):
        bbox = ()
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise BadInput(f"stac_items needs bbox [minx, miny, maxx, maxy] in EPSG:4326, got "
                       f"{params.get('bbox')!r}")
    cloud = params.get("max_cloud")
    search = StacSearch(stac_url(str(url)),
                        params.get("collection") or None, DateRange.parse(params.get("date")),
                        float(cloud) if cloud is not None else None, check=check)
    area = shapely.box(*bbox)
    items = sorted(search.items(bbox), reverse=True, key=lambda i: (
        i.geometry.intersection(area).area, -(i.cloud_cover if i.cloud_cover is not None
                                               else 100.0), i.datetime or ""))
    limit = int(params.get("limit") or 500)
    return StacItemsResult(str(url), len(items), [i.summary() for i in items[:limit]],
                           search.requests).to_result()
