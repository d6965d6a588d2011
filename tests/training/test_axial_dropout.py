"""Training the sagittal-only path: axial dropout drops inputs at the configured rates, a dropped level is graded
exactly as without axial input, and validation fits the model's calibration on both paths (real small model,
real preprocessed synthetic studies, no Ray)."""

from __future__ import annotations

import math

import pytest
import torch

from lss.config import LSSConfig, TrainConfig
from lss.data.cases import read_jsonl
from lss.training.axial_dropout import drop_axial

TINY = {"base_channels": 8, "attention_dim": 32, "text_encoder": "random-small"}


def test_levels_are_dropped_at_the_configured_rate():
    present = torch.ones(4000, 5, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    levels = drop_axial(present, 0.3, 0.0, generator)
    assert (~levels).float().mean().item() == pytest.approx(0.3, abs=0.02)
    studies = drop_axial(present, 0.0, 0.2, generator)
    whole = (~studies).all(dim=1)
    assert torch.equal(~studies, whole[:, None].expand_as(studies))  # a study is dropped whole or not at all
    assert whole.float().mean().item() == pytest.approx(0.2, abs=0.02)
    both = drop_axial(present, 0.3, 0.2, generator)
    assert (~both).float().mean().item() == pytest.approx(1 - 0.7 * 0.8, abs=0.02)
    assert (~both).all(dim=1).float().mean().item() >= 0.2 - 0.02


def test_dropout_keeps_missing_levels_missing_and_is_reproducible():
    present = torch.rand(500, 5, generator=torch.Generator().manual_seed(1)) < 0.5
    dropped = drop_axial(present, 0.5, 0.1, torch.Generator().manual_seed(7))
    assert not (dropped & ~present).any()  # never invents axial data
    assert torch.equal(dropped, drop_axial(present, 0.5, 0.1, torch.Generator().manual_seed(7)))
    assert torch.equal(drop_axial(present, 0.0, 0.0), present)
    assert not drop_axial(present, 1.0).any()
    with pytest.raises(ValueError, match=r"level_rate must be in \[0, 1\]"):
        drop_axial(present, 1.5)
    with pytest.raises(ValueError, match=r"study_rate must be in \[0, 1\]"):
        drop_axial(present, 0.1, -0.1)
    with pytest.raises(ValueError, match=r"axial_present must be \(B, L\)"):
        drop_axial(present[0], 0.1)


@pytest.mark.parametrize("field", ["axial_dropout", "axial_study_dropout", "abstain_min_coverage"])
def test_rates_are_validated(field):
    assert 0.0 <= getattr(TrainConfig(), field) <= 1.0
    with pytest.raises(ValueError):
        TrainConfig(**{field: 1.2})


@pytest.fixture(scope="module")
def preprocessed(preprocessed_nifti):
    return preprocessed_nifti


@pytest.fixture(scope="module")
def tiny_model():
    from lss.config import ModelConfig
    from lss.model import build_model
    from lss.model.text import TextEncoder

    torch.manual_seed(0)
    return build_model(ModelConfig(**TINY), text_encoder=TextEncoder("random-small")).eval()


def test_a_dropped_level_is_graded_as_without_axial_input(preprocessed, tiny_model):
    """What the head sees of a dropped level is what it sees of a sagittal-only study: the path is the same."""
    from lss.model import collate_samples
    from lss.training.data import CaseDataset

    ids = [r["study_id"] for r in read_jsonl(preprocessed / "preprocessed.jsonl")]
    dataset = CaseDataset(preprocessed, ids)
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    assert batch["axial_present"].all()
    present = drop_axial(batch["axial_present"], 0.5, 0.0, torch.Generator().manual_seed(3))
    present[0, 0], present[0, 1] = False, True  # both kinds surely present
    with torch.no_grad():
        dropped = tiny_model(batch["sagittal"], batch["axial"], present).severity_logits
        given = tiny_model(batch["sagittal"], batch["axial"], batch["axial_present"]).severity_logits
        sagittal_only = tiny_model(batch["sagittal"]).severity_logits
    assert torch.allclose(dropped[~present], sagittal_only[~present], atol=1e-5)
    assert torch.allclose(dropped[present], given[present], atol=1e-5)
    assert not torch.allclose(given[~present], sagittal_only[~present], atol=1e-5)  # the axial input mattered


def test_validate_fits_the_calibration_of_both_paths(preprocessed, tiny_model):
    from lss.model.calibration import SeverityCalibration
    from lss.training.data import CaseDataset
    from lss.training.loop import validate

    ids = [r["study_id"] for r in read_jsonl(preprocessed / "preprocessed.jsonl")]
    # Each study 3 times: 30 graded levels per path, enough to fit both temperatures and the threshold.
    dataset = CaseDataset(preprocessed, ids * 3)
    config = LSSConfig.model_validate({"model": TINY, "train": {"abstain_target_accuracy": 0.9,
                                                                "abstain_min_coverage": 0.5}})
    tiny_model.calibration = SeverityCalibration()
    try:
        plain = validate(tiny_model, dataset, config, torch.device("cpu"), batch_size=2)
        assert tiny_model.calibration.is_identity and not any(k.startswith("val_calibration_") for k in plain)
        metrics = validate(tiny_model, dataset, config, torch.device("cpu"), batch_size=2, calibrate=True)
        calibration = tiny_model.calibration
    finally:
        tiny_model.calibration = SeverityCalibration()
    assert calibration.fitted and calibration.n_axial == calibration.n_sagittal == len(ids) * 3 * 5
    assert (calibration.target_accuracy, calibration.min_coverage) == (0.9, 0.5)
    assert metrics["val_calibration_fitted"] == 1.0
    for path in ("axial", "sagittal"):
        assert metrics[f"val_calibration_temperature_{path}"] == getattr(calibration, f"temperature_{path}")
        # (binned ECE on 30 levels need not fall with the NLL-optimal temperature: only its range is checked)
        assert 0.0 <= metrics[f"val_calibration_ece_{path}_after"] <= 1.0
        assert 0.0 <= metrics[f"val_calibration_ece_{path}_before"] <= 1.0
    assert 0.5 <= metrics["val_calibration_coverage"] <= 1.0
    assert 0.0 <= metrics["val_sagittal_only_accuracy"] <= 1.0
    assert all(isinstance(v, float) for v in metrics.values())
    # The severity metrics of validation are unchanged by calibrating.
    for key in ("val_accuracy", "val_balanced_accuracy", "val_dice_macro"):
        assert metrics[key] == pytest.approx(plain[key], nan_ok=True)
    assert math.isfinite(metrics["val_calibration_selective_accuracy"])
