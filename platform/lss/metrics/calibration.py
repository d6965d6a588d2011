"""Reliability of probabilities: equal-width bins over [0, 1] and the expected calibration error (ECE), for
calibration diagrams and the top-label ECE of ``severity_metrics``.

Numpy, not scikit-learn: its ``calibration_curve`` drops empty bins, puts a confidence on a bin edge in the lower
bin (these bins are [lower, upper), the last one closed) and gives no ECE.
"""

from __future__ import annotations

import numpy as np

from lss.metrics.utils import ArrayLike, to_numpy

__all__ = ["calibration_bins"]


def calibration_bins(confidence: ArrayLike, outcome: ArrayLike, n_bins: int = 10) -> dict[str, list[float] | float]:
    """Reliability of probabilities: equal-width bins over [0, 1] and the expected calibration error.

    Args:
        confidence: (N,) predicted probabilities of an event (top-label confidence, or P(class) one-vs-rest).
        outcome: (N,) bool, whether the event happened (prediction correct, or the truth is that class).
        n_bins: number of bins; the last one includes 1.0.

    Returns:
        ``bin_lower``, ``bin_upper``, ``confidence`` (mean per bin), ``frequency`` (observed rate per bin), ``count``
        (NaN confidence/frequency in an empty bin) and ``ece`` = sum_b count_b / N * |frequency_b - confidence_b|
        (NaN when N = 0).

    Raises:
        ValueError: on mismatched shapes, confidences outside [0, 1] or ``n_bins`` < 1.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    conf = to_numpy(confidence)
    hit = to_numpy(outcome).astype(bool) if np.size(outcome) else np.zeros(0, dtype=bool)
    if conf.ndim != 1 or hit.shape != conf.shape:
        raise ValueError(f"confidence and outcome must both be (N,), got {conf.shape} and {hit.shape}.")
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must be probabilities in [0, 1].")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, int(n_bins) - 1)
    count = np.bincount(index, minlength=int(n_bins)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=int(n_bins)) / count
        frequency = np.bincount(index, weights=hit.astype(np.float64), minlength=int(n_bins)) / count
    filled = count > 0
    gap = np.abs(frequency[filled] - mean_conf[filled])
    ece = float(np.sum(count[filled] / conf.size * gap)) if conf.size else float("nan")
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": mean_conf.tolist(),
        "frequency": frequency.tolist(),
        "count": count.astype(int).tolist(),
        "ece": ece,
    }
