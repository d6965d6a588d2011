"""lss.metrics.rsna: the RSNA 2024 score by hand, the any-severe term, undefined cases, agreement with the
competition's code written with scikit-learn, and the error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lss.anatomy import RSNA_SEVERITY_WEIGHTS
from lss.metrics import LOG_LOSS_EPS, rsna_score, severity_metrics

P3 = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])
W = np.asarray(RSNA_SEVERITY_WEIGHTS)
WORST = -math.log(LOG_LOSS_EPS)  # log loss of probability 0 on the true class after clipping: 34.54


def _study(p_severe: list[float], rest_on: int = 0) -> list[list[float]]:
    """Levels whose P(Severe) is given and whose remaining mass sits on class ``rest_on``."""
    rows = []
    for p in p_severe:
        row = [0.0, 0.0, p]
        row[rest_on] += 1 - p
        rows.append(row)
    return rows


def test_rsna_score_by_hand():
    # Study A: truth (Normal, Severe), P(Severe) (0.1, 0.6) -> any severe: label 1, prediction 0.6, weight 4.
    # Study B: truth (Normal, Moderate), P(Severe) (0.2, 0.3) -> label 0, prediction 0.3, weight max(1, 2) = 2.
    probs = np.array([[[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]], [[0.6, 0.2, 0.2], [0.2, 0.5, 0.3]]])
    targets = np.array([[0, 2], [0, 1]])
    result = rsna_score(probs, targets)
    level = (-math.log(0.7) - 4 * math.log(0.6) - math.log(0.6) - 2 * math.log(0.5)) / (1 + 4 + 1 + 2)
    any_severe = (-4 * math.log(0.6) - 2 * math.log(0.7)) / (4 + 2)
    assert result["rsna_log_loss"] == pytest.approx(level)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2)
    assert (result["n"], result["n_studies"]) == (4, 2)
    # The level term is severity_metrics' weighted log loss on the same levels.
    flat = severity_metrics(probs.reshape(-1, 3), targets.ravel())
    assert result["rsna_log_loss"] == pytest.approx(flat["rsna_log_loss"])


# (probs (B, L, 3), targets (B, L), expected any_severe_log_loss)
ANY_SEVERE_CASES = [
    # Only scored levels count: the unknown level's P(Severe) 0.9 is not the study's maximum.
    (np.array([_study([0.2, 0.9]), _study([0.5, 0.5])]), np.array([[0, -1], [2, -1]]),
     (-math.log(0.8) - 4 * math.log(0.5)) / 5),
    # A negative study with no Moderate level has weight 1; with one, weight 2; a positive one 4.
    (np.array([_study([0.5]), _study([0.5], rest_on=1), _study([0.5])]), np.array([[0], [1], [2]]), math.log(2)),
    (np.array([_study([0.1]), _study([0.9])]), np.array([[0], [2]]), (-math.log(0.9) - 4 * math.log(0.9)) / 5),
    # Perfect and worst predictions.
    (np.array([_study([0.0, 1.0]), _study([0.0, 0.0])]), np.array([[0, 2], [0, 0]]), -math.log(1 - LOG_LOSS_EPS)),
    (np.array([_study([0.0, 0.0]), _study([1.0, 0.0])]), np.array([[0, 2], [0, 0]]), WORST),
]


@pytest.mark.parametrize("probs, targets, expected", ANY_SEVERE_CASES)
def test_any_severe_term(probs, targets, expected):
    assert rsna_score(probs, targets)["any_severe_log_loss"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_rsna_score_without_known_levels_is_nan():
    result = rsna_score(np.full((2, 5, 3), 1 / 3), np.full((2, 5), -1))
    assert math.isnan(result["rsna_score"]) and (result["n"], result["n_studies"]) == (0, 0)


def test_rsna_score_agrees_with_the_competition_code_written_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(30, 5, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    targets = rng.integers(-1, 3, size=(30, 5))
    targets[0] = -1  # a study with nothing scored
    result = rsna_score(logits, targets, softmax=True)
    # The competition's steps (score() of the RSNA 2024 metric notebook), on the scored rows only.
    scored = targets >= 0
    t, p = targets[scored], probs[scored]
    level = sklearn_metrics.log_loss(t, p, sample_weight=W[t], labels=[0, 1, 2])
    studies = scored.any(axis=1)
    label = np.array([(targets[b][scored[b]] == 2).any() for b in np.flatnonzero(studies)])
    pred = np.array([probs[b, scored[b], 2].max() for b in np.flatnonzero(studies)])
    weight = np.array([W[targets[b][scored[b]]].max() for b in np.flatnonzero(studies)])
    any_severe = sklearn_metrics.log_loss(label, pred, sample_weight=weight, labels=[False, True])
    assert result["rsna_log_loss"] == pytest.approx(level, rel=1e-9)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe, rel=1e-9)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2, rel=1e-9)



def test_any_severe_term_is_undefined_when_every_study_has_the_same_label():
    # scikit-learn's binary log_loss raises on one class in y_true: the official metric has no value there.
    probs = np.array([_study([0.1, 0.2]), _study([0.3, 0.0])])
    for targets in (np.array([[0, 1], [0, 0]]), np.array([[2, 0], [0, 2]])):
        result = rsna_score(probs, targets)
        assert result["any_severe_defined"] is False
        assert math.isnan(result["any_severe_log_loss"]) and math.isnan(result["rsna_score"])
        assert math.isfinite(result["rsna_log_loss"])


def test_rsna_score_matches_the_official_metric_on_saturated_probabilities():
    """The host's metric: scikit-learn's log_loss (eps = float64 machine epsilon since 1.2) with RSNA weights on the
    levels, and on the per-study maximum of P(Severe) with the per-study maximum weight; the mean of both."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(7)
    probs = rng.dirichlet([0.2, 0.2, 0.2], size=(40, 5))
    probs[:10] = np.eye(3)[rng.integers(0, 3, size=(10, 5))]  # saturated: exact 0 and 1, some confidently wrong
    targets = rng.integers(0, 3, size=(40, 5))
    targets[0, 0], targets[1, 2] = -1, -1  # unknown levels are not scored
    result = rsna_score(probs, targets)

    weights = np.array([1.0, 2.0, 4.0])
    scored = targets >= 0
    level = log_loss(targets[scored], probs[scored], sample_weight=weights[targets[scored]], labels=[0, 1, 2])
    p_severe = np.where(scored, probs[..., 2], -np.inf).max(axis=1)
    label = (targets == 2).any(axis=1).astype(int)
    weight = np.where(scored, weights[np.clip(targets, 0, None)], 0).max(axis=1)
    any_severe = log_loss(label, p_severe, sample_weight=weight)
    assert result["rsna_log_loss"] == pytest.approx(level, rel=1e-12)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe, rel=1e-12)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2, rel=1e-12)
    assert LOG_LOSS_EPS == np.finfo(np.float64).eps


RSNA_ERRORS = [
    (lambda: rsna_score(P3, [0, 1, 2]), r"probs must be \(B, L, 3\)"),
    (lambda: rsna_score(P3[None], [[0, 1]]), r"targets must have shape \(1, 3\)"),
    (lambda: rsna_score(P3[None] - 0.5, [[0, 1, 2]]), "softmax=True"),
]


@pytest.mark.parametrize("call, message", RSNA_ERRORS)
def test_rsna_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
