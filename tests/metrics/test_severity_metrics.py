"""lss.metrics.severity: hand-computed accuracy, recalls, macro-F1, confusion matrix and (RSNA-weighted) log loss,
perfect and worst cases, -1 ignoring, agreement with scikit-learn, and every error message."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lss.anatomy import RSNA_SEVERITY_WEIGHTS
from lss.metrics import LOG_LOSS_EPS, SEVERITY_NAMES, severity_metrics

NAN = float("nan")


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


P3 = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])
W = np.asarray(RSNA_SEVERITY_WEIGHTS)
WORST = -math.log(LOG_LOSS_EPS)  # log loss of probability 0 on the true class after clipping: 34.54

# (probs, targets, softmax, expected; absent keys are not checked)
SEVERITY_CASES = [
    # Perfect one-hot predictions.
    (np.eye(3), [0, 1, 2], False,
     {"n": 3, "accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "rsna_log_loss": 0.0, "log_loss": 0.0,
      "recall_severe": 1.0, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "ece": 0.0}),
    # Worst: all the mass on a wrong class; log loss = -log(1e-15) whatever the weights.
    (np.eye(3)[[1, 2, 0]], [0, 1, 2], False,
     {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "rsna_log_loss": WORST, "log_loss": WORST,
      "confusion_matrix": [[0, 1, 0], [0, 0, 1], [1, 0, 0]], "ece": 1.0}),
    # Uniform: log(3), weighted or not.
    (np.full((4, 3), 1 / 3), [0, 1, 2, 2], False, {"rsna_log_loss": math.log(3), "log_loss": math.log(3)}),
    # Sample weights 1/2/4 by the true class.
    (P3, [0, 1, 2], False,
     {"rsna_log_loss": (-1 * math.log(0.7) - 2 * math.log(0.5) - 4 * math.log(0.6)) / 7,
      "log_loss": -(math.log(0.7) + math.log(0.5) + math.log(0.6)) / 3}),
    # Rows not summing to 1 are normalised (the competition metric's rule).
    (P3 * 0.5, [0, 1, 2], False, {"rsna_log_loss": (-1 * math.log(0.7) - 2 * math.log(0.5) - 4 * math.log(0.6)) / 7}),
    # Logits with softmax=True: log of the softmax.
    (np.log(P3) + 3.0, [0, 1, 2], True, {"log_loss": -(math.log(0.7) + math.log(0.5) + math.log(0.6)) / 3}),
    # Unknown (-1) rows are left out.
    (np.vstack([P3, np.eye(3)[[2]]]), [0, 1, 2, -1], False, {"n": 3, "accuracy": 1.0}),
    # Predictions [0, 1, 1, 2, 0] for truth [0, 0, 1, 2, 2]: recalls 1/2, 1, 1/2; F1 1/2, 2/3, 2/3.
    (np.eye(3)[[0, 1, 1, 2, 0]] * 0.8 + 0.2 / 3, [0, 0, 1, 2, 2], False,
     {"accuracy": 0.6, "recall_normal_mild": 0.5, "recall_moderate": 1.0, "recall_severe": 0.5,
      "balanced_accuracy": 2 / 3, "macro_f1": (0.5 + 2 / 3 + 2 / 3) / 3,
      "confusion_matrix": [[1, 1, 0], [0, 1, 0], [1, 0, 1]]}),
    # A class absent from the truth: its recall is NaN and balanced accuracy averages the others.
    (np.eye(3)[[0, 0, 1]], [0, 0, 1], False, {"recall_severe": NAN, "balanced_accuracy": 1.0, "macro_f1": 1.0}),
    # Nothing known: NaN metrics and an empty confusion matrix.
    (P3, [-1, -1, -1], False,
     {"n": 0, "accuracy": NAN, "rsna_log_loss": NAN, "macro_f1": NAN, "confusion_matrix": [[0] * 3] * 3}),
]


@pytest.mark.parametrize("probs, targets, softmax, expected", SEVERITY_CASES)
def test_severity_metrics_by_hand(probs, targets, softmax, expected):
    result = severity_metrics(probs, targets, softmax=softmax)
    assert {f"recall_{n}" for n in SEVERITY_NAMES} <= set(result)
    for key, value in expected.items():
        if isinstance(value, list):
            assert result[key] == value, key
        else:
            assert same(result[key], value, 1e-9), (key, result[key], value)


def test_severity_metrics_take_torch_tensors():
    from_numpy = severity_metrics(P3, [0, 1, 2])
    from_torch = severity_metrics(torch.tensor(P3, dtype=torch.float32), torch.tensor([0, 1, 2]))
    assert from_torch["rsna_log_loss"] == pytest.approx(from_numpy["rsna_log_loss"], rel=1e-6)


def test_severity_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = rng.integers(0, 3, size=200)
    result = severity_metrics(probs, targets)
    predicted = probs.argmax(axis=1)
    assert result["rsna_log_loss"] == pytest.approx(
        sklearn_metrics.log_loss(targets, probs, sample_weight=W[targets], labels=[0, 1, 2]), rel=1e-9)
    assert result["log_loss"] == pytest.approx(sklearn_metrics.log_loss(targets, probs, labels=[0, 1, 2]), rel=1e-9)
    assert result["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(targets, predicted))
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(targets, predicted, average="macro"))
    assert result["confusion_matrix"] == sklearn_metrics.confusion_matrix(targets, predicted).tolist()
    recalls = sklearn_metrics.recall_score(targets, predicted, average=None)
    assert [result[f"recall_{n}"] for n in SEVERITY_NAMES] == pytest.approx(recalls)


SEVERITY_ERRORS = [
    (lambda: severity_metrics(np.zeros((3, 4)), [0, 1, 2]), "3 severity classes"),
    (lambda: severity_metrics(np.full(3, 1 / 3), [0]), r"probs must be \(N, 3\)"),
    (lambda: severity_metrics(P3, [0, 1]), r"targets must have shape \(3,\)"),
    (lambda: severity_metrics(P3, [0, 1, 3]), "-1 \\(unknown\\) or 0..2"),
    (lambda: severity_metrics(P3, [0, 1, 1.5]), "integer severity indices"),
    (lambda: severity_metrics(P3 - 0.5, [0, 1, 2]), "softmax=True"),
    (lambda: severity_metrics(np.array([[0.5, np.nan, 0.5]]), [0]), "NaN or infinite"),
    (lambda: severity_metrics(np.zeros((1, 3)), [0]), "row of zeros"),
]


@pytest.mark.parametrize("call, message", SEVERITY_ERRORS)
def test_severity_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()




def test_classes_missing_from_the_truth_raise_no_warning():
    # scikit-learn's balanced_accuracy_score warns for a class predicted but not true, and for a single class; both
    # follow the documented rules, so the warnings are not passed on.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = severity_metrics(np.eye(3)[[0, 0, 2]], [0, 0, 1])
        single = severity_metrics(np.eye(3)[[1, 1]], [1, 1])
    assert result["balanced_accuracy"] == 0.5 and math.isnan(result["recall_severe"])
    assert result["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert single["balanced_accuracy"] == 1.0 and single["confusion_matrix"] == [[0, 0, 0], [0, 2, 0], [0, 0, 0]]
