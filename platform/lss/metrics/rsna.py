"""The RSNA 2024 Lumbar Spine Degenerative Classification score of the spinal canal condition: the sample-weighted
log loss of the levels and the any-severe term, each scikit-learn's ``log_loss`` as in the competition's code."""

from __future__ import annotations

import numpy as np

from lss.anatomy import RSNA_SEVERITY_WEIGHTS, SEVERITIES, Severity
from lss.metrics.utils import ArrayLike, severity_probabilities, severity_targets, to_numpy, weighted_log_loss

__all__ = ["rsna_score"]


def rsna_score(probs: ArrayLike, targets: ArrayLike, softmax: bool = False) -> dict[str, float]:
    """The RSNA 2024 Lumbar Spine Degenerative Classification metric, for the spinal canal stenosis condition.

    Follows the competition's scoring code (Kaggle notebook ``metric/rsna-lumbar-metric-71549``, function
    ``score``; as copied in e.g. github.com/adamnarai/kaggle-rsna-2024 ``rsna2024/utils/rsna_lumbar_metric.py``):

    1. ``rsna_log_loss``: ``sklearn.metrics.log_loss`` of the (normal_mild, moderate, severe) probabilities of
       every scored level with ``sample_weight`` 1 / 2 / 4 for a true Normal/Mild / Moderate / Severe level
       (``RSNA_SEVERITY_WEIGHTS``): sum_i w_i * -log p_i[t_i] / sum_i w_i. Levels with an unknown grade are not
       in the solution file and are not scored (here: target -1).
    2. ``any_severe_log_loss``: per study, the label is whether any scored level is Severe, the prediction is the
       maximum of P(Severe) over the scored levels, and the sample weight is the maximum of the levels' sample
       weights (``groupby('study_id')['sample_weight'].max()``): 4 for a positive study, and for a negative one 2
       if a level is Moderate, else 1. Binary log loss with these weights.
    3. ``rsna_score``: the mean of the condition losses and the any-severe loss with weight 1 each
       (``any_severe_scalar`` = 1). Only the spinal canal condition exists here, so this is the mean of 1 and 2;
       the leaderboard score also averages the foraminal and subarticular conditions and is not comparable.

    Probabilities are normalised per row to sum 1 and clipped to [eps, 1 - eps] with eps the float64 machine
    epsilon (scikit-learn's ``log_loss`` since 1.2), P(Severe) included before the maximum of step 2. Where every
    scored study has the same any-severe label, scikit-learn's binary ``log_loss`` raises (one class in
    ``y_true``): the official metric is undefined there, so ``any_severe_log_loss`` and ``rsna_score`` are NaN and
    ``any_severe_defined`` is False (``rsna_log_loss`` is still given).

    Args:
        probs: (B, L, 3) probabilities per study and level (or logits with ``softmax=True``).
        targets: (B, L) severity indices, -1 = unknown (not scored).
        softmax: apply a softmax to ``probs`` first.

    Returns:
        ``rsna_log_loss``, ``any_severe_log_loss``, ``rsna_score``, ``any_severe_defined`` (bool), ``n`` (levels
        scored), ``n_studies`` (studies with at least one scored level); NaN losses when nothing is scored.

    Raises:
        ValueError: on shapes other than (B, L, 3) / (B, L) or values out of range.
    """
    p = to_numpy(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (B, L, {len(SEVERITIES)}), got shape {p.shape}.")
    p = severity_probabilities(p, softmax, "probs")
    t = severity_targets(targets, p.shape[:2], "targets")
    weights = np.asarray(RSNA_SEVERITY_WEIGHTS, dtype=np.float64)
    scored = t >= 0
    level_loss = weighted_log_loss(t[scored], p[scored], weights[t[scored]], list(range(len(SEVERITIES))))

    studies = scored.any(axis=1)
    severe = Severity.SEVERE.index
    label = (np.where(scored, t, -1) == severe).any(axis=1)[studies]
    defined = bool(label.any() and not label.all())
    if defined:
        p_severe = np.where(scored, p[..., severe], -np.inf).max(axis=1)[studies]
        weight = np.where(scored, weights[np.clip(t, 0, None)], 0.0).max(axis=1)[studies]
        any_severe = weighted_log_loss(label, p_severe, weight, [False, True])
    else:
        any_severe = float("nan")
    return {
        "rsna_log_loss": level_loss,
        "any_severe_log_loss": any_severe,
        "rsna_score": float(np.mean([level_loss, any_severe])),
        "any_severe_defined": defined,
        "n": int(scored.sum()),
        "n_studies": int(studies.sum()),
    }
