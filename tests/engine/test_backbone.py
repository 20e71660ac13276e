"""The Lite0 backbone: real ImageNet weights, band mapping, cached front/tail split."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import skimage.data
import torch
from mrhash.model.backbone import Backbone, band_mapping


@pytest.fixture(scope="module")
def rgb_backbone() -> Backbone:
    torch.set_num_threads(2)
    return Backbone(3, input_size=224).eval()


def _image(name: str) -> torch.Tensor:
    img = getattr(skimage.data, name)()
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def test_weights_are_the_real_imagenet_ones(rgb_backbone: Backbone) -> None:
    with torch.no_grad():
        cat = int(rgb_backbone.imagenet_logits(_image("chelsea")).argmax())
        coffee = int(rgb_backbone.imagenet_logits(_image("coffee")).argmax())
    assert 281 <= cat <= 285  # the ImageNet cat classes (tabby, tiger cat, ..., Egyptian cat)
    assert coffee == 967  # espresso


def test_band_mapping_rules() -> None:
    assert torch.equal(band_mapping(1), torch.ones(3, 1))
    assert torch.equal(band_mapping(2), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    assert torch.equal(band_mapping(3), torch.eye(3))
    six = band_mapping(6)
    assert torch.allclose(six, torch.tensor([[.5, .5, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0],
                                             [0, 0, 0, 0, .5, .5]]))
    assert torch.allclose(band_mapping(13).sum(dim=1), torch.ones(3))  # means of band groups
    picked = band_mapping(13, rgb=(3, 2, 1))
    assert picked[0, 3] == picked[1, 2] == picked[2, 1] == 1 and picked.sum() == 3
    with pytest.raises(ValueError):
        band_mapping(4, rgb=(0, 1, 7))


def test_multiband_stem_passes_rgb_through(eurosat_dir) -> None:
    """A 13-band EuroSAT patch with its RGB bands named gives exactly the RGB features."""
    path = sorted((eurosat_dir / "Forest").glob("*.tif"))[0]
    with rasterio.open(path) as ds:
        x = torch.from_numpy(ds.read().astype(np.float32) / 3000.0).clamp(0, 1)[None]
    rgb = x[:, [3, 2, 1]]
    three = Backbone(3, input_size=64).eval()
    thirteen = Backbone(13, rgb=(3, 2, 1), input_size=64, net=three.net).eval()
    grey = Backbone(1, input_size=64, net=three.net).eval()
    with torch.no_grad():
        assert torch.allclose(thirteen(x), three(rgb), atol=1e-5)
        assert torch.allclose(grey(x[:, 7:8]), three(x[:, [7, 7, 7]]), atol=1e-5)


def test_front_tail_split_equals_forward(eurosat_dir) -> None:
    net = Backbone(3, input_size=64).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = net(x)
        for trainable in (0, 1, 3):
            cut = net.cut_for(trainable)
            assert torch.allclose(net.tail(net.front(x, cut), cut), full, atol=1e-5)
    assert full.shape == (2, 1280)
    assert net.tail_parameters(net.cut_for(0)) == []
    assert len(net.tail_parameters(net.cut_for(1))) > 0
