"""Remote auxiliary sources over real HTTP on 127.0.0.1 (loopback_http.py): COGs of the real
Sentinel-2 bands by URL, a static STAC catalogue of them, XYZ tiles through GDAL's WMS driver;
the pull cache (resume after the server dies, offline reruns, clear); the errors (404, 401,
500, unreachable, stalled, missing asset, no item covering a place) and cancel mid-pull. A
model trained with bands pulled over HTTP has the codes of one trained from the same bands as
local files. Nothing is mocked, and nothing but 127.0.0.1 is contacted."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import loopback_http as lh
import numpy as np
import pytest
from mrhash.app.cli import main
from mrhash.errors import BadInput, Cancelled, MrHashError
from mrhash.jobs import JobControl
from mrhash.model.datasets import (
    RasterSamples,
    auxiliary_specs,
    remote_entry,
    remote_spec,
    specs_from_paths,
)
from mrhash.model.package import load_model
from mrhash.model.train import TrainConfig, train_config, train_model, train_pulling
from mrhash.raster.pull_cache import MARKER, RemotePuller, cache_report, prefetch
from mrhash.raster.sources import SourceSpec, open_source
from mrhash.remote.access import (
    AssetMissing,
    HttpSettings,
    NoCoverage,
    RemoteAuthRequired,
    RemoteError,
    RemoteNotFound,
    RemoteOptions,
    RemoteUnreachable,
    gdal_path,
    http_json,
)
from mrhash.remote.kinds import KINDS, RemoteKind, guess_kind, kind_for, kind_of
from mrhash.remote.stac import DateRange, find_items
from mrhash_contract.protocol import TrainRequest

DATES, CLOUD = "2021-01-01/2021-12-31", 20.0
TRAIN = dict(bits=16, clusters=4, patch_size=64, input_size=32, epochs=2, ae_epochs=2,
             batch_size=16, device="cpu", seed=7)
FAST = HttpSettings(timeout_s=2.0, retries=1, retry_delay_s=0.1)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch) -> None:
    """No proxy between the tests and their server (the machine may define one)."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")




@pytest.fixture(scope="module")
def remote_data(tmp_path_factory, sentinel2_dir) -> lh.RemoteData:
    return lh.make_remote_data(tmp_path_factory.mktemp("served"), sentinel2_dir)


@pytest.fixture
def server(remote_data):
    yield from lh.serving(remote_data)


def _stac(server: lh.LoopbackServer, cache: Path, http: HttpSettings = HttpSettings(),
          assets: str = "B05,B8A,B11", path: str = "/stac/collection.json") -> SourceSpec:
    spec = remote_spec(remote_entry("s2", f"{server.url}{path}@{assets}"),
                           RemoteOptions("stac", date=DATES, max_cloud=CLOUD,
                                         cache_dir=str(cache), http=http))
    assert spec is not None and spec.remote.kind == "stac"
    return spec


def _primaries(data: lh.RemoteData, uncovered: bool = True) -> tuple[SourceSpec, ...]:
    paths = [*data.primary, *([data.uncovered] if uncovered else [])]
    return tuple(specs_from_paths([str(p) for p in paths]))


def _codes(model_path: str, data: lh.RemoteData) -> np.ndarray:
    with RasterSamples(_primaries(data, uncovered=False), patch_size=64) as samples:
        patches = samples.read_batch(range(len(samples)))[0][0]
    return load_model(model_path).encode_float(patches)


def test_source_texts_are_told_apart() -> None:
    assert guess_kind("https://x.org/a/b.tif") == "raster"
    assert guess_kind("s3://bucket/scene/B04.tif") == "raster"
    assert gdal_path("s3://bucket/k.tif") == "/vsis3/bucket/k.tif"
    assert gdal_path("https://x.org/k.tif") == "/vsicurl/https://x.org/k.tif"
    assert guess_kind("https://x.org/stac/v1/collections/sentinel-2-l2a") == "stac"
    assert guess_kind("stac+https://x.org/api/scene.tif") == "stac"
    assert guess_kind("WMTS:https://x.org/wmts?SERVICE=WMTS,layer=a") == "raster"
    spec = remote_spec(remote_entry("s2", "https://user:pw@x.org/collections/s2@B05,B8A"))
    assert spec.paths == ("https://user:pw@x.org/collections/s2",) and spec.bands == ("B05",
                                                                                       "B8A")
    assert remote_entry("local", "/data/s2/") is None
    with pytest.raises(MrHashError, match="needs its assets"):
        remote_entry("s2", "https://x.org/collections/s2")
    assert DateRange.parse("2021-06-01/..").contains("2021-07-01T00:00:00Z")
    assert not DateRange.parse("2021-06-01/2021-06-30").contains("2021-07-01T00:00:00Z")
    with pytest.raises(MrHashError, match="ends before"):
        DateRange.parse("2021-06-30/2021-06-01")


def test_stac_items_found_and_filtered(server) -> None:
    everywhere = [-180, -90, 180, 90]
    url = f"{server.url}/stac/collection.json"
    found = find_items({"url": url, "bbox": everywhere})
    assert {i["id"] for i in found["items"]} == {"s2_west", "s2_east", "s2_cloudy", "s2_winter"}
    kept = find_items({"url": url, "bbox": everywhere, "date": DATES, "max_cloud": CLOUD})
    assert [i["id"] for i in kept["items"]] == ["s2_east", "s2_west"]  # more area first
    item = kept["items"][0]
    assert item["geometry"]["type"] == "Polygon" and item["assets"] == ["B05", "B11", "B8A"]
    # the same from an item collection, and nothing for a place elsewhere
    as_collection = find_items({"url": f"{server.url}/stac/items.json", "bbox": everywhere,
                                "date": DATES, "max_cloud": CLOUD})
    assert [i["id"] for i in as_collection["items"]] == ["s2_east", "s2_west"]
    assert find_items({"url": url, "bbox": [10, 10, 11, 11]})["count"] == 0


@pytest.mark.parametrize("path", ["/api/", "/api/search", "/api/collections/s2-test"])
def test_stac_api_search_and_items_pages(server, remote_data, tmp_path, path) -> None:
    """A STAC API (its root, /search by POST, a collection's /items by GET), one item a page:
    the pages are followed, the filters applied, and the pull reads the same bands."""
    query = {"url": f"{server.url}{path}", "bbox": [-180, -90, 180, 90], "date": DATES,
             "max_cloud": CLOUD}
    found = find_items(query)
    assert [i["id"] for i in found["items"]] == ["s2_east", "s2_west"]
    assert found["requests"] >= 4  # the document, then one page per item (4 items)
    stats = prefetch(_primaries(remote_data)[:1], [_stac(server, tmp_path / "c", path=path)])
    assert (stats.pulled, stats.no_coverage) == (1, 0)


def test_model_trained_over_http_equals_local_files(server, remote_data, tmp_path) -> None:
    """The same bands, read from local COG files (a collection paired by coordinates) and
    pulled from the STAC catalogue over HTTP: the same samples, losses and codes."""
    local = tuple(SourceSpec("s2", tuple(str(p) for p in remote_data.items[item]))
                  for item in ("s2_west", "s2_east"))
    config = TrainConfig(primary=_primaries(remote_data), auxiliary=local,
                         output=str(tmp_path / "local.safetensors"), **TRAIN)
    from_files = train_model(config)
    remote = TrainConfig(primary=_primaries(remote_data),
                         auxiliary=(_stac(server, tmp_path / "cache"),),
                         output=str(tmp_path / "http.safetensors"), **TRAIN)
    over_http, pulled = train_pulling(remote)
    assert over_http.n_samples == from_files.n_samples == 24  # 6 rasters x 4 tiles
    # the raster no item covers is skipped, counted, and named in both runs
    assert pulled.no_coverage == 1 and pulled.pulled == 7 and pulled.bytes > 0
    assert [s["path"] for s in over_http.skipped] == [str(remote_data.uncovered)]
    assert "no STAC item covers" in over_http.skipped[0]["error"]
    assert [h["loss"] for h in over_http.history] == [h["loss"] for h in from_files.history]
    assert np.array_equal(_codes(over_http.model, remote_data),
                          _codes(from_files.model, remote_data))
    model = load_model(over_http.model)
    aux = model.config["auxiliary"][0]
    assert aux["remote"]["kind"] == "stac" and aux["bands"] == ["B05", "B8A", "B11"]


def test_server_dies_mid_pull_resume_then_offline(server, remote_data, tmp_path) -> None:
    cache = tmp_path / "cache"
    output = tmp_path / "m.safetensors"

    def config() -> TrainConfig:
        return TrainConfig(primary=_primaries(remote_data),
                           auxiliary=(_stac(server, cache, FAST),), output=str(output), **TRAIN)

    def kill_after_three(event: dict) -> None:
        if event.get("stage") == "pull" and event["done"] >= 3 and server.running:
            server.stop()

    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        train_pulling(config(), JobControl(kill_after_three, min_interval_s=0))
    assert time.monotonic() - started < 30  # bounded retries, no hang
    assert f"127.0.0.1:{server.port}" in caught.value.message
    assert isinstance(caught.value, RemoteUnreachable), caught.value.message
    assert not output.exists()
    assert len(list(cache.glob("s2-*/*.json"))) == 3  # what was done is kept
    # the server comes back: the rerun pulls only what is missing
    server.start()
    before = server.requests("/cogs/")
    resumed, pulled = train_pulling(config())
    assert (pulled.from_cache, pulled.pulled) == (3, 4)
    assert 0 < server.requests("/cogs/") - before
    codes = _codes(resumed.model, remote_data)
    # and with the server gone, a third run reads everything from the cache
    server.stop()
    offline, pulled = train_pulling(config())
    assert (pulled.from_cache, pulled.pulled, pulled.no_coverage) == (7, 0, 1)
    assert pulled.cache_bytes > 0 and pulled.cache_files > 7
    assert np.array_equal(_codes(offline.model, remote_data), codes)


def test_cog_url_and_xyz_tiles_train(server, remote_data, tmp_path) -> None:
    """A COG by plain URL (the cloudy scene: it covers all six rasters) and an XYZ tile set
    through a GDAL WMS (TMS) description, as a QGIS XYZ layer holds it."""
    cog = remote_data.items["s2_cloudy"][0].relative_to(remote_data.root)
    defaults = RemoteOptions("raster", cache_dir=str(tmp_path / "cache"))
    specs = (remote_spec(remote_entry("b05", f"{server.url}/{cog}"), defaults),
             remote_spec(remote_entry("web", lh.tms_xml(server.url)), defaults))
    assert [s.remote.kind for s in specs] == ["raster", "raster"]
    config = TrainConfig(primary=_primaries(remote_data, uncovered=False), auxiliary=specs,
                         output=str(tmp_path / "m.safetensors"), **TRAIN)
    result, pulled = train_pulling(config)
    assert result.n_samples == 24 and pulled.pulled == 12 and pulled.no_coverage == 0
    assert [s["name"] for s in load_model(result.model).config["sources"]] == [
        "primary", "b05", "web"]
    assert server.requests("/xyz/14/") > 0
    with RasterSamples(_primaries(remote_data, uncovered=False), specs, patch_size=64) as s:
        (_, _), (b05, b05_valid), (web, web_valid) = s.read_batch([0, 1])
    assert web.shape == (2, 3, 64, 64) and web_valid.all() and web.max() > 50
    assert b05_valid.all() and b05.min() >= 4000  # the cloudy scene's values (x/2 + 4000)


def test_errors_name_the_url(server, remote_data, tmp_path) -> None:
    primary = _primaries(remote_data, uncovered=False)[:1]
    cache = tmp_path / "cache"
    with pytest.raises(RemoteNotFound, match=r"127\.0\.0\.1.*nothing\.json.*HTTP 404"):
        prefetch(primary, [_stac(server, cache, path="/stac/nothing.json")])
    server.failures["/stac/"] = 401
    with pytest.raises(RemoteAuthRequired, match="HTTP 401: authentication required"):
        prefetch(primary, [_stac(server, cache)])
    server.failures["/stac/"] = 500
    before = server.requests("/stac/")
    with pytest.raises(RemoteError, match="HTTP 500"):
        http_json(f"{server.url}/stac/collection.json", FAST)
    assert server.requests("/stac/") - before == FAST.retries + 1  # bounded retries
    server.failures.clear()
    with pytest.raises(AssetMissing, match=r"s2_west.*no asset 'B99'.*B05, B11, B8A"):
        prefetch(primary, [_stac(server, cache, assets="B05,B99")])
    # a COG that is not there, through /vsicurl/
    missing = remote_spec(remote_entry("b05", f"{server.url}/cogs/none.tif"),
                              RemoteOptions("raster", cache_dir=str(cache), http=FAST))
    with pytest.raises(RemoteNotFound, match=r"none\.tif"):
        prefetch(primary, [missing])
    # an XYZ tile the server does not have (the uncovered raster is outside the tile set)
    web = remote_spec(remote_entry("web", lh.tms_xml(server.url)),
                          RemoteOptions("raster", cache_dir=str(cache), http=FAST))
    with pytest.raises(RemoteNotFound, match=r"/xyz/\$\{z\}/\$\{x\}/\$\{y\}\.png: HTTP 404"):
        prefetch(_primaries(remote_data)[-1:], [web])
    # a COG whose bytes need credentials
    server.failures["/cogs/"] = 403
    cog = remote_data.items["s2_west"][0].relative_to(remote_data.root)
    guarded = remote_spec(remote_entry("b05", f"{server.url}/{cog}"),
                              RemoteOptions("raster", cache_dir=str(cache), http=FAST))
    with pytest.raises(RemoteAuthRequired, match="403"):
        prefetch(primary, [guarded])


def test_unreachable_and_stalled_servers_do_not_hang(server, tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RemoteUnreachable, match=rf"127\.0\.0\.1:{port}.*cannot reach"):
        http_json(f"http://127.0.0.1:{port}/stac/collection.json", FAST)
    server.stall_s["/stac/"] = 5.0
    with pytest.raises(RemoteUnreachable, match="timed out"):
        http_json(f"{server.url}/stac/collection.json",
                  HttpSettings(timeout_s=0.5, retries=0))
    assert time.monotonic() - started < 10


def test_no_item_covering_a_place_is_skipped_not_fatal(server, remote_data, tmp_path) -> None:
    puller = RemotePuller(_stac(server, tmp_path / "cache"))
    with open_source(_primaries(remote_data)[-1]) as far:
        with pytest.raises(NoCoverage, match="no STAC item covers"):
            puller.for_primary(far).local_spec(far.footprint)
        server.stop()  # the answer was cached: known offline too
        with pytest.raises(NoCoverage):
            puller.local_spec(far.footprint)
    assert puller.stats.no_coverage == 2 and puller.stats.from_cache == 1
    puller.close()


def test_cancel_mid_pull(server, remote_data, tmp_path) -> None:
    job = JobControl(lambda event: job.cancel() if event.get("stage") == "pull" else None,
                     min_interval_s=0)
    with pytest.raises(Cancelled):
        prefetch(_primaries(remote_data), [_stac(server, tmp_path / "cache")], job)
    assert len(list((tmp_path / "cache").glob("s2-*/*.json"))) == 1  # stopped after one


def test_cli_train_cache_size_and_clear(server, remote_data, tmp_path, capsys) -> None:
    output = tmp_path / "cli.safetensors"
    args = ["train", "--primary", *map(str, remote_data.primary), "--aux-source",
            f"s2={server.url}/stac/collection.json@B05,B8A,B11", "--aux-date", DATES,
            "--aux-max-cloud", str(CLOUD), "--output", str(output),
            "--json", str(tmp_path / "train.json"), "--bits", "16", "--clusters", "4",
            "--input-size", "32", "--epochs", "1", "--ae-epochs", "1", "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "pulled 6 footprint(s)" in err and "pull-cache" in err
    result = json.loads((tmp_path / "train.json").read_text())
    cache = Path(result["pull"]["cache_dir"])
    assert cache == Path(f"{output}.pull-cache") and (cache / MARKER).is_file()
    assert result["pull"]["cache_bytes"] == cache_report(cache)["bytes"] > 0
    assert main(["cache", str(cache)]) == 0
    assert "holds" in capsys.readouterr().err
    assert main(["cache", str(cache), "--clear"]) == 0 and not cache.exists()
    assert main(["cache", str(tmp_path)]) == 2  # not a pull cache: refused, nothing deleted
    assert "not a MrHash pull cache" in capsys.readouterr().err and output.exists()


def test_worker_train_params_for_remote_sources(tmp_path) -> None:
    params = {"primary": {"paths": ["/data/a.tif"]}, "output": str(tmp_path / "m.safetensors"),
              "aux_date": DATES, "aux_max_cloud": 30,
              "auxiliary": [{"name": "s2", "stac": "https://x.org/collections/s2",
                             "assets": ["B05", "B11"]},
                            {"name": "web", "url": lh.tms_xml("https://tiles.x.org")},
                            {"name": "b8", "url": "s3://bucket/B08.tif", "bands": [1]}]}
    request = TrainRequest.from_params(params)
    assert TrainRequest.from_params(request.to_params()) == request  # the plugin's round trip
    try:
        train_config(request)
    except MrHashError as error:  # the primary does not exist: only the aux specs matter
        assert "a.tif" in error.message
    stac, web, b8 = auxiliary_specs(request)
    assert stac.remote.kind == "stac" and stac.bands == ("B05", "B11")
    assert (stac.remote.date, stac.remote.max_cloud) == (DATES, 30.0)
    assert stac.remote.cache_dir == f"{params['output']}.pull-cache"
    assert web.remote.kind == "raster" and web.remote.date is None
    assert b8.paths == ("s3://bucket/B08.tif",) and b8.bands == (1,)
    assert SourceSpec.from_dict(stac.to_dict()) == stac


def test_each_kind_of_remote_source_is_one_class_of_the_registry():
    """The three kinds (web service, raster URL, STAC) are RemoteKind classes in KINDS, asked
    in order; a recorded source's kind is found again from its recorded name and text."""
    assert all(isinstance(kind, RemoteKind) for kind in KINDS)
    assert [type(kind_of(text)).__name__ for text in (
        "WMTS:https://x.org/wmts?SERVICE=WMTS,layer=a", "<GDAL_WMS><Service/></GDAL_WMS>",
        "https://x.org/a/b.tif", "/vsis3/bucket/b.tif", "https://x.org/stac/v1",
        "stac+https://x.org/api/scene.tif")] == [
        "WebService", "WebService", "GdalRaster", "GdalRaster", "Stac", "Stac"]
    assert kind_of("https://x.org/a/b.tif").band_list(["4", "B8"]) == (4, "B8")
    assert kind_of("https://x.org/stac").band_list(["1", "B8"]) == ("1", "B8")  # assets
    assert type(kind_for(RemoteOptions("raster"), "WCS:https://x.org/wcs")).__name__ == \
        "WebService"
    assert kind_for(RemoteOptions("stac"), "https://x.org/a/b.tif").searches
    with pytest.raises(BadInput, match="remote source kind"):
        kind_for(RemoteOptions("ftp"), "ftp://x.org/a.tif")
