"""Bootstrap confidence intervals over studies, and the paired comparison of two models on the same studies.

Levels of one study share a patient, a scanner and a segmentation, so they are not independent: the resampling unit
is the study. A figure is recomputed on each resample of the studies (with replacement) and the interval is the
percentile interval of those values (Efron & Tibshirani 1993, ch. 13).

    low, high = bootstrap_interval(lambda idx: per_study_dice[idx].mean(), n=len(per_study_dice))
    comparison = paired_bootstrap(stat_a, stat_b, n)   # the difference a - b, its interval and a p-value

The severity figures are recomputed from per-study confusion matrices (``study_confusions``,
``confusion_statistics``), which sum exactly to the confusion matrix of any resample, so each resample costs a sum,
not a pass over the levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_RESAMPLES",
    "bootstrap_interval",
    "paired_bootstrap",
    "confusion_statistics",
    "study_confusions",
    "SEVERITY_STATISTICS",
]

DEFAULT_RESAMPLES = 2000

Statistic = Callable[[np.ndarray], float]


def _resamples(n: int, resamples: int, seed: int) -> np.ndarray:
    if int(n) < 1:
        raise ValueError(f"need at least one study to resample, got n={n}.")
    if int(resamples) < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}.")
    return np.random.default_rng(seed).integers(0, int(n), size=(int(resamples), int(n)))


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    return (1.0 - confidence) / 2.0 * 100.0


def bootstrap_interval(
    statistic: Statistic, n: int, resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of ``n`` studies.

    Args:
        statistic: maps an (n,) array of study indices (a resample, with repeats) to the figure; it may return NaN
            for a resample where the figure is undefined (say, no Severe level drawn), which is left out.
        n: number of studies.
        resamples: bootstrap resamples.
        confidence: coverage of the interval.
        seed: seed of the resampling (the same seed gives the same interval).

    Returns:
        (low, high); (NaN, NaN) when the statistic is undefined on more than half of the resamples.

    Raises:
        ValueError: for ``n`` or ``resamples`` below 1, or a confidence outside (0, 1).
    """
    tail = _check_confidence(confidence)
    values = np.array([statistic(idx) for idx in _resamples(n, resamples, seed)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size * 2 < int(resamples):
        return float("nan"), float("nan")
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def paired_bootstrap(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """The difference ``a - b`` of one figure for two models evaluated on the same ``n`` studies.

    Both statistics see the same resample each time, so what the studies share (an easy or a hard study) cancels.

    Args:
        statistic_a, statistic_b: map an (n,) array of study indices to the figure of model a / model b.
        n, resamples, confidence, seed: as in ``bootstrap_interval``.

    Returns:
        ``difference`` (on all studies), ``low``, ``high`` (percentile interval of the difference), ``p_value``
        (two-sided: twice the smaller share of resampled differences on either side of 0, at most 1) and
        ``resamples`` (those where both figures are defined).

    Raises:
        ValueError: for ``n`` or ``resamples`` below 1, or a confidence outside (0, 1).
    """
    tail = _check_confidence(confidence)
    draws = _resamples(n, resamples, seed)
    everything = np.arange(int(n))
    differences = []
    for idx in draws:
        d = statistic_a(idx) - statistic_b(idx)
        if np.isfinite(d):
            differences.append(d)
    d = np.asarray(differences, dtype=np.float64)
    observed = float(statistic_a(everything) - statistic_b(everything))
    if d.size == 0:
        return {"difference": observed, "low": float("nan"), "high": float("nan"), "p_value": float("nan"),
                "resamples": 0}
    p_value = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {"difference": observed, "low": float(np.percentile(d, tail)), "high": float(np.percentile(d, 100 - tail)),
            "p_value": p_value, "resamples": int(d.size)}


def _accuracy(c: np.ndarray) -> float:
    total = c.sum()
    return float(np.trace(c) / total) if total else float("nan")


def _recalls(c: np.ndarray) -> np.ndarray:
    support = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(c) / np.maximum(support, 1), np.nan)


def _balanced_accuracy(c: np.ndarray) -> float:
    recalls = _recalls(c)
    return float(np.nanmean(recalls)) if np.isfinite(recalls).any() else float("nan")


def _macro_f1(c: np.ndarray) -> float:
    # As lss.metrics.severity_metrics (and scikit-learn): classes in the truth or the predictions.
    tp = np.diag(c).astype(np.float64)
    support, predicted = c.sum(axis=1), c.sum(axis=0)
    present = (support > 0) | (predicted > 0)
    if not present.any():
        return float("nan")
    f1 = np.where(tp > 0, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return float(f1[present].mean())


def _recall_of(k: int) -> Callable[[np.ndarray], float]:
    return lambda c: float(_recalls(c)[k])


SEVERITY_STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "macro_f1": _macro_f1,
    "recall_normal_mild": _recall_of(0),
    "recall_moderate": _recall_of(1),
    "recall_severe": _recall_of(2),
}


def study_confusions(truth: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]],
                     num_classes: int = 3) -> np.ndarray:
    """(S, K, K) confusion counts per study (rows the truth), from per-study level grades; -1 on either side (an
    unknown truth, a level with no prediction) is left out.

    Raises:
        ValueError: when the two differ in studies or in levels of a study.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} studies, predicted {len(predicted)}.")
    out = np.zeros((len(truth), num_classes, num_classes), dtype=np.int64)
    for i, (t_row, p_row) in enumerate(zip(truth, predicted, strict=True)):
        for t, p in zip(t_row, p_row, strict=True):
            if t >= 0 and p >= 0:
                out[i, t, p] += 1
    return out


def confusion_statistics(confusions: np.ndarray, resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                         seed: int = 0) -> dict[str, Any]:
    """Severity figures with their bootstrap intervals over studies, from per-study confusion matrices.

    Args:
        confusions: (S, K, K) counts per study, rows the truth and columns the prediction.
        resamples, confidence, seed: as in ``bootstrap_interval``.

    Returns:
        For each of ``SEVERITY_STATISTICS``: ``{"value", "low", "high"}``.

    Raises:
        ValueError: when ``confusions`` is not (S, K, K) with S >= 1.
    """
    confusions = np.asarray(confusions)
    if confusions.ndim != 3 or confusions.shape[1] != confusions.shape[2] or confusions.shape[0] < 1:
        raise ValueError(f"confusions must be (S, K, K) with S >= 1, got shape {confusions.shape}.")
    out: dict[str, Any] = {}
    for name, figure in SEVERITY_STATISTICS.items():
        low, high = bootstrap_interval(lambda idx, f=figure: f(confusions[idx].sum(axis=0)), len(confusions),
                                       resamples, confidence, seed)
        out[name] = {"value": figure(confusions.sum(axis=0)), "low": low, "high": high}
    return out
