"""Bootstrap intervals over studies and the paired comparison: coverage, pairing and the severity figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lss.evaluation.bootstrap import bootstrap_interval, confusion_statistics, paired_bootstrap, study_confusions
from lss.metrics import severity_metrics


def test_interval_of_a_mean_brackets_it_and_shrinks_with_more_studies():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.8, 0.1, 20), rng.normal(0.8, 0.1, 400)
    lo_s, hi_s = bootstrap_interval(lambda idx: small[idx].mean(), len(small), resamples=500)
    lo_l, hi_l = bootstrap_interval(lambda idx: large[idx].mean(), len(large), resamples=500)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 2
    # about +- 1.96 standard errors
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * large.std() / math.sqrt(large.size), rel=0.2)
    assert bootstrap_interval(lambda idx: small[idx].mean(), 20, resamples=500) == (lo_s, hi_s)  # seeded


def test_undefined_figure_gives_no_interval():
    assert all(math.isnan(v) for v in bootstrap_interval(lambda idx: float("nan"), 10, resamples=50))


def test_paired_comparison_sees_a_small_consistent_gain_that_unpaired_spread_hides():
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.5, 0.95, 60)  # studies differ far more than the two models do
    a, b = difficulty + 0.01, difficulty.copy()
    result = paired_bootstrap(lambda idx: a[idx].mean(), lambda idx: b[idx].mean(), 60, resamples=500)
    assert result["difference"] == pytest.approx(0.01)
    assert result["low"] == pytest.approx(0.01) and result["p_value"] == 0.0
    same = paired_bootstrap(lambda idx: b[idx].mean(), lambda idx: b[idx].mean(), 60, resamples=200)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0


def test_severity_figures_from_confusions_equal_severity_metrics():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, size=(30, 5))
    predicted = np.where(rng.random((30, 5)) < 0.7, truth, rng.integers(0, 3, size=(30, 5)))
    truth[0, 0], predicted[1, 1] = -1, -1  # an unknown grade and a level without a prediction are left out
    confusions = study_confusions(truth.tolist(), predicted.tolist())
    assert confusions.shape == (30, 3, 3) and confusions.sum() == 30 * 5 - 2
    kept = (truth >= 0) & (predicted >= 0)
    truth, predicted = truth[kept], predicted[kept]
    stats = confusion_statistics(confusions, resamples=300)
    expected = severity_metrics(np.eye(3)[predicted], truth)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "recall_normal_mild", "recall_moderate",
                 "recall_severe"):
        assert stats[name]["value"] == pytest.approx(expected[name]), name
        assert stats[name]["low"] <= stats[name]["value"] <= stats[name]["high"], name


@pytest.mark.parametrize("bad", [np.zeros((0, 3, 3)), np.zeros((3, 3))])
def test_bad_confusions_are_refused(bad):
    with pytest.raises(ValueError, match="confusions"):
        confusion_statistics(bad)


def test_study_confusions_refuse_mismatched_studies():
    with pytest.raises(ValueError, match="studies"):
        study_confusions([[0, 1]], [])
