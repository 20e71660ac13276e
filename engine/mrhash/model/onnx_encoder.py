"""The compiled CPU encoder: a model's inference graph (band stem, resize, backbone, hash head
and the autoencoder's latent: `HashNet.embed`) exported to ONNX and run with onnxruntime,
about three times torch's speed on a CPU (docs/BENCHMARKS.md). Torch stays for training, for
CUDA and as the fallback.

The ONNX file is made on first use from the loaded weights (torch's exporter, which needs the
`onnx` package) and cached, written atomically, beside the model (`<model>.onnx`) or, where
that folder is not writable, in the user's cache folder under the model's fingerprint. A
cached file is used only when its metadata names the model's fingerprint and this encoder
format, and when it gives torch's embedding of a fixed check batch; else it is rebuilt. An
ONNX file is protobuf: loading it unpickles nothing.

`onnx-int8` (opt-in, never `auto`): the same graph quantised to int8 by onnxruntime's static
QDQ quantisation (per-channel weights, activation ranges calibrated on a fixed synthetic batch,
so the file depends on the model alone), cached as `<model>.int8.onnx`. About 1.8x the float
encoder on this project's 2-core machine but its codes are not torch's to the bit (about 95 %
of bits equal; the dev-set mAP cost is measured in docs/BENCHMARKS.md), so it is only ever
used when asked for. Quantising needs onnxruntime's quantisation tools (they import
`ml_dtypes`); without them `onnx-int8` is refused with the reason.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrhash.errors import BadInput
from mrhash.fileio import atomic_write_bytes
from mrhash.log import log

ENCODER_CHOICES = ("auto", "onnx", "onnx-int8", "torch")
ENCODER_HELP = ("what encodes on a CPU: auto (the compiled ONNX encoder, torch where onnxruntime "
                "is missing), onnx, onnx-int8 (about 1.8x faster; about 95 %% of code bits "
                "equal to torch's, so query with the encoder the index was built with) or "
                "torch (for comparisons); CUDA runs torch")
PRECISIONS = {"onnx": "fp32", "onnx-int8": "int8"}  # encoder choice -> graph precision
# the precision an index records (one per index: int8 codes differ from float ones in ~5 %
# of bits) -> the encoder that gives it; torch and onnx agree on >= 99.9 % of bits
ENCODER_OF_PRECISION = {"float": "auto", "int8": "onnx-int8"}
FORMAT = "1"  # bump when the exported graph changes: older cache files are rebuilt
OPSET = 17
CHECK_TOLERANCE = 1e-3  # largest onnx - torch difference, relative (`relative_difference`)
# an int8 graph is off by up to ~0.3 relative on the check batch: what tells a damaged or
# foreign file there is the code's signs: a foreign model's agree about half the time, the
# dev-set models' int8 graphs 94-95 % on real tiles, the tiny test model's 82 %
INT8_CHECK_AGREEMENT = 0.75
CALIBRATION_PATCHES = 64
INPUT, OUTPUT = "x01", "embedding"


def encoder_precision(encoder: str) -> str:
    """`int8` or `float`: the precision of the codes an encoder choice gives."""
    return "int8" if encoder == "onnx-int8" else "float"


class EncoderUnavailable(Exception):
    """Why the compiled encoder cannot be used (the caller falls back to torch)."""


@dataclass
class OnnxEncoder:
    """An onnxruntime session of one model's `HashNet.embed` for [N, C, size, size] patches
    already normalised to [0, 1] (invalid pixels 0)."""

    session: object
    path: Path
    shape: tuple[int, int, int]  # C, H, W the graph was exported for
    precision: str = "fp32"  # or "int8" (`onnx-int8`)

    def embed(self, x01: np.ndarray) -> np.ndarray:
        """float32 [N, bits + latent] embeddings; onnxruntime releases the GIL meanwhile."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x01, np.float32)})[0]


def cache_paths(model, precision: str = "fp32") -> list[Path]:
    """Where the model's ONNX file of `precision` may live, first choice first."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return [Path(f"{model.path}{suffix}"),
            base / "mrhash" / "encoders" / f"{model.fingerprint}{suffix}"]


def load_encoder(model, threads: int, precision: str = "fp32") -> OnnxEncoder:
    """The model's compiled encoder of `precision` ("fp32", "int8"), from a valid cache file
    or made now; EncoderUnavailable when onnxruntime, onnx (or, for int8, onnxruntime's
    quantisation tools) are missing or the export fails."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise EncoderUnavailable("onnxruntime is not installed") from None
    if precision not in PRECISIONS.values():
        raise EncoderUnavailable(f"no {precision} encoder (one of "
                                 f"{', '.join(PRECISIONS.values())})")
    threads = encoder_threads(threads)
    candidates = cache_paths(model, precision)
    for path in candidates:
        encoder = _cached(path, model, threads, precision)
        if encoder is not None:
            return encoder

    data = export(model) if precision == "fp32" else quantize(export(model), model)
    for path in candidates:
        try:
            atomic_write_bytes(path, data)
        except OSError:  # a read-only model folder: the user's cache folder next
            continue
        encoder = _cached(path, model, threads, precision)
        if encoder is None:  # never left for the next run to try again
            path.unlink(missing_ok=True)
            raise EncoderUnavailable("the exported encoder does not agree with torch")
        return encoder
    raise EncoderUnavailable(f"the exported encoder cannot be stored (tried "
                             f"{', '.join(map(str, candidates))})")


def encoder_threads(default: int) -> int:
    """onnxruntime's intra-op threads: MRHASH_ENCODER_THREADS when set, else `default`
    (torch's: MRHASH_THREADS or the cores, at most 4); BadInput for a value that is not a
    whole number >= 1."""
    text = os.environ.get("MRHASH_ENCODER_THREADS", "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"MRHASH_ENCODER_THREADS={text!r}: give a whole number of threads "
                       ">= 1, or unset it")
    return int(text)


def export(model) -> bytes:
    """The ONNX bytes of `model`'s embed graph, its metadata naming the model's fingerprint."""
    # torch takes ~1 s to import: only where a network runs
    import torch

    try:
        # the compiled encoder's optional runtime
        import onnx
    except ImportError:
        raise EncoderUnavailable("onnx (needed to export the encoder) is not installed"
                                 ) from None

    class Embed(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x01: torch.Tensor) -> torch.Tensor:
            return self.net.embed(x01)

    net = model.torch_net()
    wrapper = Embed(net).eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, (torch.from_numpy(check_batch(model)),), buffer,
                              input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                              dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}}, dynamo=False)
    except Exception as error:  # the exporter raises many kinds; torch then encodes
        raise EncoderUnavailable(f"ONNX export failed ({error})"[:300]) from None
    finally:
        net.eval()  # the exporter restores the wrapper's training flag on every child
    graph = onnx.load_from_string(buffer.getvalue())
    _set_metadata(graph, model, "fp32")
    return graph.SerializeToString()


def calibration_batch(model) -> np.ndarray:
    """The int8 graph's calibration inputs: uniform noise in [0, 1] (the range of normalised
    patches) from a fixed seed, so the quantised file depends on the model alone and not on
    the folder first indexed. Real patches calibrate slightly better (96.2 % of bits equal to
    torch's on the dev set vs 94.7 %, docs/BENCHMARKS.md) but would make two users' files of
    one model differ."""
    rng = np.random.default_rng(0)
    return rng.random((CALIBRATION_PATCHES, model.n_bands, model.patch_size,
                       model.patch_size), dtype=np.float32)


def quantize(float_graph: bytes, model) -> bytes:
    """The int8 (QDQ, per-channel) form of an exported float graph, its metadata naming the
    model and `int8`; EncoderUnavailable when onnxruntime's quantisation tools are missing."""
    try:
        # the compiled encoder's optional runtime
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:  # ml_dtypes, which the tools import, is an optional extra
        raise EncoderUnavailable(f"onnxruntime's quantisation tools cannot be imported "
                                 f"({error}; `pip install ml_dtypes` adds them)") from None

    class Batches(CalibrationDataReader):
        def __init__(self, x01: np.ndarray):
            self.batches = iter([{INPUT: x01[i:i + 16]} for i in range(0, len(x01), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="mrhash-int8-") as tmp:
        source, prepared, target = (Path(tmp) / name for name in ("f.onnx", "p.onnx", "q.onnx"))
        source.write_bytes(float_graph)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            nodes = onnx.load(str(prepared)).graph.node
            # kept in float: the two stem convolutions (the bands' 1x1 stem and the backbone's
            # first conv see the raw value range; quantised, they cost 0.5 % more bits) and
            # the Gemms of the code and latent heads (what the index stores; they cost nothing)
            keep = ([n.name for n in nodes if n.op_type == "Conv"][:2]
                    + [n.name for n in nodes if n.op_type == "Gemm"])
            quantize_static(str(prepared), str(target), Batches(calibration_batch(model)),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=keep)
        except Exception as error:  # the quantiser raises many kinds; the caller says why
            raise EncoderUnavailable(f"int8 quantisation failed ({error})"[:300]) from None
        graph = onnx.load(str(target))
    _set_metadata(graph, model, "int8")
    return graph.SerializeToString()


def _set_metadata(graph, model, precision: str) -> None:
    """Name the model, the encoder format and the precision in the graph (replacing copies a
    tool carried over)."""
    props = {p.key: p.value for p in graph.metadata_props}
    props.update(mrhash_fingerprint=model.fingerprint, mrhash_encoder=FORMAT,
                 mrhash_precision=precision)
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)


def code_agreement(ours: np.ndarray, reference: np.ndarray, bits: int) -> float:
    """Fraction of code bits (signs of the first `bits` values) two embeddings share."""
    return float(np.mean((ours[:, :bits] > 0) == (reference[:, :bits] > 0)))


def check_batch(model) -> np.ndarray:
    """A fixed [2, C, patch, patch] batch in [0, 1] (a ramp and its mirror), the same on every
    machine: what export traces and what a cached file must encode as torch does."""
    c, size = model.n_bands, model.patch_size
    ramp = np.linspace(0.0, 1.0, c * size * size, dtype=np.float32).reshape(c, size, size)
    return np.stack([ramp, 1.0 - ramp])


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| over the larger of 1 and max |reference|: float32 rounding in
    another operation order grows with the values (the latent reaches tens)."""
    scale = max(1.0, float(np.max(np.abs(reference))))
    return float(np.max(np.abs(ours - reference))) / scale


def _cached(path: Path, model, threads: int, precision: str = "fp32") -> OnnxEncoder | None:
    """The encoder of a cache file that is the model's and agrees with torch, else None (a
    missing, damaged, stale or foreign file, which the caller rebuilds)."""
    # the compiled encoder's optional runtime
    import onnxruntime as ort

    try:
        if not path.is_file():
            return None
    except OSError:  # a cache folder this user may not look into (another user's home)
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # idle threads sleep rather than spin: spinning ones take the cores the reader and the
    # commits need in a build (docs/BENCHMARKS.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # its warnings are not the analyst's business
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
    except Exception:  # onnxruntime raises its own types for unreadable graphs
        log.warning(f"{path}: a damaged compiled encoder, made again")
        return None
    # files of before the int8 encoder name no precision: they are float graphs
    if ((meta.get("mrhash_fingerprint"), meta.get("mrhash_encoder"),
         meta.get("mrhash_precision", "fp32")) != (model.fingerprint, FORMAT, precision)):
        return None
    shape = (model.n_bands, model.patch_size, model.patch_size)
    encoder = OnnxEncoder(session, path, shape, precision)
    batch = check_batch(model)
    try:
        ours, reference = encoder.embed(batch), model.torch_embed(batch)
    except Exception:  # a graph of another shape
        return None
    if precision == "int8":
        agreement = code_agreement(ours, reference, model.bits)
        if not agreement >= INT8_CHECK_AGREEMENT:
            log.warning(f"{path}: the int8 encoder's codes agree with torch's on "
                        f"{agreement:.0%} of bits only, made again")
            return None
        return encoder
    difference = relative_difference(ours, reference)
    if not difference <= CHECK_TOLERANCE:
        log.warning(f"{path}: the compiled encoder differs from torch by {difference:.2g}, "
                    "made again")
        return None
    return encoder
