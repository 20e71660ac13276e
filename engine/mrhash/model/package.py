"""The model package: ONE safetensors file holding the hash network's weights, with the JSON
config in the file's metadata (key "mrhash"). Loading never unpickles anything.

Config keys: format_version, mrhash_version, primary (SourceSpec dict), sources ([{name,
bands}], primary first), auxiliary (specs used in training), bands, rgb, patch_size,
input_size, stats (primary BandStats dict), source_stats, bits, backbone, params, training,
latent ({dim, hidden} of the autoencoder's encoder kept with the hash network; format 2 on,
absent in format 1, whose packages still load and give codes-only embeddings).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from mrhash_contract.choices import BITS

from mrhash import __version__
from mrhash.errors import BadInput, ModelFormatError
from mrhash.fileio import atomic_write_bytes
from mrhash.log import log
from mrhash.model.onnx_encoder import ENCODER_CHOICES, EncoderUnavailable, load_encoder
from mrhash.raster.normalize import BandStats
from mrhash.raster.sources import SourceSpec

FORMAT_VERSION = 2  # 2: the autoencoder's encoder (config "latent", weights "latent.*")
METADATA_KEY = "mrhash"
ENCODE_BATCH = 64
MAX_LATENT = 4096    # latent dim / hidden width (16 and 256 are used; beyond: a damaged file)
MAX_BANDS = 1000     # primary bands of a model


def save_model(path: str | Path, net, config: dict[str, Any]) -> str:
    """Write the package atomically; returns its fingerprint (sha256 of the file bytes, i.e.
    of the weights and the config together)."""
    # safetensors.torch imports torch: only where a package is read or written
    from safetensors.torch import save


    full = {"format_version": FORMAT_VERSION, "mrhash_version": __version__, **config}
    full.pop("latent", None)  # what the weights hold decides, never a copied config
    if net.latent is not None:  # mlp([features, hidden, dim]): Linear, ReLU, Linear
        full["latent"] = {"dim": net.latent[-1].out_features,
                          "hidden": net.latent[0].out_features}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(full, sort_keys=True)})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()



def pack_codes(relaxed: np.ndarray) -> np.ndarray:
    """Relaxed codes [N, bits] -> packed uint8 codes [N, bits // 8] (bit = value > 0)."""
    return np.packbits(np.asarray(relaxed) > 0, axis=1)


class HashModel:
    """A trained model ready to encode primary patches (see ARCHITECTURE.md)."""

    def __init__(self, path: str, config: dict[str, Any], net, fingerprint: str):
        self.path = path
        self.config = config
        self.fingerprint = fingerprint
        self.bits: int = int(config["bits"])
        self.patch_size: int = int(config["patch_size"])
        self.primary = SourceSpec.from_dict(config["primary"])
        self.n_bands: int = int(config["bands"])
        self.latent_dim: int = int((config.get("latent") or {}).get("dim", 0))
        self.stats = BandStats.from_dict(config["stats"])
        self._net = net
        self._device = None
        self.encoder = "auto"  # onnx_encoder.ENCODER_CHOICES: which runs `embed` on a CPU
        self._compiled = None  # the OnnxEncoder once loaded; False: torch (unavailable)
        self._compiled_lock = threading.Lock()

    def to(self, device) -> HashModel:
        """Run encodes on `device` (a torch.device or 'cpu' / 'cuda')."""
        # torch takes ~1 s to import: only where a network runs
        import torch

        self._device = torch.device(device)
        self._net.to(self._device)
        return self

    def use_encoder(self, name: str) -> HashModel:
        """Which encoder runs on a CPU: `auto` (the compiled ONNX one, torch where onnxruntime
        is missing), `onnx` (that one or a BadInput saying why not), `onnx-int8` (its int8
        form: faster, codes not torch's to the bit; opt-in only) or `torch`. CUDA always
        runs torch."""
        if name not in ENCODER_CHOICES:
            raise BadInput(f"unknown encoder {name!r}: use one of {', '.join(ENCODER_CHOICES)}")
        self.encoder = name
        self._compiled = None
        return self

    def with_encoder(self, name: str) -> HashModel:
        """This model encoding with `name` (see `use_encoder`), its network shared, not
        copied: what an index of another precision than the worker's encoder queries with."""
        if name == self.encoder:
            return self
        twin = copy.copy(self)
        twin._compiled_lock = threading.Lock()
        return twin.use_encoder(name)

    @property
    def encoder_used(self) -> str:
        """`onnx`, `onnx-int8` or `torch`: what encodes this model's next batch (loads the
        compiled encoder when it is the one)."""
        compiled = self._compiled_encoder()
        if compiled is None:
            return "torch"
        return "onnx-int8" if compiled.precision == "int8" else "onnx"

    def torch_net(self):
        """The torch network (ONNX export reads it)."""
        return self._net

    def torch_embed(self, x01: np.ndarray) -> np.ndarray:
        """Torch's embeddings of normalised [N, C, H, W] patches (see `embed`)."""
        # torch takes ~1 s to import: only where a network runs
        import torch

        device = self._device or torch.device("cpu")
        with torch.no_grad():
            return self._net.embed(torch.from_numpy(x01).to(device)).cpu().numpy()

    def _compiled_encoder(self):
        """The OnnxEncoder that runs on this CPU, or None where torch encodes (CUDA, the
        `torch` choice, or onnxruntime unavailable: said once in the log)."""
        if self.encoder == "torch" or (self._device is not None and self._device.type != "cpu"):
            return None
        with self._compiled_lock:  # the worker's query and job threads share one model
            if self._compiled is None:
                # torch takes ~1 s to import: only where a network runs
                import torch


                try:
                    precision = "int8" if self.encoder == "onnx-int8" else "fp32"
                    self._compiled = load_encoder(self, torch.get_num_threads(), precision)
                except EncoderUnavailable as error:
                    if self.encoder != "auto":  # asked for by name: never silently torch
                        raise BadInput(f"the compiled encoder cannot be used: {error} "
                                       "(--encoder torch runs torch)", path=self.path
                                       ) from None
                    log.warning(f"compiled CPU encoder unavailable ({error}): encoding with "
                                "torch, about 3 times slower")
                    self._compiled = False
        return self._compiled or None

    def embed(self, patches: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Raw float32 [N, C, H, W] primary patches (and their bool [N, H, W] valid masks) ->
        embeddings [N, bits + latent_dim]: the relaxed code in (-1, 1), then the autoencoder's
        latent (embeddings.py). The one way a patch becomes a code, in training
        (train.normalise), evaluation, indexing and queries alike: normalise with the model's
        band statistics, then invalid pixels -> 0, whatever their raw fill value. On a CPU the
        compiled encoder runs the network (onnx_encoder.py; see `use_encoder`)."""
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 4 or patches.shape[1] != self.n_bands:
            raise BadInput(f"patches must be [N, {self.n_bands}, H, W] (the model's primary "
                           f"bands), got shape {patches.shape}")
        if valid is not None and np.shape(valid) != (patches.shape[0], *patches.shape[2:]):
            raise BadInput(f"valid masks must be [N, H, W] like the patches, got "
                           f"{np.shape(valid)}")
        out = np.empty((len(patches), self.bits + self.latent_dim), dtype=np.float32)
        compiled = self._compiled_encoder()
        run = (compiled.embed if compiled is not None and patches.shape[1:] == compiled.shape
               else self.torch_embed)
        for start in range(0, len(patches), ENCODE_BATCH):
            batch = patches[start:start + ENCODE_BATCH]
            x01 = self.stats.apply(batch)
            if valid is not None:
                x01 *= valid[start:start + ENCODE_BATCH, None]
            out[start:start + len(batch)] = run(x01)
        return out

    def encode_float(self, patches: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Relaxed codes [N, bits] of patches (see `embed`)."""
        return self.embed(patches, valid)[:, :self.bits]

    def encode(self, patches: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Raw float32 [N, C, H, W] primary patches (+ valid masks, see `encode_float`) ->
        packed uint8 codes [N, bits // 8] (bit = relaxed code > 0, np.packbits order)."""
        return pack_codes(self.encode_float(patches, valid))


def package_bytes(path: str | Path) -> bytes:
    """The bytes of a package file (what `parse_package` reads, and what a Dask build sends
    its workers); ModelFormatError for a folder, a pipe or an unreadable file."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError("a model package is one .safetensors file, not a folder",
                               path=str(path))
    if path.exists() and not path.is_file():  # a FIFO or a device would block the read
        raise ModelFormatError("not a regular file (a pipe, socket or device)", path=str(path))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelFormatError(f"cannot read the model file ({error.strerror})",
                               path=str(path)) from error
    return data


def read_package(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(config, tensors, fingerprint) of a package file; ModelFormatError on anything wrong."""
    return parse_package(package_bytes(path), str(path))


def parse_package(data: bytes, path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(config, tensors, fingerprint) of a package's bytes (`path` names it in errors)."""
    # safetensors.torch imports torch: only where a package is read or written
    from safetensors.torch import load

    # the config is read and bounded before any tensor is made: a header asking for a 65536
    # latent or a 100000 px patch is refused without allocating it
    config = _config(data, path)
    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises several types for damaged files
        raise ModelFormatError(f"not a readable MrHash model package ({error})",
                               path=str(path)) from error
    broken = [name for name, tensor in tensors.items()
              if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if broken:  # NaN/inf weights would give all-zero codes without a word
        raise ModelFormatError(f"weights with NaN or infinite values ({', '.join(broken[:3])}"
                               f"{'…' if len(broken) > 3 else ''}): retrain the model",
                               path=str(path))
    return config, tensors, hashlib.sha256(data).hexdigest()


def _config(data: bytes, path: str) -> dict[str, Any]:
    """The package's MrHash config, checked (version, keys, bounded sizes); ModelFormatError
    naming the file for a malformed header or config."""
    try:
        text = _metadata(data).get(METADATA_KEY, "null")
        config = json.loads(text) if isinstance(text, str) else None
    except (ValueError, AttributeError, RecursionError) as error:
        raise ModelFormatError(f"not a readable MrHash model package (its header is not "
                               f"JSON: {error})", path=str(path)) from None
    if not isinstance(config, dict):
        raise ModelFormatError("safetensors file without MrHash model config (metadata "
                               f"'{METADATA_KEY}' missing)", path=str(path))
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFormatError(f"model format version {version!r} is not supported by mrhash "
                               f"{__version__} (reads version 1..{FORMAT_VERSION}); "
                               "update mrhash or retrain", path=str(path))
    missing = [k for k in ("bits", "patch_size", "primary", "bands", "stats", "input_size")
               if k not in config]
    if missing:
        raise ModelFormatError(f"model config lacks {', '.join(missing)}", path=str(path))
    if not isinstance(config["bits"], int) or config["bits"] not in BITS:
        raise ModelFormatError(f"model config bits={config['bits']!r} is not one of {BITS}",
                               path=str(path))
    checks = [(key, config[key], low, high) for key, low, high in (
        ("patch_size", 4, 4096), ("input_size", 32, 1024), ("bands", 1, MAX_BANDS))]
    latent = config.get("latent")
    if latent is not None:
        if version < 2:
            raise ModelFormatError("model config of format 1 with a latent (format 2 on)",
                                   path=str(path))
        if not isinstance(latent, dict) or not {"dim", "hidden"} <= set(latent):
            raise ModelFormatError(f"model config latent={latent!r} is not {{dim, hidden}}",
                                   path=str(path))
        checks += [(f"latent.{key}", latent[key], 1, MAX_LATENT) for key in ("dim", "hidden")]
    for key, value, low, high in checks:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ModelFormatError(f"model config {key}={value!r} is out of range "
                                   f"({low}..{high})", path=str(path))
    return config


def _metadata(data: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors byte string (its JSON header)."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError(f"a header of {size} bytes in a file of {len(data)}")
    header = json.loads(data[8:8 + size])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


class ModelCard:
    """What a package says of itself, read without torch and without its weights: its config
    (bands, RGB, normalisation stats) and fingerprint. Enough for thumbnails, the display
    bands and the fingerprint check, so a query by tile never imports torch."""

    def __init__(self, path: str, config: dict[str, Any], fingerprint: str):
        self.path = path
        self.config = config
        self.fingerprint = fingerprint
        self.primary = SourceSpec.from_dict(config["primary"])
        self.stats = BandStats.from_dict(config["stats"])


def read_card(path: str | Path) -> ModelCard:
    """The card of a package file (its config checked as `load_model` checks it)."""
    data = package_bytes(path)
    config = _config(data, str(path))
    try:
        return ModelCard(str(path), config, hashlib.sha256(data).hexdigest())
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"invalid model config ({error})", path=str(path)) from error


def load_model(path: str | Path) -> HashModel:
    """Load a package written by `save_model` (never unpickles)."""
    return model_from_bytes(package_bytes(path), str(path))


def model_from_bytes(data: bytes, path: str) -> HashModel:
    """The model of a package's bytes; `path` is where it came from (errors, `model.path`)."""
    # torch networks: imported only when a model is built
    from mrhash.model.backbone import DEFAULT_BACKBONE, Backbone, backbone_spec
    from mrhash.model.networks import HashNet, mlp

    config, tensors, fingerprint = parse_package(data, path)
    rgb = config.get("rgb")
    try:
        backbone_spec(str(config.get("backbone") or DEFAULT_BACKBONE))
    except BadInput as error:
        raise ModelFormatError(f"the model was trained with a backbone this engine does not "
                               f"have ({error.message}); update the engine", path=str(path)
                               ) from None
    try:
        backbone = Backbone(int(config["bands"]), tuple(rgb) if rgb else None,
                            int(config["input_size"]), pretrained=False,
                            name=str(config.get("backbone") or DEFAULT_BACKBONE))
        latent = config.get("latent")
        net = HashNet(backbone, int(config["bits"]),
                      mlp([backbone.feature_dim, latent["hidden"], latent["dim"]]) if latent
                      else None)
        net.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ModelFormatError(f"weights do not match the model config ({error})"[:500],
                               path=str(path)) from error
    try:
        model = HashModel(str(path), config, net.eval(), fingerprint)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"invalid model config ({error})", path=str(path)) from error
    return model
