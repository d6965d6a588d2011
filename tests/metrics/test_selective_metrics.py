"""lss.metrics.selective: coverage and selective accuracy by hand, the ends of the threshold range, -1 ignoring, and
the error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lss.metrics import selective_metrics, severity_metrics

# Confidences 0.9, 0.6, 0.5, 0.8; truths 0, 0, 2, unknown: the first is right, the second wrong, the third right.
PROBS = np.array([[0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.25, 0.25, 0.5], [0.1, 0.8, 0.1]])
TARGETS = [0, 0, 2, -1]

# (threshold, expected; absent keys are not checked)
CASES = [
    # Only the first known level reaches 0.7: one of three stated, and it is right.
    (0.7, {"n": 3, "n_stated": 1, "coverage": 1 / 3, "selective_accuracy": 1.0, "selective_balanced_accuracy": 1.0}),
    # 0.55 states the first two: one right of two; balanced accuracy over the truths present (class 0 only): 1/2.
    (0.55, {"n_stated": 2, "coverage": 2 / 3, "selective_accuracy": 0.5, "selective_balanced_accuracy": 0.5}),
    # Threshold 0 states every grade: the plain accuracy.
    (0.0, {"n_stated": 3, "coverage": 1.0, "selective_accuracy": 2 / 3}),
    # Above every confidence: nothing stated, the selective figures are NaN (not 0).
    (0.95, {"n_stated": 0, "coverage": 0.0, "selective_accuracy": float("nan")}),
]


@pytest.mark.parametrize("threshold, expected", CASES)
def test_selective_metrics_by_hand(threshold, expected):
    result = selective_metrics(PROBS, TARGETS, threshold)
    assert result["threshold"] == threshold
    for key, value in expected.items():
        assert (math.isnan(value) and math.isnan(result[key])) or result[key] == pytest.approx(value), key


def test_threshold_zero_equals_the_plain_accuracy_and_levels_may_come_per_study():
    assert selective_metrics(PROBS, TARGETS, 0.0)["selective_accuracy"] == severity_metrics(PROBS, TARGETS)["accuracy"]
    per_study = selective_metrics(PROBS.reshape(2, 2, 3), np.reshape(TARGETS, (2, 2)), 0.7)
    flat = selective_metrics(PROBS, TARGETS, 0.7)
    assert per_study.keys() == flat.keys()
    for key, value in flat.items():  # NaN (no Moderate truth) is not equal to itself
        assert (math.isnan(value) and math.isnan(per_study[key])) or per_study[key] == value, key


def test_allowed_withholds_whatever_the_confidence_and_a_withheld_level_is_not_recalled():
    # Threshold 0 with the first level not allowed: the other two stated, one right (the Severe one).
    result = selective_metrics(PROBS, TARGETS, 0.0, allowed=np.array([False, True, True, True]))
    assert result["n_stated"] == 2 and result["coverage"] == pytest.approx(2 / 3)
    assert result["selective_accuracy"] == pytest.approx(0.5)
    # Of the two Normal/Mild truths neither is stated Normal/Mild (one withheld, one stated Moderate); the Severe is.
    assert result["selective_recall_normal_mild"] == 0.0 and result["selective_recall_severe"] == 1.0
    assert math.isnan(result["selective_recall_moderate"])  # no Moderate truth
    everything = selective_metrics(PROBS, TARGETS, 0.0)
    assert everything["selective_recall_normal_mild"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="allowed must be a bool array of 4 levels"):
        selective_metrics(PROBS, TARGETS, 0.0, allowed=np.ones(3, dtype=bool))


def test_nothing_known_is_nan():
    result = selective_metrics(PROBS, [-1] * 4, 0.5)
    assert result["n"] == 0 and math.isnan(result["coverage"]) and math.isnan(result["selective_accuracy"])


ERRORS = [
    (lambda: selective_metrics(PROBS, TARGETS, 1.5), r"threshold must be in \[0, 1\]"),
    (lambda: selective_metrics(PROBS[:, :2], TARGETS, 0.5), r"probs must be \(N, 3\)"),
    (lambda: selective_metrics(PROBS, TARGETS[:3], 0.5), "targets must have shape"),
]


@pytest.mark.parametrize("call, message", ERRORS)
def test_selective_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
