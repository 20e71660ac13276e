"""Co-registration on real rasters: a point's pixel in the primary and the same place in every
other source (other resolution, other CRS) agree geographically within half a source pixel.

Method: a copy of the auxiliary file gets a marker added to the one pixel that contains the
point; the co-registered patch of the marked copy minus that of the original is the marker's
resampled footprint alone, whose centroid must land where the marker pixel's centre is."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from mrhash.errors import BadInput
from mrhash.raster.coreg import MultiSourceReader
from mrhash.raster.geometry import Footprint
from mrhash.raster.sources import SourceSpec, open_source
from mrhash.raster.tiling import tile_grid
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.warp import transform as transform_points

SIZE = 33  # odd: the point's primary pixel is the patch's centre pixel


def _marked_copy(src: str, dst: str, x: float, y: float, crs: str) -> tuple[float, float, float]:
    """Copy `src` adding 5000 to the pixel holding (x, y) (given in `crs`); return that pixel's
    centre in `crs` and the file's pixel size."""
    with rasterio.open(src) as ds:
        (fx,), (fy,) = transform_points(crs, ds.crs, [x], [y])
        row, col = ds.index(fx, fy)
        data = ds.read()
        data[:, row, col] += 5000
        profile = ds.profile | {"driver": "GTiff"}
        cx, cy = ds.xy(row, col)
        (cx,), (cy,) = transform_points(ds.crs, crs, [cx], [cy])
        res = ds.res[0]
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return cx, cy, res


def _reprojected(src: str, dst: str, crs: str) -> str:
    with rasterio.open(src) as ds:
        transform, width, height = calculate_default_transform(
            ds.crs, crs, ds.width, ds.height, *ds.bounds)
        profile = ds.profile | {"driver": "GTiff", "crs": crs, "transform": transform,
                                "width": width, "height": height}
        with rasterio.open(dst, "w", **profile) as out:
            reproject(rasterio.band(ds, 1), rasterio.band(out, 1),
                      resampling=Resampling.nearest)
    return dst


def _marker_centroid(reader_plain, reader_marked, box: Footprint) -> tuple[float, float]:
    """World position (in box.crs) of the marker blob in the auxiliary patch."""
    (_, _), (plain, ok) = reader_plain.read(box, SIZE)
    (_, _), (marked, ok2) = reader_marked.read(box, SIZE)
    blob = (marked - plain)[0] * (ok & ok2)
    assert blob.max() > 100, "marker not found in the co-registered patch"
    rows, cols = np.indices(blob.shape)
    r = (blob * rows).sum() / blob.sum()
    c = (blob * cols).sum() / blob.sum()
    minx, miny, maxx, maxy = box.bounds
    return (minx + (c + 0.5) * (maxx - minx) / SIZE, maxy - (r + 0.5) * (maxy - miny) / SIZE)


def _check_point(primary_path: str, aux_path: str, tmp_path, box_crs: str | None = None):
    """Co-register aux to primary around a primary pixel centre; return (error, tolerance) in
    metres of the primary CRS: marker centroid vs marker pixel centre, and half an aux pixel."""
    primary = open_source(SourceSpec("primary", (primary_path,)))
    with rasterio.open(primary_path) as ds:
        x, y = ds.xy(ds.height // 2, ds.width // 3)  # a primary pixel centre
        value = ds.read(1)[ds.index(x, y)]
    res = primary.res[0]
    marked_path = str(tmp_path / "marked.tif")
    cx, cy, _ = _marked_copy(aux_path, marked_path, x, y, primary.crs)
    plain, marked = (open_source(SourceSpec("aux", (p,))) for p in (aux_path, marked_path))
    try:
        box = Footprint.around_point(x, y, primary.crs, SIZE * res)
        reader = MultiSourceReader(primary, [plain])
        (patch, valid), _ = reader.read(box, SIZE)
        assert valid.all() and patch[0, SIZE // 2, SIZE // 2] == value  # the point's pixel
        if box_crs:  # the same place asked for in another CRS
            (bx,), (by,) = transform_points(primary.crs, box_crs, [x], [y])
            box = Footprint.around_point(bx, by, box_crs, SIZE * res)
            (cx,), (cy,) = transform_points(primary.crs, box_crs, [cx], [cy])
        found = _marker_centroid(reader, MultiSourceReader(primary, [marked]), box)
        if box_crs:
            (fx, px), (fy, py) = transform_points(box_crs, primary.crs, [found[0], cx],
                                                  [found[1], cy])
            found, (cx, cy) = (fx, fy), (px, py)
        # the marker pixel holds the point: its centre is within half an aux pixel of it
        return float(np.hypot(found[0] - cx, found[1] - cy)), plain
    finally:
        for source in (primary, plain, marked):
            source.close()


def _half_pixel_m(source) -> float:
    """Half of a source pixel, in metres on the ground (EPSG:3857 shrinks by cos(lat))."""
    lon, lat = source.footprint.to("EPSG:4326").center()
    scale = np.cos(np.radians(lat)) if source.crs == "EPSG:3857" else 1.0
    return 0.5 * source.res[0] * scale


def test_landsat_pan_15m_on_ms_30m(landsat_dir, tmp_path):
    error, aux = _check_point(str(landsat_dir / "l8_B4.tif"), str(landsat_dir / "l8_B8.tif"),
                              tmp_path)
    assert error < 0.1 * _half_pixel_m(aux)


def test_sentinel2_60m_on_10m(sentinel2_dir, tmp_path):
    error, aux = _check_point(str(sentinel2_dir / "s2_B04.jp2"),
                              str(sentinel2_dir / "s2_B01.jp2"), tmp_path)
    assert error < 0.1 * _half_pixel_m(aux)


@pytest.mark.parametrize("box_crs", [None, "EPSG:4326"])
def test_source_in_another_crs(sentinel2_dir, tmp_path, box_crs):
    """20 m band reprojected to Web Mercator, read onto the 10 m UTM primary; also with the
    footprint itself given in EPSG:4326."""
    aux = _reprojected(str(sentinel2_dir / "s2_B05.jp2"), str(tmp_path / "b05_3857.tif"),
                       "EPSG:3857")
    error, aux_source = _check_point(str(sentinel2_dir / "s2_B04.jp2"), aux, tmp_path, box_crs)
    assert error < 0.2 * _half_pixel_m(aux_source)


def test_read_tile_shapes_and_primary_values(sentinel2_dir):
    spec = SourceSpec("p", tuple(str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B04", "B03")))
    with open_source(spec) as primary, \
            open_source(SourceSpec("swir", (str(sentinel2_dir / "s2_B11.jp2"),))) as swir:
        reader = MultiSourceReader(primary, [swir])
        tile = tile_grid(primary, 32)[45]
        (p, pv), (s, sv) = reader.read_tile(tile)
        assert p.shape == (2, 32, 32) and s.shape == (1, 32, 32)
        assert p.dtype == s.dtype == np.float32 and pv.all() and sv.all()
        col, row, w, h = tile.window
        with rasterio.open(spec.paths[1]) as ds:
            np.testing.assert_array_equal(p[1], ds.read(1, window=((row, row + h), (col, col + w))))


def test_footprint_outside_primary_and_partial_auxiliary(sentinel2_dir, landsat_dir):
    with open_source(SourceSpec("p", (str(sentinel2_dir / "s2_B04.jp2"),))) as primary, \
            open_source(SourceSpec("a", (str(sentinel2_dir / "s2_B01.jp2"),))) as aux:
        reader = MultiSourceReader(primary, [aux])
        minx, miny, maxx, maxy = primary.footprint.bounds
        with pytest.raises(BadInput, match=r"s2_B04\.jp2: footprint .* outside"):
            reader.read(Footprint(primary.crs, (maxx + 100, miny, maxx + 740, miny + 640)), 64)
        # straddling the primary's top-left corner: half the patch is outside both
        box = Footprint(primary.crs, (minx - 320, maxy - 320, minx + 320, maxy + 320))
        (_, pv), (_, av) = reader.read(box, 64)
        assert 0.2 < pv.mean() < 0.3 and not pv[:32].any() and pv[32:, 32:].all()
        assert not av[:29, :29].any() and av[40:, 40:].all()  # B01 starts 10-20 m beyond


def test_sources_that_do_not_overlap(sentinel2_dir, landsat_dir):
    with open_source(SourceSpec("p", (str(sentinel2_dir / "s2_B04.jp2"),))) as primary, \
            open_source(SourceSpec("l8", (str(landsat_dir / "l8_B4.tif"),))) as other:
        with pytest.raises(BadInput, match=r"l8_B4\.tif: source 'l8' does not overlap"):
            MultiSourceReader(primary, [other])


def test_windowed_reads_match_in_memory(sentinel2_dir, tmp_path):
    """cache_bytes=0 (rasters above the memory budget) reads by window: same results."""
    aux = _reprojected(str(sentinel2_dir / "s2_B05.jp2"), str(tmp_path / "b05_3857.tif"),
                       "EPSG:3857")
    specs = (SourceSpec("p", (str(sentinel2_dir / "s2_B04.jp2"),)), SourceSpec("a", (aux,)))
    results = []
    for cache_bytes in (1 << 30, 0):
        sources = [open_source(spec, cache_bytes) for spec in specs]
        reader = MultiSourceReader(*sources[:1], sources[1:])
        tiles = tile_grid(sources[0], 64)
        results.append([reader.read_tile(t) for t in (tiles[0], tiles[-1], tiles[400])])
        for source in sources:
            source.close()
    for cached, windowed in zip(*results, strict=True):
        for (a, am), (b, bm) in zip(cached, windowed, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(am, bm)


@pytest.mark.parametrize("size", [33, 64])
def test_read_point_in_another_crs(landsat_dir, size):
    """A map point given in EPSG:4326: the primary patch sits on its pixel grid around the
    point's pixel (the centre pixel for an odd size), the PAN patch covers the same ground."""
    ms, pan = (open_source(SourceSpec(n, (str(landsat_dir / f),))) for n, f in
               (("ms", "l8_B4.tif"), ("pan", "l8_B8.tif")))
    with ms, pan, rasterio.open(landsat_dir / "l8_B4.tif") as ds:
        x, y = ds.xy(300, 200)
        x, y = x + 7, y - 4  # off the pixel centre, towards its lower right corner
        (lon,), (lat,) = transform_points(ds.crs, "EPSG:4326", [x], [y])
        (patch, valid), (pan_patch, pan_valid) = MultiSourceReader(ms, [pan]).read_point(
            lon, lat, "EPSG:4326", size)
        # odd: centred on the point's pixel; even: on the pixel corner nearest the point
        start_row, start_col = (p - size // 2 + (1 - size % 2) for p in (300, 200))
        window = ((start_row, start_row + size), (start_col, start_col + size))
        np.testing.assert_array_equal(patch[0], ds.read(1, window=window))
        assert valid.all() and pan_valid.all() and pan_patch.shape == (1, size, size)


def test_separable_fast_path_is_plain_bilinear(sentinel2_dir, monkeypatch):
    """Same-CRS reads of coarser bands take a two-pass shortcut; it must give the values of the
    general four-neighbour bilinear (float32 rounding aside)."""
    import mrhash.raster.sources as sources

    spec = SourceSpec("p", tuple(str(sentinel2_dir / f"s2_{b}.jp2") for b in ("B04", "B05", "B09")))
    with open_source(spec) as source:
        places = [t.footprint for t in tile_grid(source, 48, stride=293)]
        fast = [source.read(f, (48, 48))[0] for f in places]
        monkeypatch.setattr(sources, "separable_inside", lambda *_: False)
        general = [source.read(f, (48, 48))[0] for f in places]
    assert len(places) > 20
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)
