"""The whole model: shapes for every encoder/attention choice, missing axial data, export round trip, errors."""

from __future__ import annotations

import pytest
import torch

from lss.anatomy import LEVELS, Structure
from lss.config import ModelConfig
from lss.model import build_model, load_model, save_model
from lss.model.text import TextEncoder

B, L = 2, len(LEVELS)


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder("random-small")


def _inputs(axial_slices=3):
    torch.manual_seed(0)
    return torch.randn(B, 3, 64, 96), torch.randn(B, L, axial_slices, 48, 48)


@pytest.mark.parametrize("encoder", ["unet", "segresnet"])
@pytest.mark.parametrize("attention", ["spatial_patch", "global_pool"])
def test_output_shapes(text_encoder, encoder, attention):
    config = ModelConfig(vision_encoder=encoder, attention=attention, base_channels=8, attention_dim=32,
                         text_encoder="random-small")
    model = build_model(config, text_encoder=text_encoder)
    sagittal, axial = _inputs()
    present = torch.ones(B, L, dtype=torch.bool)
    present[0, 3] = False
    out = model(sagittal, axial, present)
    k, p = len(Structure), len(model.prompts)
    assert out.sagittal_logits.shape == (B, k, 64, 96)
    assert out.axial_logits.shape == (B, L, k, 48, 48)
    assert out.severity_logits.shape == (B, L, 3) and out.regression.shape == (B, L, 2)
    assert out.sagittal_attention.shape == (B, p, 8, 12)
    assert out.level_attention(model.prompts).shape == (B, L, 8, 12)
    assert out.axial_attention.shape == (B, L, 6, 6)
    assert out.canal_area_mm2[0, 3] == 0 and (out.canal_area_mm2[1] > 0).all()
    loss = out.severity_logits.sum() + out.sagittal_logits.mean() + out.axial_logits.mean()
    loss.backward()
    assert model.head.classify.weight.grad.abs().sum() > 0


def test_sagittal_only_study(text_encoder):
    model = build_model(ModelConfig(base_channels=8, attention_dim=32), text_encoder=text_encoder)
    out = model(_inputs()[0])
    assert out.axial_logits is None and out.axial_attention is None
    assert (out.canal_area_mm2 == 0).all() and out.severity_logits.shape == (B, L, 3)


def test_frozen_text_encoder_is_embedded_once_and_not_kept(text_encoder):
    model = build_model(ModelConfig(base_channels=8, attention_dim=32), text_encoder=text_encoder)
    assert model.text_encoder is None and model.prompt_embeddings.shape == (len(model.prompts), text_encoder.dim)
    assert not any("text_encoder" in key for key in model.state_dict())
    trainable = TextEncoder("random-small", freeze=False)
    model = build_model(ModelConfig(base_channels=8, attention_dim=32, freeze_text_encoder=False),
                        text_encoder=trainable)
    out = model(_inputs()[0])
    out.severity_logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.parameters())


def test_level_prompts_change_the_prediction(text_encoder):
    """The prompts are inputs: other prompt embeddings, other severity logits (the model reads the text)."""
    model = build_model(ModelConfig(base_channels=8, attention_dim=32), text_encoder=text_encoder).eval()
    sagittal, axial = _inputs()
    with torch.no_grad():
        before = model(sagittal, axial).severity_logits
        model.prompt_embeddings.copy_(torch.randn_like(model.prompt_embeddings))
        after = model(sagittal, axial).severity_logits
    assert not torch.allclose(before, after)


def test_export_round_trip(text_encoder, tmp_path):
    model = build_model(ModelConfig(vision_encoder="segresnet", base_channels=8, attention_dim=32),
                        text_encoder=text_encoder).eval()
    path = save_model(model, tmp_path / "model.pt", extra={"epoch": 3})
    loaded = load_model(path)
    sagittal, axial = _inputs()
    with torch.no_grad():
        a, b = model(sagittal, axial), loaded(sagittal, axial)
    for key, value in a.as_dict().items():
        if value is not None:
            torch.testing.assert_close(getattr(b, key), value)
    assert loaded.prompts == model.prompts and loaded.config == model.config
    payload = torch.load(path, weights_only=False)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format"):
        load_model(tmp_path / "future.pt")


@pytest.mark.parametrize(
    "sagittal, axial, present, message",
    [
        (torch.randn(2, 64, 96), None, None, "sagittal must be"),
        (torch.randn(2, 3, 64, 96), torch.randn(2, 4, 3, 48, 48), None, "axial must be"),
        (torch.randn(2, 3, 64, 96), torch.randn(2, L, 5, 48, 48), None, "axial must be"),
        (torch.randn(2, 3, 64, 96), torch.randn(2, L, 3, 48, 48), torch.ones(2, 3, dtype=torch.bool), "axial_present"),
        (torch.randn(2, 2, 64, 96), None, None, "expected input"),
        (torch.randn(2, 3, 60, 96), None, None, "multiples of 16"),
    ],
)
def test_bad_inputs(text_encoder, sagittal, axial, present, message):
    model = build_model(ModelConfig(base_channels=8, attention_dim=32), text_encoder=text_encoder)
    with pytest.raises(ValueError, match=message):
        model(sagittal, axial, present)


def test_construction_errors(text_encoder):
    from lss.model.vlm import LSSModel

    with pytest.raises(ValueError, match="exactly one"):
        LSSModel(ModelConfig())
    with pytest.raises(ValueError, match="prompt_embeddings must be"):
        LSSModel(ModelConfig(), prompt_embeddings=torch.randn(3, 16))
    with pytest.raises(ValueError, match="axial_pixel_area"):
        LSSModel(ModelConfig(), axial_pixel_area_mm2=0, text_encoder=text_encoder)
