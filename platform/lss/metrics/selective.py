"""Abstention at a confidence threshold: how many severity grades are stated (coverage) and how good the stated ones
are (selective accuracy), for ``lss.model.calibration``'s abstention threshold."""

from __future__ import annotations

import numpy as np

from lss.anatomy import SEVERITIES
from lss.metrics.severity import severity_metrics
from lss.metrics.utils import ArrayLike, severity_probabilities, severity_targets, to_numpy

__all__ = ["selective_metrics"]


def selective_metrics(probs: ArrayLike, targets: ArrayLike, threshold: float,
                      allowed: ArrayLike | None = None) -> dict[str, float | int]:
    """Abstention at a confidence threshold: how many grades are stated, and how good the stated ones are.

    A level's grade is stated when its confidence (the largest probability) is >= ``threshold`` and withheld
    otherwise (``lss.model.calibration``); threshold 0 states every grade. ``allowed`` withholds more: the findings
    also withhold a grade that the measurements contradict (``lss.reporting.findings``).

    Args:
        probs: (N, 3) probabilities (or (B, L, 3)), normalised per row as ``severity_metrics`` does.
        targets: (N,) severity indices (or (B, L)); -1 (unknown) rows are left out.
        threshold: confidence threshold in [0, 1].
        allowed: optional (N,) (or (B, L)) bool array: False where a grade is withheld whatever its confidence.

    Returns:
        ``n`` (levels of known severity), ``n_stated`` (those stated), ``coverage`` = n_stated / n,
        ``selective_accuracy``, ``selective_balanced_accuracy`` and ``selective_recall_<severity>`` per severity
        (over the stated levels; NaN when none is stated), ``threshold``. Scalars are NaN when ``n`` is 0.

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
    if allowed is None:
        allow = np.ones(t.shape, dtype=bool)
    else:
        allow = np.asarray(allowed).reshape(-1)
        if allow.shape != t.shape or allow.dtype != bool:
            raise ValueError(f"allowed must be a bool array of {t.shape[0]} levels, got {allow.dtype} {allow.shape}.")
    p, t, allow = p[keep], t[keep], allow[keep]
    stated = (p.max(axis=1) >= float(threshold)) & allow if t.size else np.zeros(0, dtype=bool)
    nan = float("nan")
    out: dict[str, float | int] = {"n": int(t.size), "n_stated": int(stated.sum()), "threshold": float(threshold)}
    out["coverage"] = float(stated.mean()) if t.size else nan
    if stated.any():
        inner = severity_metrics(p[stated], t[stated])
        out["selective_accuracy"] = float(inner["accuracy"])
        out["selective_balanced_accuracy"] = float(inner["balanced_accuracy"])
    else:
        out["selective_accuracy"] = out["selective_balanced_accuracy"] = nan
    predicted = p.argmax(axis=1) if t.size else np.zeros(0, dtype=int)
    for k, severity in enumerate(SEVERITIES):
        # Of the levels truly of this grade, the share stated with it: a withheld level is not recalled.
        of_grade = t == k
        out[f"selective_recall_{severity.name.lower()}"] = (float((stated & (predicted == k))[of_grade].mean())
                                                           if of_grade.any() else nan)
    return out
