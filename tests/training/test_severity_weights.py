"""The severity loss's class weights: "rsna" passes through, "balanced" weighs each grade by its inverse frequency
among the training studies' graded levels (real CaseDatasets over an index written here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lss.config import TrainConfig
from lss.losses import SeverityLoss
from lss.training.data import CaseDataset
from lss.training.loop import severity_class_weights


def _dataset(tmp_path, grades: dict[str, list[int]]) -> CaseDataset:
    rows = [{"study_id": sid, "path": f"cases/{sid}.npz", "status": "ok", "severity": g} for sid, g in grades.items()]
    (tmp_path / "preprocessed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return CaseDataset(tmp_path, list(grades))


def test_balanced_weights_make_every_grade_weigh_the_same_in_total(tmp_path):
    grades = {"a": [0, 0, 0, 1, 2], "b": [0, 0, 0, 0, -1], "c": [0, 1, 0, -1, -1]}
    weights = severity_class_weights("balanced", [_dataset(tmp_path, grades)])
    counts = np.array([9, 2, 1])
    assert np.allclose(np.array(weights) * counts, counts.sum() / 3)  # unknown grades (-1) do not count
    assert SeverityLoss(weights=weights).class_weights.tolist() == pytest.approx(list(weights))


def test_rsna_weights_pass_through_and_a_missing_grade_weighs_one(tmp_path):
    dataset = _dataset(tmp_path, {"a": [0, 0, 1, 1, -1]})
    assert severity_class_weights("rsna", [dataset]) == "rsna"
    # 4 graded levels, 2 per present grade: 4 / (3 * 2); no Severe level: weight 1, not a division by zero.
    assert severity_class_weights("balanced", [dataset]) == pytest.approx((2 / 3, 2 / 3, 1.0))
    assert severity_class_weights("balanced", [_dataset(tmp_path, {"x": [-1] * 5})]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="balanced"):
        severity_class_weights("inverse", [dataset])
    with pytest.raises(ValueError):
        TrainConfig(severity_class_weights="inverse")
