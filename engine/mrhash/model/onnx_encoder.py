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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrhash.fileio import atomic_write_bytes
from mrhash.log import log

ENCODER_CHOICES = ("auto", "onnx", "torch")
FORMAT = "1"  # bump when the exported graph changes: older cache files are rebuilt
OPSET = 17
CHECK_TOLERANCE = 1e-3  # largest onnx - torch difference, relative (`relative_difference`)
INPUT, OUTPUT = "x01", "embedding"


class EncoderUnavailable(Exception):
    """Why the compiled encoder cannot be used (the caller falls back to torch)."""


@dataclass
class OnnxEncoder:
    """An onnxruntime session of one model's `HashNet.embed` for [N, C, size, size] patches
    already normalised to [0, 1] (invalid pixels 0)."""

    session: object
    path: Path
    shape: tuple[int, int, int]  # C, H, W the graph was exported for

    def embed(self, x01: np.ndarray) -> np.ndarray:
        """float32 [N, bits + latent] embeddings; onnxruntime releases the GIL meanwhile."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x01, np.float32)})[0]


def cache_paths(model) -> list[Path]:
    """Where the model's ONNX file may live, first choice first."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path(f"{model.path}.onnx"),
            base / "mrhash" / "encoders" / f"{model.fingerprint}.onnx"]


def load_encoder(model, threads: int) -> OnnxEncoder:
    """The model's compiled encoder, from a valid cache file or exported now;
    EncoderUnavailable when onnxruntime or onnx is missing or the export fails."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise EncoderUnavailable("onnxruntime is not installed") from None
    candidates = cache_paths(model)
    for path in candidates:
        encoder = _cached(path, model, threads)
        if encoder is not None:
            return encoder

    data = export(model)
    for path in candidates:
        try:
            atomic_write_bytes(path, data)
        except OSError:  # a read-only model folder: the user's cache folder next
            continue
        encoder = _cached(path, model, threads)
        if encoder is None:  # never left for the next run to try again
            path.unlink(missing_ok=True)
            raise EncoderUnavailable("the exported encoder does not agree with torch")
        return encoder
    raise EncoderUnavailable(f"the exported encoder cannot be stored (tried "
                             f"{', '.join(map(str, candidates))})")


def export(model) -> bytes:
    """The ONNX bytes of `model`'s embed graph, its metadata naming the model's fingerprint."""
    import torch

    try:
        import onnx
    except ImportError:
        raise EncoderUnavailable("onnx (needed to export the encoder) is not installed"
                                 ) from None
    import io

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
    for key, value in (("mrhash_fingerprint", model.fingerprint), ("mrhash_encoder", FORMAT)):
        graph.metadata_props.add(key=key, value=value)
    return graph.SerializeToString()


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


def _cached(path: Path, model, threads: int) -> OnnxEncoder | None:
    """The encoder of a cache file that is the model's and agrees with torch, else None (a
    missing, damaged, stale or foreign file, which the caller rebuilds)."""
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
    if (meta.get("mrhash_fingerprint"), meta.get("mrhash_encoder")) != (model.fingerprint,
                                                                        FORMAT):
        return None
    shape = (model.n_bands, model.patch_size, model.patch_size)
    encoder = OnnxEncoder(session, path, shape)
    batch = check_batch(model)
    try:
        difference = relative_difference(encoder.embed(batch), model.torch_embed(batch))
    except Exception:  # a graph of another shape
        return None
    if not difference <= CHECK_TOLERANCE:
        log.warning(f"{path}: the compiled encoder differs from torch by {difference:.2g}, "
                    "made again")
        return None
    return encoder
