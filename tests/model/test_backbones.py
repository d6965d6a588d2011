"""MONAI backbones by name, with the conditioning hook at 1/8 scale."""

from __future__ import annotations

import pytest
import torch

from lss.model.backbones import BACKBONES, build_backbone


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("in_channels, size", [(3, (128, 192)), (3, (112, 112)), (1, (64, 64))])
def test_logits_shape_and_hook_scale(name, in_channels, size):
    net = build_backbone(name, in_channels, 4, base_channels=8)
    seen = {}

    def condition(features):
        seen["shape"] = tuple(features.shape)
        return features

    logits = net(torch.randn(2, in_channels, *size), condition)
    assert logits.shape == (2, 4, *size)
    stride = net.attention_stride
    assert seen["shape"] == (2, net.attention_channels, size[0] // stride, size[1] // stride)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_hook_changes_the_output(name):
    torch.manual_seed(0)
    net = build_backbone(name, 3, 4, base_channels=8).eval()
    x = torch.randn(1, 3, 64, 64)
    plain = net(x)
    torch.testing.assert_close(net(x, lambda f: f), plain)
    assert not torch.allclose(net(x, lambda f: f + 1.0), plain)


@pytest.mark.parametrize(
    "args, x, message",
    [
        (("unet", 3, 4), torch.randn(1, 2, 64, 64), "expected input"),
        (("unet", 3, 4), torch.randn(1, 3, 60, 64), "multiples of 16"),
        (("segresnet", 3, 4), torch.randn(1, 3, 36, 64), "multiples of 8"),
    ],
)
def test_bad_input(args, x, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(*args, base_channels=8)(x)


def test_unknown_and_bad_options():
    with pytest.raises(ValueError, match="unknown vision encoder"):
        build_backbone("resnet9000", 3, 4)
    with pytest.raises(ValueError, match="base_channels"):
        build_backbone("unet", 3, 4, base_channels=0)
