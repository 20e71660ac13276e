"""Make the small real EuroSAT subset the tests use (tests/data/eurosat_ms_mini/) from the
development set (../shared/data/eurosat_ms_dev/, see its README).

The first PER_CLASS files of each class folder, in sorted file-name order (the files the tests
pick with `sorted(glob)[:n]`), are rewritten as losslessly compressed GeoTIFFs (DEFLATE,
horizontal predictor, band interleaved, one strip), keeping dtype, band order, CRS, transform,
nodata and metadata; every copy is read back and compared with its original, pixel for pixel.
A manifest.csv in the format of the source one lists them, with the md5 of the new files.

    .venv/bin/python scripts/make_test_data.py [--source DIR] [--dest DIR] [--per-class N]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "eurosat_ms_dev"
DEST = REPO / "tests" / "data" / "eurosat_ms_mini"
PER_CLASS = 5
CREATION = {"compress": "deflate", "zlevel": 9, "predictor": 2, "interleave": "band",
            "tiled": False, "blockysize": 64}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _metadata(ds) -> tuple:
    return (ds.crs, ds.transform, ds.nodata, ds.dtypes, ds.count, ds.width, ds.height,
            ds.descriptions, ds.colorinterp, ds.scales, ds.offsets, ds.units, ds.tags(),
            [ds.tags(b) for b in ds.indexes])


def rewrite(src_path: Path, dst_path: Path) -> None:
    """Copy one raster losslessly compressed, then check it reads back identical."""
    with rasterio.open(src_path) as src:
        profile = {**src.profile, **CREATION}
        pixels = src.read()
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(pixels)
            dst.colorinterp = src.colorinterp
            dst.update_tags(**src.tags())
            for band in src.indexes:
                dst.update_tags(band, **src.tags(band))
                if src.descriptions[band - 1]:
                    dst.set_band_description(band, src.descriptions[band - 1])
        with rasterio.open(dst_path) as dst:
            if _metadata(dst) != _metadata(src):
                raise SystemExit(f"{dst_path}: metadata differ from {src_path}")
            if not np.array_equal(dst.read(), pixels):
                raise SystemExit(f"{dst_path}: pixels differ from {src_path}")


def make_subset(source: Path, dest: Path, per_class: int) -> list[dict[str, str]]:
    with open(source / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = {row["path"]: row for row in reader}
    if dest.exists():
        shutil.rmtree(dest)
    out = []
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.tif"))[:per_class]
        if len(files) < per_class:
            raise SystemExit(f"{class_dir}: only {len(files)} files")
        for src in files:
            rel = src.relative_to(source).as_posix()
            row = rows[rel]
            if md5(src) != row["md5"]:
                raise SystemExit(f"{src}: md5 differs from the source manifest")
            rewrite(src, dest / rel)
            out.append({**row, "md5": md5(dest / rel)})
    with open(dest / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    args = parser.parse_args(argv)
    if not (args.source / "manifest.csv").is_file():
        parser.error(f"no EuroSAT dev set at {args.source}")
    readme = args.dest / "README.md"
    kept = readme.read_text() if readme.is_file() else None  # hand-written: survive a rerun
    rows = make_subset(args.source, args.dest, args.per_class)
    if kept is not None:
        readme.write_text(kept)
    size = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(f"{len(rows)} rasters, {size / 1e6:.2f} MB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
