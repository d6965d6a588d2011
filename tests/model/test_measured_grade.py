"""lss.model.measured_grade: the grade fitted on measurements recovers the published rule from clean measurements,
learns a shifted boundary from biased ones, replaces the head only where a sac is measured, refuses what it cannot
fit, and travels with the model file (a file saved before it existed loads without it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss.anatomy import SEVERITIES, Structure, grade_from_measurements
from lss.model.measured_grade import MeasuredGrade, fit_measured_grade, measure_sac

SPACING = (0.9, 0.9)


def _levels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measurements spread over every grade, and their published rule grades."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(30, 230, n)
    ap = np.clip(area / 14 + rng.normal(0, 1.5, n), 2, 20)
    grades = np.array([SEVERITIES.index(grade_from_measurements(a, d)) for a, d in zip(area, ap, strict=True)])
    return area, ap, grades


def test_clean_measurements_give_back_the_published_rule():
    grade = fit_measured_grade(*_levels(600, 0), SPACING, strength=10.0)
    assert grade.fitted and grade.n_levels == 600 and sum(grade.counts) == 600
    area, ap, truth = _levels(400, 1)
    assert (grade.logits(area, ap).argmax(axis=1) == truth).mean() >= 0.93


def test_it_learns_where_biased_masks_put_the_boundary():
    """Masks that draw every sac 25 mm2 too wide: the published cut-offs miss Severe levels, the fitted grade not."""
    area, ap, truth = _levels(600, 2)
    grade = fit_measured_grade(area + 25, ap, truth, SPACING, strength=10.0)
    test_area, test_ap, test_truth = _levels(400, 3)
    fitted = grade.logits(test_area + 25, test_ap).argmax(axis=1)
    published = np.array([SEVERITIES.index(grade_from_measurements(a + 25, d)) for a, d in zip(test_area, test_ap,
                                                                                                 strict=True)])
    severe = test_truth == SEVERITIES.index(SEVERITIES[-1])
    assert (fitted[severe] == test_truth[severe]).mean() > (published[severe] == test_truth[severe]).mean() + 0.3


def test_what_cannot_be_fitted_is_refused_or_left_unfitted():
    area, ap, grades = _levels(50, 4)
    keep = grades != 2
    unfitted = fit_measured_grade(area[keep], ap[keep], grades[keep], SPACING)
    assert not unfitted.fitted and "every grade needs 2" in unfitted.note
    assert not fit_measured_grade([], [], [], SPACING).fitted
    with pytest.raises(RuntimeError):
        unfitted.logits([100.0], [12.0])
    with pytest.raises(ValueError, match="differ in length"):
        fit_measured_grade(area, ap[:-1], grades, SPACING)
    with pytest.raises(ValueError, match="finite"):
        fit_measured_grade(np.r_[area[:-1], np.nan], ap, grades, SPACING)


def _slice_logits(radius_px: float, size: int = 48) -> torch.Tensor:
    """(K, H, W) logits with a disc of canal in the middle (a clear winner everywhere)."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius_px ** 2
    logits = torch.zeros(len(Structure), size, size)
    logits[Structure.CANAL.index][torch.from_numpy(disc)] = 5.0
    return logits


def test_measure_sac_reads_the_mask_as_the_reports_do():
    area, ap = measure_sac(_slice_logits(8), 0.0, SPACING)
    assert area == pytest.approx(np.pi * 8 ** 2 * 0.81, rel=0.08)
    assert ap == pytest.approx(17 * 0.9, abs=0.9)
    assert measure_sac(_slice_logits(8), -6.0, SPACING) is None  # the offset removes every canal pixel


def test_apply_replaces_the_head_only_where_a_sac_is_measured():
    grade = fit_measured_grade(*_levels(600, 5), SPACING, strength=10.0)
    head = torch.full((1, 3, 3), 7.0)
    axial = torch.stack([_slice_logits(3), _slice_logits(9), _slice_logits(3)])[None]  # narrow, wide, narrow
    axial[0, 2, Structure.CANAL.index] = -5.0  # no canal on the third level
    out = grade.apply(head, axial, torch.tensor([[1.0, 1.0, 1.0]]), 0.0)
    assert out[0, 0].argmax().item() == SEVERITIES.index(SEVERITIES[-1])  # ~20 mm2: Severe
    assert out[0, 1].argmax().item() == 0  # ~200 mm2: Normal/Mild
    assert torch.equal(out[0, 2], head[0, 2])  # nothing measured: the head's
    assert torch.equal(grade.apply(head, axial, torch.tensor([[0.0, 0.0, 1.0]]), 0.0)[0, :2], head[0, :2])
    assert torch.equal(MeasuredGrade().apply(head, axial, torch.ones(1, 3), 0.0), head)  # unfitted: the identity


def test_the_grade_travels_with_the_model_file(tmp_path):
    from lss.config import ModelConfig
    from lss.model import build_model, load_model, save_model
    from lss.model.text import TextEncoder

    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=8, attention_dim=32, text_encoder="random-small"),
                        text_encoder=TextEncoder("random-small"))
    model.measured_grade = fit_measured_grade(*_levels(300, 6), SPACING)
    path = save_model(model, tmp_path / "model.pt")
    loaded = load_model(path).measured_grade
    assert loaded == model.measured_grade and loaded.spacing_mm == SPACING

    payload = torch.load(path, weights_only=False)  # as a file saved before the measured grade existed
    del payload["measured_grade"]
    torch.save(payload, path)
    assert load_model(path).measured_grade == MeasuredGrade()
