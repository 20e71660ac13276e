"""Sources that are not local files: a raster by URL (a COG over HTTP, `/vsicurl/…`,
`s3://…`), a GDAL web-service description (the WMS driver's XML for XYZ/TMS/WMS, a `WMTS:` or
`WCS:` connection string: what a QGIS web layer holds) and a STAC catalogue (stac.py); the
HTTP they need, with timeouts and bounded retries; and the errors they raise.

Every remote read goes through GDAL with `GDAL_HTTP_TIMEOUT`, `GDAL_HTTP_MAX_RETRY` and
`GDAL_HTTP_RETRY_DELAY` set (a dead host never hangs a run) and JSON through `http_json`
(urllib timeouts, retries with back-off on connection errors, 5xx and 429 only: a 404 or a
401 does not get better by asking again). Pixels are pulled once into the local cache
(pull_cache.py) and read from there like any local file.

Remote stays remote: a link read in a remote (http(s)) document is followed only to http(s)
(`follow_link`); a `file://` or `vrt://` link, a GDAL `/vsi…` path or a drive path would
have the engine open the local disk, or anything GDAL can, on a server's word."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from mrhash_contract import protocol

from mrhash.errors import BadInput, MrHashError

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".png", ".jpg")
USER_AGENT = "mrhash-engine"


class RemoteError(MrHashError):
    """A remote source that cannot be read (naming its URL and the problem)."""

    code = protocol.REMOTE_ERROR

    def __init__(self, message: str, *, url: str):
        self.url = url
        super().__init__(message, path=url)


class RemoteUnreachable(RemoteError):
    """No answer: unknown host, connection refused, timeout."""

    code = protocol.REMOTE_UNREACHABLE


class RemoteNotFound(RemoteError):
    """HTTP 404 (or 410): the URL names nothing on that server."""

    code = protocol.REMOTE_NOT_FOUND


class RemoteAuthRequired(RemoteError):
    """HTTP 401/403: the server wants credentials (or refuses these)."""

    code = protocol.REMOTE_AUTH


class AssetMissing(RemoteError):
    """A STAC item lacks an asset (band) asked for."""

    code = protocol.ASSET_MISSING


class NoCoverage(BadInput):
    """No STAC item covers a place: that sample is skipped (counted), the run goes on."""

    code = protocol.NO_COVERAGE


@dataclass(frozen=True)
class HttpSettings:
    """Bounds on every request: nothing waits longer than `timeout_s`, nothing is asked more
    than `retries` + 1 times (back-off `retry_delay_s` x 2^attempt)."""

    timeout_s: float = 20.0
    retries: int = 2
    retry_delay_s: float = 0.5

    def gdal_options(self) -> dict[str, str]:
        return {
            "GDAL_HTTP_TIMEOUT": str(max(1, round(self.timeout_s))),
            "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(self.timeout_s))),
            "GDAL_HTTP_MAX_RETRY": str(self.retries),
            "GDAL_HTTP_RETRY_DELAY": str(self.retry_delay_s),
            # no directory listing of the server on open: one request less, and a server
            # without listings is not mistaken for a missing file
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_USERAGENT": USER_AGENT,
        }


@dataclass(frozen=True)
class RemoteOptions:
    """What makes a SourceSpec remote. `kind`: "raster" (a GDAL-readable URL or web-service
    description, its bands selected like a local file's) or "stac" (items found per footprint,
    the spec's bands are asset names)."""

    kind: str                          # "raster" | "stac"
    collection: str | None = None      # STAC: a collection of an API root
    date: str | None = None            # STAC: "FROM/TO" (ISO dates; ".." = open)
    max_cloud: float | None = None     # STAC: eo:cloud_cover limit (percent)
    cache_dir: str | None = None       # default: <model>.pull-cache/
    http: HttpSettings = field(default_factory=HttpSettings)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "collection": self.collection, "date": self.date,
             "max_cloud": self.max_cloud, "cache_dir": self.cache_dir}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> RemoteOptions:
        kind = str(d.get("kind", "raster"))
        if kind not in ("raster", "stac"):
            raise BadInput(f"remote source kind must be raster or stac, got {kind!r}")
        cloud = d.get("max_cloud")
        return cls(kind, d.get("collection") or None, d.get("date") or None,
                   float(cloud) if cloud is not None else None, d.get("cache_dir") or None)

    def with_cache(self, cache_dir: str) -> RemoteOptions:
        return self if self.cache_dir else replace(self, cache_dir=str(cache_dir))


def is_service(text: str) -> bool:
    """A GDAL web-service description: WMS driver XML (inline or a .xml file), WMTS:, WCS:."""
    stripped = text.lstrip()
    return (stripped.startswith("<GDAL_WMS") or stripped.startswith(("WMTS:", "WCS:", "WMS:"))
            or (stripped.lower().endswith(".xml") and "<" not in stripped))


# GDAL's virtual file systems that reach the network
NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
               "/vsiwebhdfs")


def is_remote(text: str) -> bool:
    """Whether a source text names something not on the local disk."""
    return "://" in text or text.startswith(NETWORK_VSI) or is_service(text)


def stac_url(text: str) -> str:
    """The URL of a STAC source text (`stac+https://…` says STAC where the guess would not)."""
    return text[len("stac+"):] if text.startswith("stac+") else text


def gdal_path(url: str) -> str:
    """What GDAL opens for a raster URL: http(s) through /vsicurl/, s3:// through /vsis3/,
    gs:// through /vsigs/; a /vsi path or a service description as given."""
    if url.startswith(("http://", "https://")):
        return f"/vsicurl/{url}"
    for scheme, handler in (("s3://", "/vsis3/"), ("gs://", "/vsigs/")):
        if url.startswith(scheme):
            return handler + url[len(scheme):]
    return url


def display_url(path: str) -> str:
    """The URL a /vsicurl/ path or a WMS driver XML file reads (for messages)."""
    if path.startswith("/vsicurl/"):
        return path[len("/vsicurl/"):]
    if path.endswith(".xml"):
        try:
            with open(path, encoding="utf-8") as handle:
                found = re.search(r"<ServerUrl>(.*?)</ServerUrl>", handle.read(), re.S)
        except OSError:
            found = None
        if found:
            return found.group(1).strip().replace("&amp;", "&")
    return path


def with_timeout(xml: str, http: HttpSettings) -> str:
    """A WMS driver XML with a <Timeout> (the driver's own default is 300 s)."""
    if "<Timeout>" in xml or "</GDAL_WMS>" not in xml:
        return xml
    return xml.replace("</GDAL_WMS>", f"  <Timeout>{max(1, round(http.timeout_s))}</Timeout>\n"
                                      "</GDAL_WMS>")


@contextmanager
def gdal_http(http: HttpSettings) -> Iterator[None]:
    """GDAL's HTTP bounded for the block (rasterio.Env is per thread: a worker's job thread
    sets its own)."""
    # GDAL (rasterio) only where a raster is opened: the CLI starts without it
    import rasterio

    with rasterio.Env(**http.gdal_options()):
        yield


_HTTP_CODE = re.compile(r"(?:HTTP (?:response code|status code|error code)[^0-9]{0,3}|"
                        r"HTTP error code ?: ?|status code: ?)(\d{3})", re.I)


def classify_gdal_error(url: str, error: BaseException) -> MrHashError:
    """GDAL's message about a remote dataset as one of the remote errors (rasterio puts
    GDAL's own words, e.g. the HTTP status, in the exception's cause)."""
    chain = [error, getattr(error, "__cause__", None), getattr(error, "__context__", None)]
    text = " ".join(dict.fromkeys(str(e) for e in chain if e is not None))
    match = _HTTP_CODE.search(text)
    code = int(match.group(1)) if match else None
    return http_status_error(url, code, text) if code else _unreachable_or_bad(url, text)


def _unreachable_or_bad(url: str, text: str) -> MrHashError:
    lowered = text.lower()
    if any(word in lowered for word in ("resolve", "connect", "timed out", "timeout",
                                        "couldn't", "could not", "refused", "reset",
                                        "empty reply", "recv failure", "no route")):
        return RemoteUnreachable(f"cannot reach the server ({_short(text)})", url=url)
    if "does not exist" in lowered or "no such file" in lowered:
        return RemoteNotFound(f"not found ({_short(text)})", url=url)
    return RemoteError(f"not a readable remote raster ({_short(text)})", url=url)


HTTP_SCHEMES = ("http", "https")
# besides http(s), what an asset of a remote STAC item may be: object stores, which gdal_path
# reads through GDAL's network file systems (/vsis3/, /vsigs/), never the local disk
ASSET_SCHEMES = (*HTTP_SCHEMES, "s3", "gs")


def is_http(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme.lower() in HTTP_SCHEMES


def follow_link(base: str, href: str, what: str,
                schemes: tuple[str, ...] = HTTP_SCHEMES) -> str:
    """The absolute URL of the link `href` read in the document at `base`. From a remote
    document (http(s)), only a link to `schemes` is followed, else RemoteError naming the link
    (`what`: "item link", "next page", ...): a `file://`/`vrt://` URL, a `/vsi…` path (GDAL's,
    not a URL path) or a drive path must not make the engine read local files. A path such as
    `/data/x.json` is relative to the server (RFC 3986) and stays remote. A local document's
    links may be local: it is the user's."""
    target = urllib.parse.urljoin(base, href)
    if is_http(base) and (urllib.parse.urlparse(target).scheme.lower() not in schemes
                          or href.lstrip().startswith("/vsi")):
        raise RemoteError(f"the {what} {_short(href, 120)!r} is not a web address "
                          f"({'/'.join(schemes)}): a remote catalogue may only link to remote "
                          "documents and files, so it is not followed", url=base)
    return target


def diagnose(url: str, error: BaseException, http: HttpSettings) -> MrHashError:
    """The remote error behind a failed GDAL open or read of `url`: GDAL's message, or, when
    it does not say, what the server answers one bounded request. That request is a GET of
    the first byte (Range: bytes=0-0), not a HEAD: servers that only allow GET (S3 presigned
    URLs, some object stores and CDNs) answer HEAD with 405, which is no fault of the file."""
    found = classify_gdal_error(url, error)
    if type(found) is not RemoteError or not is_http(url) or "${" in url:
        return found  # said already, not HTTP, or a tile URL template: nothing to ask
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0",
                                                   "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=http.timeout_s) as response:
            response.read(1)  # a server ignoring Range sends it all: one byte is enough
        return found  # it answers: the file itself is what GDAL cannot read
    except urllib.error.HTTPError as http_error:
        if http_error.code == 416:  # an empty file: it is there
            return found
        return http_status_error(url, http_error.code, str(error))
    except OSError as os_error:
        return classify_gdal_error(url, f"could not connect: {os_error}")


def http_status_error(url: str, status: int, detail: str = "") -> RemoteError:
    why = f" ({_short(detail)})" if detail else ""
    if status in (401, 403):
        return RemoteAuthRequired(f"HTTP {status}: authentication required or refused; give "
                                  "credentials (GDAL_HTTP_AUTH / GDAL_HTTP_USERPWD, "
                                  f"GDAL_HTTP_HEADERS, AWS_* for s3) or a signed URL{why}",
                                  url=url)
    if status in (404, 410):
        return RemoteNotFound(f"HTTP {status}: not found on the server{why}", url=url)
    return RemoteError(f"HTTP {status}: the server failed{why}", url=url)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def http_json(url: str, http: HttpSettings, *, body: dict | None = None,
              check=None) -> dict:
    """GET (or POST `body` as JSON) `url` and parse JSON, within `http`'s bounds; `check()`
    (JobControl.check) is called before every attempt, so cancel works between retries."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json, application/geo+json", "User-Agent": USER_AGENT}
    if data is not None:
        headers["Content-Type"] = "application/json"
    last: MrHashError | None = None
    for attempt in range(http.retries + 1):
        if check is not None:
            check()
        if attempt:
            time.sleep(http.retry_delay_s * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=data, headers=headers,
                                         method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=http.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            last = http_status_error(url, error.code, error.reason or "")
            if error.code not in (429, 500, 502, 503, 504):
                raise last from None
            continue
        except OSError as error:  # URLError, timeouts, resets are all OSErrors
            reason = getattr(error, "reason", error)
            last = RemoteUnreachable(f"cannot reach the server ({_short(str(reason))}; "
                                     f"{attempt + 1} attempt(s), {http.timeout_s:g} s timeout)",
                                     url=url)
            continue
        try:
            return json.loads(raw)
        except ValueError as error:
            raise RemoteError(f"the answer is not JSON ({error})", url=url) from None
    assert last is not None
    raise last
