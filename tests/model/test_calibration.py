"""lss.model.calibration: temperatures recovered from synthetic logits, the abstention rule, calibrated
probabilities per input path, and the calibration saved and loaded with a real (small) model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lss.metrics import severity_metrics
from lss.model.calibration import (
    TEMPERATURE_RANGE,
    SeverityCalibration,
    choose_abstain_threshold,
    fit_calibration,
    fit_temperature,
    selective_metrics,
)


def _sampled(n: int, temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets drawn from softmax(logits / temperature): the true temperature is known."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=generator) * 3.0
    targets = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator).squeeze(1)
    return logits, targets


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(temperature):
    logits, targets = _sampled(6000, temperature, seed=int(temperature * 10))
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(temperature, rel=0.1)
    # The fitted temperature is the NLL minimum: its neighbours do worse.
    nll = [float(torch.nn.functional.cross_entropy(logits / t, targets)) for t in (fitted * 0.9, fitted, fitted * 1.1)]
    assert nll[1] <= nll[0] and nll[1] <= nll[2]


def test_fit_temperature_edge_cases():
    logits, targets = _sampled(200, 2.0, seed=1)
    unknown = targets.clone()
    unknown[::2] = -1  # unknown levels are left out, not counted as errors
    assert fit_temperature(logits, unknown) == pytest.approx(fit_temperature(logits[1::2], targets[1::2]))
    assert fit_temperature(logits[:5], targets[:5]) == 1.0  # too few levels: nothing fitted
    assert fit_temperature(logits[:5], targets[:5], min_levels=3) != 1.0
    separable = torch.eye(3).repeat(10, 1) * 5.0
    assert fit_temperature(separable, torch.arange(3).repeat(10)) == pytest.approx(TEMPERATURE_RANGE[0])
    with pytest.raises(ValueError, match="one severity per logit row"):
        fit_temperature(logits, targets[:-1])
    with pytest.raises(ValueError, match=r"-1 \(unknown\) or 0..2"):
        fit_temperature(logits, torch.full((200,), 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_temperature(torch.full((20, 3), float("nan")), torch.zeros(20, dtype=torch.long))


def test_abstain_threshold_rule():
    # 10 levels by confidence; stating the k most confident gives accuracies 1, 1, 1, .75, .8, .83, .71, .63, .56, .5
    confidence = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.45, 0.4])
    correct = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    rule = dict(min_levels=1)
    # Smallest threshold whose selective accuracy reaches the target, coverage allowing.
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.8, min_coverage=0.0, **rule) == 0.7
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.84, min_coverage=0.0, **rule) == 0.85
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.95, min_coverage=0.0, **rule) == 0.85
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.5, min_coverage=0.0, **rule) == 0.0
    # At least 60% must stay stated: the target 0.95 is out of reach, the best accuracy allowed is 5/6 at 0.7.
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.95, min_coverage=0.6, **rule) == 0.7
    threshold = choose_abstain_threshold(confidence, correct, target_accuracy=0.8, min_coverage=0.0, **rule)
    stated = confidence >= threshold
    assert correct[stated].mean() >= 0.8 and stated.mean() == 0.6
    # Too few levels: no abstention.
    assert choose_abstain_threshold(confidence, correct, target_accuracy=0.95) == 0.0
    # Ties are stated together.
    assert choose_abstain_threshold([0.9, 0.9, 0.5], [True, False, False], target_accuracy=0.5, min_coverage=0.0,
                                    **rule) == 0.9
    with pytest.raises(ValueError, match="must both be"):
        choose_abstain_threshold(confidence, correct[:-1])
    with pytest.raises(ValueError, match="probabilities in"):
        choose_abstain_threshold(confidence * 2, correct)
    with pytest.raises(ValueError, match="target_accuracy"):
        choose_abstain_threshold(confidence, correct, target_accuracy=0.0)


def test_probabilities_use_the_temperature_of_each_path():
    calibration = SeverityCalibration(temperature_axial=0.5, temperature_sagittal=4.0)
    logits = torch.randn(2, 5, 3)
    present = torch.tensor([[True, True, False, True, False], [False] * 5])
    probs = calibration.probabilities(logits, present)
    expected = torch.where(present[..., None], torch.softmax(logits / 0.5, -1), torch.softmax(logits / 4.0, -1))
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(calibration.probabilities(logits), torch.softmax(logits / 4.0, -1), atol=1e-6)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))  # a temperature never changes the grade
    assert torch.allclose(SeverityCalibration().probabilities(logits, present), torch.softmax(logits, -1))
    withheld = SeverityCalibration(abstain_threshold=0.6).abstains(probs)
    assert torch.equal(withheld, probs.max(-1).values < 0.6)
    with pytest.raises(ValueError, match="axial_present must be"):
        calibration.probabilities(logits, present[:, :3])
    with pytest.raises(ValueError, match=r"logits must be \(\.\.\., 3\)"):
        calibration.probabilities(torch.randn(2, 5, 4))


@pytest.mark.parametrize("changes, message", [
    ({"temperature_axial": 0.0}, "temperature_axial must be a positive"),
    ({"temperature_sagittal": float("inf")}, "temperature_sagittal must be a positive"),
    ({"abstain_threshold": 1.5}, r"abstain_threshold must be in \[0, 1\]"),
    ({"n_axial": -1}, "n_axial must be >= 0"),
])
def test_invalid_calibration(changes, message):
    with pytest.raises(ValueError, match=message):
        SeverityCalibration(**changes)


def test_as_dict_round_trip():
    calibration = SeverityCalibration(temperature_axial=1.3, temperature_sagittal=2.1, abstain_threshold=0.55,
                                      fitted=True, n_axial=40, ece_axial_before=float("nan"), note="x")
    data = calibration.as_dict()
    assert data["ece_axial_before"] is None  # JSON-safe
    assert SeverityCalibration.from_dict(data) == calibration
    assert SeverityCalibration.from_dict({**data, "from_the_future": 1}) == calibration
    assert SeverityCalibration.from_dict(None).is_identity and SeverityCalibration.from_dict({}).is_identity
    assert not calibration.is_identity
    assert math.isnan(calibration.metrics()["ece_axial_before"]) and calibration.metrics()["fitted"] == 1.0


def test_fit_calibration_fits_each_path_and_the_threshold():
    axial_logits, axial_targets = _sampled(3000, 0.7, seed=3)
    sagittal_logits, sagittal_targets = _sampled(3000, 2.0, seed=4)
    logits = torch.cat([axial_logits, sagittal_logits])
    targets = torch.cat([axial_targets, sagittal_targets])
    path = torch.cat([torch.ones(3000, dtype=torch.bool), torch.zeros(3000, dtype=torch.bool)])
    calibration = fit_calibration(logits, targets, path, target_accuracy=0.85, min_coverage=0.3)
    assert calibration.fitted and calibration.note == ""
    assert (calibration.n_axial, calibration.n_sagittal) == (3000, 3000)
    assert calibration.temperature_axial == pytest.approx(0.7, rel=0.1)
    assert calibration.temperature_sagittal == pytest.approx(2.0, rel=0.1)
    assert calibration.ece_sagittal_after < calibration.ece_sagittal_before
    assert calibration.ece_axial_after < calibration.ece_axial_before
    assert calibration.ece_axial_after < 0.05 and calibration.ece_sagittal_after < 0.05
    # The threshold meets the rule on the pooled calibrated predictions, and the stored numbers are theirs.
    probs = calibration.probabilities(logits.float(), path)
    selective = selective_metrics(probs.numpy(), targets.numpy(), calibration.abstain_threshold)
    assert selective["selective_accuracy"] >= 0.85 and selective["coverage"] >= 0.3
    assert calibration.coverage == pytest.approx(selective["coverage"])
    assert calibration.selective_accuracy == pytest.approx(selective["selective_accuracy"])
    assert calibration.ece_axial_after == pytest.approx(
        severity_metrics(probs[:3000].numpy(), axial_targets.numpy())["ece"], abs=1e-6)


def test_fit_calibration_without_known_severity_or_with_few_levels_is_the_identity():
    logits = torch.randn(8, 3)
    empty = fit_calibration(logits, torch.full((8,), -1), torch.ones(8, dtype=torch.bool))
    assert empty.is_identity and not empty.fitted and "no validation level" in empty.note
    few = fit_calibration(logits, torch.zeros(8, dtype=torch.long), torch.tensor([True, False] * 4))
    assert few.is_identity and few.fitted and "temperature not fitted" in few.note and "no abstention" in few.note
    assert few.coverage == 1.0
    # (B, L) inputs work as well as (N,).
    grid = fit_calibration(logits.reshape(2, 4, 3), torch.zeros(2, 4, dtype=torch.long),
                           torch.ones(2, 4, dtype=torch.bool))
    assert grid.n_axial == 8 and grid.n_sagittal == 0
    with pytest.raises(ValueError, match="axial_present must give the path"):
        fit_calibration(logits, torch.zeros(8, dtype=torch.long), torch.ones(7, dtype=torch.bool))


def test_selective_metrics():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    targets = np.array([0, 2, 0, 2, -1])
    out = selective_metrics(probs, targets, 0.6)
    assert out["n"] == 4 and out["n_stated"] == 3 and out["coverage"] == 0.75
    assert out["selective_accuracy"] == pytest.approx(2 / 3)
    assert out["selective_balanced_accuracy"] == pytest.approx(0.75)  # recall 1 (normal), 1/2 (severe)
    everything = selective_metrics(probs, targets, 0.0)
    assert everything["coverage"] == 1.0
    assert everything["selective_accuracy"] == pytest.approx(severity_metrics(probs, targets)["accuracy"])
    nothing = selective_metrics(probs, targets, 1.0)
    assert nothing["n_stated"] == 0 and math.isnan(nothing["selective_accuracy"])
    assert math.isnan(selective_metrics(probs, np.full(5, -1), 0.5)["coverage"])
    with pytest.raises(ValueError, match="threshold must be in"):
        selective_metrics(probs, targets, -0.1)


# ---------------------------------------------------------------------------------------------------- saved model
@pytest.fixture(scope="module")
def tiny_model():
    from lss.config import ModelConfig
    from lss.model import build_model
    from lss.model.text import TextEncoder

    torch.manual_seed(0)
    return build_model(ModelConfig(base_channels=8, attention_dim=32, text_encoder="random-small"),
                       text_encoder=TextEncoder("random-small"))


def test_a_new_model_has_the_identity_calibration(tiny_model):
    assert isinstance(tiny_model.calibration, SeverityCalibration) and tiny_model.calibration.is_identity


def test_calibration_is_saved_and_loaded(tiny_model, tmp_path):
    from lss.model import load_model, save_model

    calibration = SeverityCalibration(temperature_axial=0.8, temperature_sagittal=1.7, abstain_threshold=0.52,
                                      fitted=True, n_axial=30, n_sagittal=60, coverage=0.7, note="fitted")
    tiny_model.calibration = calibration
    try:
        path = save_model(tiny_model, tmp_path / "model.pt")
    finally:
        tiny_model.calibration = SeverityCalibration()
    loaded = load_model(path)
    assert loaded.calibration == calibration


def test_a_file_without_calibration_loads_with_the_identity(tiny_model, tmp_path):
    """Models saved before the calibration existed (same format version) still load."""
    from lss.model import load_model, save_model

    path = save_model(tiny_model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=False)
    del payload["calibration"]
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.calibration == SeverityCalibration() and loaded.calibration.is_identity
