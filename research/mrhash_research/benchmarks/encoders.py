"""CPU encoders side by side on a labelled folder (class sub-folders of rasters, e.g. the
EuroSAT-MS dev set): bare tiles/s, code bits equal to torch's, and the leave-one-out mAP of
the codes (evaluate.py's scoring; labels are read only to score).

Encoders: the engine's (`onnx_encoder.ENCODER_CHOICES`: torch, onnx, onnx-int8) and, for
measurement only, OpenVINO running the same ONNX file (`openvino-f32`, `openvino-bf16`,
`openvino-int8` on the int8 file) when the `openvino` package is installed: OpenVINO is not
an encoder of the engine (on this project's machine it was no faster than onnxruntime at
float precision, docs/BENCHMARKS.md), this is where that is measured again.

Each image gives its first tile (a 64 px EuroSAT image is one tile), read as the indexer
reads it. Speed: those patches repeated to at least `--min-tiles`, encoded in batches of
`--batch-size` through the model's `embed` (normalisation included, as in a build); the
encoders alternate `--repeats` times and medians are reported.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

OPENVINO = ("openvino-f32", "openvino-bf16", "openvino-int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--folder", required=True,
                        help="labelled folder: class sub-folders of rasters")
    parser.add_argument("--encoders", default="torch,onnx,onnx-int8",
                        help="comma-separated: torch, onnx, onnx-int8, " + ", ".join(OPENVINO))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-tiles", type=int, default=2048,
                        help="patches per timed pass (the set repeated)")


def first_tiles(model, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw float32 [N, C, patch, patch] and valid [N, patch, patch]: each raster's first tile
    as the indexer reads it; BadInput naming a raster that has none."""
    from mrhash.errors import BadInput
    from mrhash.index.encode import open_for_model, tile_patches
    from mrhash.raster.sources import SourceSpec
    from mrhash.raster.tiling import tile_grid

    patches, masks = [], []
    for path in paths:
        with open_for_model(SourceSpec("primary", (path,), model.primary.bands),
                            model) as source:
            tiles = tile_grid(source, model.patch_size)[:1]
            if not tiles:
                raise BadInput("has no tile of the model's patch size", path=path)
            for _, batch, valid in tile_patches(source, tiles, model.patch_size):
                patches.append(batch)
                masks.append(valid)
    return np.concatenate(patches), np.concatenate(masks)


def openvino_embed(model, name: str, threads: int) -> Callable[[np.ndarray, np.ndarray],
                                                               np.ndarray]:
    """`embed` with OpenVINO running the model's cached ONNX file (float, or the int8 one)
    on `threads` threads: the model's normalisation, then the graph."""
    from mrhash.errors import MissingDependency
    from mrhash.model.onnx_encoder import load_encoder

    try:
        import openvino
    except ImportError:  # measured only, never an engine requirement
        raise MissingDependency("openvino", "openvino (pip install openvino==2026.4.1, "
                                "for the openvino-* measurements only)") from None

    precision = "int8" if name == "openvino-int8" else "fp32"
    path = load_encoder(model, threads, precision).path
    # explicit precision: on a CPU with avx512_bf16 OpenVINO's default is bf16, whose codes
    # are not torch's (docs/BENCHMARKS.md)
    hint = "bf16" if name == "openvino-bf16" else "f32"
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads,
                                   "INFERENCE_PRECISION_HINT": hint,
                                   "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def embed(patches: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x01 = model.stats.apply(patches) * valid[:, None]
        return np.array(request.infer({0: x01})[0])

    return embed


def encoder(model_path: str, name: str, threads: int) -> tuple[Callable, str]:
    """(embed(patches, valid), what runs it) for an engine encoder or an OpenVINO one."""
    from mrhash.model.package import load_model

    if name in OPENVINO:
        model = load_model(model_path)
        return openvino_embed(model, name, threads), name
    model = load_model(model_path).use_encoder(name)
    return model.embed, model.encoder_used


def run(args: argparse.Namespace) -> dict:
    from mrhash.device import limit_threads
    from mrhash.model.onnx_encoder import code_agreement, relative_difference
    from mrhash.model.package import load_model, pack_codes

    from mrhash_research.benchmarks import OthersCores
    from mrhash_research.evaluate import hamming_distances, scan_dataset, score, summarise

    threads = limit_threads()
    names = args.encoders.split(",")
    reference = load_model(args.model).use_encoder("torch")
    paths, labels = scan_dataset(args.folder)
    patches, valid = first_tiles(reference, paths)
    expected = reference.embed(patches, valid)
    encoders = {name: encoder(args.model, name, threads) for name in names}
    repeat = -(-args.min_tiles // len(patches))
    timed = np.concatenate([patches] * repeat), np.concatenate([valid] * repeat)
    rows: dict[str, dict] = {}
    for name, (embed, used) in encoders.items():
        ours = np.concatenate([embed(patches[i:i + args.batch_size],
                                     valid[i:i + args.batch_size])
                               for i in range(0, len(patches), args.batch_size)])
        codes = pack_codes(ours[:, :reference.bits])
        scores = summarise(name, reference.bits, score(hamming_distances(codes), labels),
                           labels)
        rows[name] = {"runs": used, "map": scores["map"], "p_at_10": scores["p_at_10"],
                      "bits_equal_to_torch": round(code_agreement(ours, expected,
                                                                  reference.bits), 5),
                      "relative_difference": float(f"{relative_difference(ours, expected):.3g}"),
                      "tiles_per_s_runs": []}
        embed(patches[:args.batch_size], valid[:args.batch_size])  # warm-up
    n = len(timed[0])
    for _ in range(args.repeats):  # alternated: a busy spell of a shared CPU hits all
        for name, (embed, _used) in encoders.items():
            with OthersCores() as others:
                start = time.perf_counter()
                for i in range(0, n, args.batch_size):
                    embed(timed[0][i:i + args.batch_size], timed[1][i:i + args.batch_size])
                seconds = time.perf_counter() - start
            rows[name]["tiles_per_s_runs"].append(round(n / seconds, 1))
            rows[name].setdefault("others_cores_runs", []).append(others.cores)
    for row in rows.values():
        row["tiles_per_s"] = float(np.median(row["tiles_per_s_runs"]))
    return {"model": args.model, "images": len(paths), "bits": reference.bits,
            "patch_size": reference.patch_size,
            "input_size": reference.config.get("input_size"), "threads": threads,
            "batch_size": args.batch_size, "timed_tiles": n, "encoders": rows}
