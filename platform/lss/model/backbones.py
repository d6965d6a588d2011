"""Vision backbones from MONAI networks, chosen by name, with a hook where text conditions the features.

A backbone is a 2D encoder-decoder over 2.5D inputs (a slice plus its neighbours as channels). ``forward`` takes an
optional ``condition`` callable: the backbone calls it on its feature map at ``attention_stride`` (the scale the
Spatial Patch Cross-Attention works at) and carries on encoding and decoding with what it returns, so the prompts
steer the segmentation. New backbones register with ``@register_backbone("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Backbone", "BasicUNetBackbone", "SegResNetBackbone", "BACKBONES", "register_backbone", "build_backbone"]

Condition = Callable[[torch.Tensor], torch.Tensor]

BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str):
    def wrap(cls):
        BACKBONES[name] = cls
        return cls

    return wrap


class Backbone(nn.Module):
    """Base class: a 2D segmentation network with a conditioning hook.

    Attributes:
        attention_channels: channels of the feature map handed to ``condition``.
        attention_stride: its down-sampling factor relative to the input.
        divisor: input height and width must be multiples of this.
    """

    attention_channels: int
    attention_stride: int
    divisor: int

    def __init__(self, in_channels: int, out_channels: int, base_channels: int) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("base_channels", base_channels)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}.")
        if x.shape[2] % self.divisor or x.shape[3] % self.divisor:
            raise ValueError(f"input height and width must be multiples of {self.divisor}, got {tuple(x.shape[2:])}.")

    def forward(self, x: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@register_backbone("unet")
class BasicUNetBackbone(Backbone):
    """MONAI ``BasicUNet`` (2D): four down-sampling stages; text conditions the 1/8-scale features.

    Args:
        in_channels: input channels (2.5D: slices).
        out_channels: segmentation classes.
        base_channels: width of the first stage; stages are (b, b, 2b, 4b, 8b), decoder output b.
    """

    attention_stride = 8
    divisor = 16

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16) -> None:
        super().__init__(in_channels, out_channels, base_channels)
        from monai.networks.nets import BasicUNet

        b = int(base_channels)
        self.net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                             features=(b, b, 2 * b, 4 * b, 8 * b, b))
        self.attention_channels = 4 * b

    def forward(self, x: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(x)
        net = self.net
        x0 = net.conv_0(x)
        x1 = net.down_1(x0)
        x2 = net.down_2(x1)
        x3 = net.down_3(x2)
        if condition is not None:
            x3 = condition(x3)
        x4 = net.down_4(x3)
        u4 = net.upcat_4(x4, x3)
        u3 = net.upcat_3(u4, x2)
        u2 = net.upcat_2(u3, x1)
        u1 = net.upcat_1(u2, x0)
        return net.final_conv(u1)


@register_backbone("segresnet")
class SegResNetBackbone(Backbone):
    """MONAI ``SegResNet`` (2D): residual blocks (1, 2, 2, 4) down, text conditions the 1/8-scale bottleneck.

    Args:
        in_channels: input channels (2.5D: slices).
        out_channels: segmentation classes.
        base_channels: ``init_filters``; the bottleneck has 8x as many channels.
    """

    attention_stride = 8
    divisor = 8

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16) -> None:
        super().__init__(in_channels, out_channels, base_channels)
        from monai.networks.nets import SegResNet

        b = int(base_channels)
        groups = min(8, b)
        self.net = SegResNet(spatial_dims=2, init_filters=b, in_channels=in_channels, out_channels=out_channels,
                             blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), num_groups=groups,
                             norm=("GROUP", {"num_groups": groups}))
        self.attention_channels = 8 * b

    def forward(self, x: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(x)
        bottleneck, down_x = self.net.encode(x)
        if condition is not None:
            bottleneck = condition(bottleneck)
            down_x[-1] = bottleneck
        down_x.reverse()
        return self.net.decode(bottleneck, down_x)


def build_backbone(name: str, in_channels: int, out_channels: int, base_channels: int = 16) -> Backbone:
    """A registered backbone by name ("unet", "segresnet").

    Raises:
        ValueError: for an unknown name.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown vision encoder {name!r}; expected one of {sorted(BACKBONES)}.")
    return BACKBONES[name](in_channels, out_channels, base_channels)
