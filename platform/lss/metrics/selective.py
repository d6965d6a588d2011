"""Abstention at a confidence threshold: how many severity grades are stated (coverage) and how good the stated ones
are (selective accuracy), for ``lss.model.calibration``'s abstention threshold."""

from __future__ import annotations

import numpy as np

from lss.anatomy import SEVERITIES
from lss.metrics.severity import severity_metrics
from lss.metrics.utils import ArrayLike, severity_probabilities, severity_targets, to_numpy

__all__ = ["selective_metrics"]


def selective_metrics(probs: ArrayLike, targets: ArrayLike, threshold: float) -> dict[str, float | int]:
    """Abstention at a confidence threshold: how many grades are stated, and how good the stated ones are.

    A level's grade is stated when its confidence (the largest probability) is >= ``threshold`` and withheld
    otherwise (``lss.model.calibration``); threshold 0 states every grade.

    Args:
        probs: (N, 3) probabilities (or (B, L, 3)), normalised per row as ``severity_metrics`` does.
        targets: (N,) severity indices (or (B, L)); -1 (unknown) rows are left out.
        threshold: confidence threshold in [0, 1].

    Returns:
        ``n`` (levels of known severity), ``n_stated`` (those stated), ``coverage`` = n_stated / n,
        ``selective_accuracy`` and ``selective_balanced_accuracy`` (over the stated levels; NaN when none is
        stated), ``threshold``. Scalars are NaN when ``n`` is 0.

    Raises:
        ValueError: on mismatched shapes, values out of range, or a threshold outside [0, 1].
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    p = to_numpy(probs)
    if p.ndim < 1 or p.shape[-1] != len(SEVERITIES):
        raise ValueError(f"probs must be (N, {len(SEVERITIES)}), got shape {p.shape}.")
    p = severity_probabilities(p.reshape(-1, len(SEVERITIES)), False, "probs")
    t = severity_targets(to_numpy(targets).reshape(-1), p.shape[:1], "targets")
    keep = t >= 0
    p, t = p[keep], t[keep]
    stated = p.max(axis=1) >= float(threshold) if t.size else np.zeros(0, dtype=bool)
    nan = float("nan")
    out: dict[str, float | int] = {"n": int(t.size), "n_stated": int(stated.sum()), "threshold": float(threshold)}
    out["coverage"] = float(stated.mean()) if t.size else nan
    if stated.any():
        inner = severity_metrics(p[stated], t[stated])
        out["selective_accuracy"] = float(inner["accuracy"])
        out["selective_balanced_accuracy"] = float(inner["balanced_accuracy"])
    else:
        out["selective_accuracy"] = out["selective_balanced_accuracy"] = nan
    return out
