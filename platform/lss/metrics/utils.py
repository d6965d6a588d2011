"""What every metric of ``lss.metrics`` shares: array conversion, the NaN-aware mean and the checks of severity
probabilities and targets.

Conventions of the package:
    - a target of -1 means "unknown": an unlabelled pixel, level or case is left out, never counted as an error;
    - a metric with nothing to measure is NaN (never 0 or 1), and ``n``/``n_cases`` says how much was measured;
    - names come from ``lss.anatomy``: ``dice_<Structure.value>`` and ``recall_<severity>`` ("recall_normal_mild").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import log_loss

from lss.anatomy import SEVERITIES

__all__ = [
    "ArrayLike",
    "LOG_LOSS_EPS",
    "PROBABILITY_TOLERANCE",
    "to_numpy",
    "nanmean",
    "severity_probabilities",
    "severity_targets",
    "weighted_log_loss",
]

ArrayLike = torch.Tensor | np.ndarray | Sequence

# Probabilities are clipped to [eps, 1 - eps] before the logarithm, as scikit-learn's log_loss does since 1.2 (the
# machine epsilon of float64; it was 1e-15 before, which scores an over-confident miss up to 1.5 lower).
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)

# Probabilities may stray this far outside [0, 1] (float32 rounding) before they are refused.
PROBABILITY_TOLERANCE = 1e-6


def to_numpy(values: ArrayLike, dtype=np.float64) -> np.ndarray:
    """A numpy array of ``dtype`` from a tensor (any device, half precision included), an array or a sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the finite entries; NaN (without a RuntimeWarning) where there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean


def severity_probabilities(values: ArrayLike, softmax: bool, what: str) -> np.ndarray:
    """(..., 3) probabilities: the softmax of logits, or the given probabilities normalised per row; then clipped to
    [``LOG_LOSS_EPS``, 1 - ``LOG_LOSS_EPS``].

    Args:
        values: (..., 3) logits or probabilities in ``SEVERITIES`` order.
        softmax: ``values`` are logits.
        what: the argument's name, for messages.

    Raises:
        ValueError: for a last axis other than 3, NaN or infinite values, probabilities outside [0, 1] (beyond
            ``PROBABILITY_TOLERANCE``) or a row of zeros.
    """
    probs = to_numpy(values)
    if probs.shape[-1:] != (len(SEVERITIES),):
        raise ValueError(f"{what} must end in {len(SEVERITIES)} severity classes, got shape {probs.shape}.")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{what} holds NaN or infinite values.")
    if softmax:
        shifted = np.exp(probs - probs.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
    else:
        if probs.size and (probs.min() < -PROBABILITY_TOLERANCE or probs.max() > 1 + PROBABILITY_TOLERANCE):
            raise ValueError(
                f"{what} must be probabilities in [0, 1] (got {probs.min():.4g}..{probs.max():.4g}); "
                "pass softmax=True for logits."
            )
        probs = np.clip(probs, 0.0, 1.0)
        sums = probs.sum(axis=-1, keepdims=True)
        if np.any(sums <= 0):
            raise ValueError(f"{what} has a row of zeros: probabilities must not all be 0.")
        probs = probs / sums
    return np.clip(probs, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)


def severity_targets(values: ArrayLike, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Integer severity indices of the given shape, -1 = unknown.

    Raises:
        ValueError: for another shape, non-integer values, or values outside -1..2.
    """
    raw = to_numpy(values, dtype=np.float64)
    if raw.shape != shape:
        raise ValueError(f"{what} must have shape {shape} to match the probabilities, got {raw.shape}.")
    if raw.size and (not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw))):
        raise ValueError(f"{what} must hold integer severity indices (-1 = unknown).")
    targets = raw.astype(np.int64)
    if targets.size and (targets.min() < -1 or targets.max() >= len(SEVERITIES)):
        raise ValueError(f"{what} must be -1 (unknown) or 0..{len(SEVERITIES) - 1}, "
                         f"got {targets.min()}..{targets.max()}.")
    return targets


def weighted_log_loss(y_true: np.ndarray, y_proba: np.ndarray, sample_weight: np.ndarray | None = None,
                      labels: Sequence | None = None) -> float:
    """scikit-learn's ``log_loss``: sum_i w_i * -log p_i[t_i] / sum_i w_i, probabilities clipped to [eps, 1 - eps]
    (eps the machine epsilon of their dtype); NaN for no row, where scikit-learn raises.

    Args:
        y_true: (N,) class labels.
        y_proba: (N, C) probabilities over ``labels``, or (N,) the probability of the second of two labels.
        sample_weight: (N,) weights; None = 1 each.
        labels: the classes of the columns of ``y_proba``; None = those in ``y_true``.
    """
    if np.size(y_true) == 0:
        return float("nan")
    with warnings.catch_warnings():
        # scikit-learn 1.9 renamed log_loss's second argument (y_pred -> y_proba); positional works in every version.
        warnings.filterwarnings("ignore", message=".*y_pred. was renamed to .y_proba.", category=FutureWarning)
        return float(log_loss(y_true, y_proba, sample_weight=sample_weight, labels=labels))
