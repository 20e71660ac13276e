"""Remote stays remote, and crawls end (docs/RELIABILITY.md): a remote STAC catalogue's links,
`next` pages, self links and asset hrefs are followed only to the web (never `file://`,
`vrt://`, `/vsi…` or a drive path), in the STAC client and in the pull cache; a crawl is
bounded in pages, links, depth and wall time, with the bound in the message, and a catalogue
linking back to itself ends at once; the diagnosis of an unreadable remote raster asks the
server with a GET, so a GET-only server is not reported as "HTTP 405". A real HTTP server on
127.0.0.1 (loopback_http.py), stopped by each test; nothing else is contacted."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import loopback_http as lh
import pytest
from mrhash.model.datasets import remote_entry, remote_spec, specs_from_paths
from mrhash.raster.pull_cache import prefetch
from mrhash.remote.access import HttpSettings, RemoteError, RemoteOptions
from mrhash.remote.stac import CrawlLimits, StacSearch, find_items

FAST = HttpSettings(timeout_s=2.0, retries=0, retry_delay_s=0.1)
WORLD = (-180.0, -90.0, 180.0, 90.0)
QUICK_S = 10.0  # every case here ends in about a second; a loop or a hang fails instead


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch) -> None:
    """No proxy between the tests and their server (the machine may define one)."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def server(tmp_path):
    """A server over an empty folder the test fills (`server.root`)."""
    served = lh.LoopbackServer(tmp_path / "served")
    served.root.mkdir()
    try:
        yield served
    finally:
        served.stop()


def write(server: lh.LoopbackServer, name: str, doc: dict) -> str:
    """`doc` served as `name`; -> its URL."""
    path = server.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return f"{server.url}/{name}"


def item(item_id: str, href: str = "b05.tif", links: list | None = None) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "bbox": list(WORLD),
            "geometry": {"type": "Polygon", "coordinates": [[
                [-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]},
            "properties": {"datetime": "2021-06-01T00:00:00Z"},
            "assets": {"B05": {"href": href}}, "links": links or []}


def catalog(*links: tuple[str, str]) -> dict:
    return {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "test",
            "links": [{"rel": rel, "href": href} for rel, href in links]}


def page(features: list[dict], next_href: str | None) -> dict:
    return {"type": "FeatureCollection", "features": features,
            "links": [{"rel": "next", "href": next_href}] if next_href else []}


def crawl(url: str, limits: CrawlLimits = CrawlLimits()) -> tuple[list, StacSearch, float]:
    """Items of the whole world at `url`: (items, the search, seconds taken)."""
    search = StacSearch(url, http=FAST, limits=limits)
    started = time.monotonic()
    found = search.items(WORLD)
    return found, search, time.monotonic() - started


def refused(url: str, fragment: str, limits: CrawlLimits = CrawlLimits()) -> RemoteError:
    """The crawl of `url` fails, quickly, with `fragment` in the message."""
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        StacSearch(url, http=FAST, limits=limits).items(WORLD)
    assert time.monotonic() - started < QUICK_S
    assert fragment in caught.value.message, caught.value.message
    return caught.value


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def precious(tmp_path, eurosat_dir) -> Path:
    """A local folder a remote catalogue must never reach: a raster and a valid STAC item."""
    folder = tmp_path / "local"
    folder.mkdir()
    shutil.copy(sorted((eurosat_dir / "Forest").glob("*.tif"))[0], folder / "precious.tif")
    (folder / "item.json").write_text(json.dumps(item("local", "precious.tif")))
    return folder


# -- remote stays remote ---------------------------------------------------------------------
def test_links_of_a_remote_catalogue_to_local_files_are_refused(server, precious):
    local_item = (precious / "item.json").as_uri()
    cases = {
        "item.json": (catalog(("item", local_item)), f"item link {local_item!r}"),
        "child.json": (catalog(("child", f"vrt://{precious}/precious.tif")), "child link"),
        "vsi.json": (catalog(("item", "/vsimem/item.json")), "'/vsimem/item.json'"),
        "drive.json": (catalog(("item", "C:\\data\\item.json")), "C:\\\\data\\\\item.json"),
        "next.json": (page([], local_item), f"next page link {local_item!r}"),
        "self.json": (page([item("s", links=[{"rel": "self", "href": local_item}])], None),
                      f"self link {local_item!r}"),
    }
    before = {p.name: digest(p) for p in precious.iterdir()}
    for name, (doc, fragment) in cases.items():
        error = refused(write(server, name, doc), fragment)
        assert "is not a web address" in error.message and error.url.endswith(name)
    assert {p.name: digest(p) for p in precious.iterdir()} == before


def test_asset_hrefs_of_a_remote_item_stay_remote(server, precious):
    hrefs = {f"file://{precious}/precious.tif": False, f"vrt://{precious}/precious.tif": False,
             "/vsicurl/http://127.0.0.1:9/x.tif": False, "D:\\x.tif": False,
             "/data/b05.tif": f"{server.url}/data/b05.tif",  # a path on the same server
             "b05.tif": f"{server.url}/items/b05.tif", "s3://bucket/b05.tif": "s3://bucket/b05.tif"}
    for n, (href, expected) in enumerate(hrefs.items()):
        found, _, _ = crawl(write(server, f"items/{n}.json", item(str(n), href)))
        if expected:
            assert found[0].asset_href("B05") == expected
        else:
            with pytest.raises(RemoteError, match="asset href .* is not a web address"):
                found[0].asset_href("B05")


def test_the_pull_cache_never_copies_a_local_file_a_remote_item_names(server, precious,
                                                                      tmp_path, eurosat_dir):
    local = f"file://{precious}/precious.tif"
    url = write(server, "stac/items.json", page([item("it", local)], None))
    cache = tmp_path / "cache"
    spec = remote_spec(remote_entry("s2", f"{url}@B05"), RemoteOptions("stac", cache_dir=str(cache),
                                                            http=FAST))
    primary = specs_from_paths([str(sorted((eurosat_dir / "Forest").glob("*.tif"))[0])])
    before = digest(precious / "precious.tif")
    started = time.monotonic()
    with pytest.raises(RemoteError, match=f"asset href '{local}' is not a web address"):
        prefetch(primary, [spec])
    assert time.monotonic() - started < QUICK_S
    assert not list(cache.rglob("*.tif")) and not list(cache.rglob("*-*/*.json"))
    assert digest(precious / "precious.tif") == before


def test_a_local_catalogue_may_link_to_local_files(precious):
    (precious / "catalog.json").write_text(json.dumps(catalog(("item", "item.json"))))
    found = find_items({"url": (precious / "catalog.json").as_uri(), "bbox": list(WORLD)})
    assert found["count"] == 1 and found["items"][0]["id"] == "local"


# -- crawls end ------------------------------------------------------------------------------
def test_a_catalogue_linking_back_to_itself_ends_at_once(server):
    a = write(server, "loop/a.json", catalog(("child", "a.json"), ("child", "b.json"),
                                              ("child", "a.json#again")))
    write(server, "loop/b.json", catalog(("child", "a.json"), ("child", "b.json"),
                                         ("item", "item.json")))
    write(server, "loop/item.json", item("one"))
    found, search, seconds = crawl(a)
    assert [i.id for i in found] == ["one"] and search.requests == 3 and seconds < QUICK_S
    write(server, "pages/p1.json", page([item("p1")], "p2.json"))
    write(server, "pages/p2.json", page([item("p2")], "p1.json"))  # next leads back
    found, search, seconds = crawl(f"{server.url}/pages/p1.json")
    assert [i.id for i in found] == ["p1", "p2"] and search.requests == 2
    assert seconds < QUICK_S


def test_depth_pages_links_and_time_are_bounded(server):
    for k in range(8):
        write(server, f"deep/c{k}.json", catalog(("child", f"c{k + 1}.json")))
        write(server, f"pages/p{k}.json", page([item(f"p{k}")], f"p{k + 1}.json"))
        write(server, f"slow/c{k}.json", catalog(("child", f"c{k + 1}.json")))
    write(server, "many.json", catalog(*(("item", f"i{k}.json") for k in range(20))))
    for k in range(20):
        write(server, f"i{k}.json", item(f"i{k}"))
    refused(f"{server.url}/deep/c0.json", "nested more than 4 levels deep (child link "
            "'c5.json')")
    refused(f"{server.url}/pages/p0.json", "more than 3 pages of results",
            CrawlLimits(pages=3))
    refused(f"{server.url}/many.json", "more than 5 links to follow", CrawlLimits(links=5))
    server.stall_s["/slow/"] = 0.4
    refused(f"{server.url}/slow/c0.json", "took more than 1 s",
            CrawlLimits(depth=20, seconds=1.0))
    assert server.requests("/deep/") == 5 and server.requests("/pages/") == 3
    assert server.requests("/i") == 5 and server.requests("/slow/") <= 4


# -- the diagnosis asks with GET ---------------------------------------------------------------
def _get_only(handler: lh._RangeHandler) -> None:
    """What a server allowing GET only (an S3 presigned URL, some CDNs) answers a HEAD."""
    handler.owner.record("HEAD", handler.path, 405)
    handler.send_response(405)
    handler.send_header("Allow", "GET")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def test_a_get_only_server_is_not_reported_as_http_405(server, monkeypatch, tmp_path,
                                                       eurosat_dir):
    monkeypatch.setattr(lh._RangeHandler, "do_HEAD", _get_only)
    (server.root / "broken.tif").write_text("not a raster\n")
    primary = specs_from_paths([str(sorted((eurosat_dir / "Forest").glob("*.tif"))[0])])
    for name, fragment in (("broken.tif", "not a readable remote raster"),
                           ("missing.tif", "HTTP 404")):
        spec = remote_spec(remote_entry("aux", f"{server.url}/{name}"), RemoteOptions(
            "raster", cache_dir=str(tmp_path / "cache"), http=FAST))
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            prefetch(primary, [spec])
        assert time.monotonic() - started < QUICK_S
        message = caught.value.message
        assert message.startswith(f"{server.url}/{name}: ") and fragment in message, message
        assert "405" not in message.replace(server.url, "")  # (the port may hold 405)
    probes = [entry for entry in server.log if entry[:2] == ("GET", "/broken.tif")]
    assert probes and all(status in (200, 206) for _, _, status in probes)


# -- a remote VRT names only remote files ----------------------------------------------------
def vrt_of(raster: Path, source: str, relative: bool = False) -> str:
    """A VRT of `raster`'s grid whose band 1 reads `source` (as GDAL writes one)."""
    import rasterio

    with rasterio.open(raster) as ds:
        transform, crs, (width, height) = ds.transform, ds.crs.to_wkt(), (ds.width, ds.height)
    geo = ", ".join(map(str, transform.to_gdal()))
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
            f"  <SRS>{crs.replace('&', '&amp;').replace('<', '&lt;')}</SRS>\n"
            f"  <GeoTransform>{geo}</GeoTransform>\n"
            '  <VRTRasterBand dataType="UInt16" band="1">\n    <SimpleSource>\n'
            f'      <SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>\n'
            "      <SourceBand>1</SourceBand>\n    </SimpleSource>\n  </VRTRasterBand>\n"
            "</VRTDataset>\n")


def pull_vrt(url: str, primary: Path, cache: Path) -> None:
    spec = remote_spec(remote_entry("vrt", url),
                       RemoteOptions("raster", cache_dir=str(cache), http=FAST))
    prefetch(specs_from_paths([str(primary)]), [spec])


def test_a_remote_vrt_naming_local_files_is_refused(server, precious, tmp_path):
    local = precious / "precious.tif"
    bytes_before = local.read_bytes()
    inner = f"{server.url}/inner.vrt"
    (server.root / "inner.vrt").write_text(vrt_of(local, str(local)))
    cases = {"absolute.vrt": str(local),
             "relative.vrt": "../local/precious.tif",  # relative to the working directory
             "vsi.vrt": f"/vsizip/{tmp_path}/a.zip/precious.tif",
             "file.vrt": local.as_uri(),
             "escape.vrt": f"/vsicurl/{local.as_uri()}",
             "nested.vrt": inner}  # a remote VRT of a remote VRT of the local file
    for name, source in cases.items():
        (server.root / name).write_text(vrt_of(local, source, relative=name == "nested.vrt"))
        cache = tmp_path / f"cache-{name}"
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            pull_vrt(f"{server.url}/{name}", local, cache)
        assert time.monotonic() - started < QUICK_S
        named = inner if name == "nested.vrt" else f"{server.url}/{name}"
        assert "is not a web address" in caught.value.message and caught.value.url == named
        assert "a remote VRT may only name remote files" in caught.value.message
        cached = [p.read_bytes() for p in cache.rglob("*") if p.is_file()]
        assert not list(cache.rglob("*.tif")) and bytes_before not in cached
    assert local.read_bytes() == bytes_before


def test_a_remote_vrt_naming_files_beside_it_is_read(server, precious, tmp_path):
    """A VRT of a file on its own server (relativeToVRT="1", or a full URL) is pulled."""
    local = precious / "precious.tif"
    shutil.copy(local, server.root / "b.tif")
    (server.root / "rel.vrt").write_text(vrt_of(local, "b.tif", relative=True))
    (server.root / "abs.vrt").write_text(vrt_of(local, f"/vsicurl/{server.url}/b.tif"))
    for name in ("rel.vrt", "abs.vrt"):
        cache = tmp_path / f"cache-{name}"
        pull_vrt(f"{server.url}/{name}", local, cache)
        assert list(cache.rglob("*.tif")), name
