"""Spatial Patch Cross-Attention and the global-pool baseline: shapes, maps, conditioning, errors (table-driven)."""

from __future__ import annotations

import pytest
import torch

from lss.model.attention import (
    GlobalPoolAttention,
    SpatialPatchCrossAttention,
    build_attention,
    positional_encoding_2d,
)

CASES = [
    # (variant, C, T, E, heads, patch, B, P, H, W)
    ("spatial_patch", 32, 48, 64, 8, 1, 2, 5, 16, 24),
    ("spatial_patch", 32, 48, 64, 8, 2, 2, 8, 16, 24),
    ("spatial_patch", 16, 384, 32, 4, 1, 1, 3, 7, 7),
    ("global_pool", 32, 48, 64, 8, 1, 2, 5, 16, 24),
    ("global_pool", 16, 384, 32, 4, 2, 3, 8, 8, 8),
]


@pytest.mark.parametrize("variant, c, t, e, heads, patch, b, p, h, w", CASES)
def test_shapes_and_attention_maps(variant, c, t, e, heads, patch, b, p, h, w):
    module = build_attention(variant, visual_channels=c, text_dim=t, embed_dim=e, num_heads=heads, patch_size=patch)
    features, prompts = torch.randn(b, c, h, w), torch.randn(p, t)
    out = module(features, prompts)
    assert out.attended.shape == (b, p, e)
    assert out.attention.shape == (b, p, h // patch, w // patch)
    assert out.features.shape == features.shape
    torch.testing.assert_close(out.attention.sum(dim=(2, 3)), torch.ones(b, p))
    # Per-batch prompts give the same result as shared ones.
    again = module(features, prompts[None].expand(b, -1, -1))
    torch.testing.assert_close(again.attention, out.attention)


def test_untrained_gate_leaves_features_unchanged_then_conditions():
    module = SpatialPatchCrossAttention(visual_channels=8, text_dim=12, embed_dim=16, num_heads=4)
    features, prompts = torch.randn(2, 8, 6, 6), torch.randn(3, 12)
    torch.testing.assert_close(module(features, prompts).features, features)
    with torch.no_grad():
        module.gate.fill_(1.0)
    conditioned = module(features, prompts).features
    assert not torch.allclose(conditioned, features)
    # Text-directed: other prompts, other features.
    assert not torch.allclose(module(features, torch.randn(3, 12)).features, conditioned)


def test_spatial_attention_follows_content_and_global_pool_cannot():
    """A prompt whose projection matches one location's token attends there; the pooled baseline is uniform."""
    torch.manual_seed(0)
    module = SpatialPatchCrossAttention(visual_channels=4, text_dim=4, embed_dim=8, num_heads=1, condition=False)
    features = torch.zeros(1, 4, 8, 8)
    features[0, :, 5, 2] = 10.0  # one bright location
    with torch.no_grad():
        module.patchify.weight.zero_()
        module.patchify.weight[:4, :, 0, 0] = torch.eye(4)
        module.patchify.bias.zero_()
    # Make keys = tokens and queries along the bright direction: attention should peak at (5, 2).
    attention = module.prompt_to_patch
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.eye(8).repeat(3, 1) * 5)
        attention.in_proj_bias.zero_()
        module.text_proj[0].weight.zero_()
        module.text_proj[0].weight[:4, :4] = torch.eye(4)
        module.text_proj[0].bias.zero_()
    out = module(features, torch.ones(1, 4))
    peak = out.attention[0, 0].argmax()
    assert divmod(int(peak), 8) == (5, 2)
    pooled = GlobalPoolAttention(visual_channels=4, text_dim=4, embed_dim=8, num_heads=1)(features, torch.ones(1, 4))
    assert torch.allclose(pooled.attention, torch.full_like(pooled.attention, 1 / 64))


def test_gradients_reach_text_projection_and_features():
    module = SpatialPatchCrossAttention(visual_channels=8, text_dim=12, embed_dim=16, num_heads=4)
    with torch.no_grad():
        module.gate.fill_(0.5)
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = module(features, torch.randn(3, 12))
    (out.attended.sum() + out.features.sum()).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert module.text_proj[0].weight.grad.abs().sum() > 0


def test_positional_encoding_distinguishes_positions():
    code = positional_encoding_2d(4, 6, 16)
    assert code.shape == (24, 16)
    assert torch.unique(code, dim=0).shape[0] == 24
    with pytest.raises(ValueError, match="multiple of 4"):
        positional_encoding_2d(2, 2, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(visual_channels=0, text_dim=4), "visual_channels"),
        (dict(visual_channels=4, text_dim=4, embed_dim=30, num_heads=8), "multiple of num_heads"),
        (dict(visual_channels=4, text_dim=4, embed_dim=6, num_heads=3), "multiple of 4"),
        (dict(visual_channels=4, text_dim=4, dropout=1.0), "dropout"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpatialPatchCrossAttention(**kwargs)


@pytest.mark.parametrize(
    "features, prompts, message",
    [
        (torch.randn(2, 5, 8, 8), torch.randn(3, 12), "features must be"),
        (torch.randn(2, 8, 8), torch.randn(3, 12), "features must be"),
        (torch.randn(2, 8, 7, 8), torch.randn(3, 12), "divisible"),
        (torch.randn(2, 8, 8, 8), torch.randn(3, 10), "prompts must be"),
        (torch.randn(2, 8, 8, 8), torch.randn(3, 3, 12), "prompts must be"),
    ],
)
def test_bad_inputs(features, prompts, message):
    module = SpatialPatchCrossAttention(visual_channels=8, text_dim=12, embed_dim=16, num_heads=4, patch_size=2)
    with pytest.raises(ValueError, match=message):
        module(features, prompts)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("cross_fade", visual_channels=4, text_dim=4)
