"""A VRT served over the web names only files on the web (docs/RELIABILITY.md).

A GDAL VRT is an XML document whose `<SourceFilename>` (and a warped VRT's
`<SourceDataset>`) GDAL opens as it says: an absolute path, a path relative to the working
directory or a `/vsi…` path would have the engine read the local disk because a server said
so. Before GDAL opens an http(s) raster, its first bytes are read; when it is a VRT, every
source it names must be an http(s) address (`/vsicurl/` to one included) or a path relative to
the VRT itself (`relativeToVRT="1"`: it resolves on the same server), else RemoteError naming
the link. Sources that may themselves be VRTs are checked the same way, to a bounded depth and
number of documents."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from mrhash.remote.access import USER_AGENT, HttpSettings, RemoteError, _short, is_http

SNIFF_BYTES = 1024  # enough to see `<VRTDataset` after an XML prolog
MAX_VRT_BYTES = 4 * 1024 * 1024  # a VRT of 100,000 sources is about this size
SOURCE_TAGS = ("SourceFilename", "SourceDataset")
# formats that cannot name other files: a source with these suffixes is not read here
NOT_VRT_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".png", ".jpg", ".jpeg")
_VRT_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?<VRTDataset\b")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class VrtLimits:
    depth: int = 4       # a VRT of VRTs of VRTs of VRTs
    documents: int = 50  # VRT documents read in all for one raster


def check_remote_raster(url: str, http: HttpSettings, limits: VrtLimits = VrtLimits()) -> None:
    """RemoteError naming the link when the http(s) raster `url` is a VRT (or a VRT of
    VRTs) naming a source that is not on the web; nothing when it is not a VRT."""
    pending, seen = [(url, 0)], set()
    while pending:
        current, depth = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if len(seen) > limits.documents:
            raise RemoteError(f"names more than {limits.documents} VRT documents: not read",
                              url=url)
        document = _vrt_document(current, http)
        if document is None:
            continue
        for source in _sources(current, document):
            if not source.lower().split("?")[0].endswith(NOT_VRT_SUFFIXES):
                if depth + 1 > limits.depth:
                    raise RemoteError(f"VRTs nested more than {limits.depth} levels deep "
                                      f"(source {_short(source, 120)!r}): not read", url=url)
                pending.append((source, depth + 1))


def _sources(url: str, document: bytes) -> list[str]:
    """The http(s) URLs of the sources the VRT at `url` names; RemoteError on any other."""
    if b"<!DOCTYPE" in document or b"<!ENTITY" in document:  # no VRT has one; entity bombs
        raise RemoteError("the VRT declares a DOCTYPE or entities: not read", url=url)
    try:
        root = ET.fromstring(document)
    except ET.ParseError as error:
        raise RemoteError(f"the VRT is not well-formed XML ({error}): not read",
                          url=url) from None
    found = []
    for element in root.iter():
        if element.tag in SOURCE_TAGS:
            found.append(_remote_source(url, (element.text or "").strip(),
                                        element.get("relativeToVRT", "0").strip() == "1"))
    return found


def _remote_source(url: str, name: str, relative: bool) -> str:
    """The URL GDAL reads for the source `name` of the VRT at `url`, or RemoteError."""
    target = name[len("/vsicurl/"):] if name.startswith("/vsicurl/") else name
    if is_http(target):
        return target
    # relative to the VRT: GDAL joins it to the VRT's own /vsicurl/ address, so it stays on
    # the server; an absolute, /vsi…, drive or schemed name it takes as it is
    if (relative and target == name and target and not target.startswith(("/", "\\"))
            and not _DRIVE.match(target) and "://" not in target and ":" not in target):
        return urllib.parse.urljoin(url, target)
    raise RemoteError(f"the VRT source {_short(name, 120)!r} is not a web address (http/"
                      "https): a remote VRT may only name remote files, so it is not read",
                      url=url)


def _vrt_document(url: str, http: HttpSettings) -> bytes | None:
    """The VRT document at `url` (bounded in size), or None when it is not a VRT."""
    head = _get(url, http, SNIFF_BYTES)
    if not _VRT_START.match(head):
        return None
    document = _get(url, http, MAX_VRT_BYTES + 1)
    if len(document) > MAX_VRT_BYTES:
        raise RemoteError(f"the VRT is larger than {MAX_VRT_BYTES // 2**20} MiB: not read",
                          url=url)
    return document


def _get(url: str, http: HttpSettings, size: int) -> bytes:
    """The first `size` bytes at `url` (a ranged GET; a server ignoring Range is read no
    further); nothing when the server does not give them (an HTTP error, unreachable):
    GDAL's open then fails and says what is wrong (remote.diagnose)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes=0-{size - 1}",
                                                   "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=http.timeout_s) as response:
            return response.read(size)
    except (OSError, ValueError):  # urllib's HTTPError is an OSError
        return b""
