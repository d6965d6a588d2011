"""Severity head and the case -> 2.5D sample conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss.anatomy import CANAL_LABEL, LEVELS, Structure, disc_label_for_level
from lss.model.heads import SeverityHead
from lss.model.inputs import case_to_sample, collate_samples


@pytest.mark.parametrize("regression", [True, False])
def test_head_shapes(regression):
    head = SeverityHead(20, hidden=16, regression=regression)
    logits, values = head(torch.randn(3, 5, 20))
    assert logits.shape == (3, 5, 3)
    assert (values.shape == (3, 5, 2)) if regression else values is None
    with pytest.raises(ValueError, match="features must be"):
        head(torch.randn(3, 20))
    with pytest.raises(ValueError, match="in_features"):
        SeverityHead(0)


def _case(with_labels=True):
    rng = np.random.default_rng(0)
    case = {
        "sagittal_image": rng.random((12, 32, 48)).astype(np.float16),
        "axial_image": rng.random((5, 3, 16, 16)).astype(np.float16),
        "axial_present": np.array([True, True, True, False, True]),
        "severity": np.array([0, 1, 2, -1, 0], dtype=np.int8),
        "area_mm2": np.array([150, 90, 50, np.nan, 160], dtype=np.float32),
        "ap_mm": np.array([13, 9, 5, np.nan, 14], dtype=np.float32),
    }
    if with_labels:
        sag = np.zeros((12, 32, 48), dtype=np.int16)
        sag[6, 10:20, 5:8] = disc_label_for_level("L4/L5")
        sag[6, 2:5, 5:40] = CANAL_LABEL
        sag[6, 10:20, 9:20] = 2  # L5 vertebra
        case["sagittal_labels"] = sag
        ax = np.zeros((5, 3, 16, 16), dtype=np.int16)
        ax[:, 1, 4:8, 4:8] = CANAL_LABEL
        case["axial_labels"] = ax
    return case


def test_case_to_sample_with_labels():
    sample = case_to_sample(_case(), sagittal_slices=3)
    assert sample["sagittal"].shape == (3, 32, 48) and sample["axial"].shape == (5, 3, 16, 16)
    torch.testing.assert_close(sample["sagittal"][1], torch.from_numpy(_case()["sagittal_image"][6].astype(np.float32)))
    target = sample["sagittal_target"]
    assert target[3, 10] == Structure.CANAL.index and target[15, 6] == Structure.DISC.index
    assert target[15, 12] == Structure.VERTEBRAL_BODY.index
    level = sample["level_target"]
    assert level.shape == (5, 32, 48) and level[LEVELS.index("L4/L5")].sum() == 30 and level.sum() == 30
    axial = sample["axial_target"]
    assert (axial[3] == -1).all() and axial[0, 5, 5] == Structure.CANAL.index
    assert sample["severity"].tolist() == [0, 1, 2, -1, 0]


def test_case_to_sample_without_labels_and_collate():
    sample = case_to_sample(_case(with_labels=False), sagittal_slices=5)
    assert sample["sagittal"].shape == (5, 32, 48)
    assert (sample["sagittal_target"] == -1).all() and not sample["level_target"].any()
    batch = collate_samples([sample, sample])
    assert batch["axial"].shape == (2, 5, 3, 16, 16)
    with pytest.raises(ValueError, match="odd"):
        case_to_sample(_case(), sagittal_slices=2)
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])
