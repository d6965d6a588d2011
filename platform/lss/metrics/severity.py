"""Classification metrics of the three-class severity over graded levels: accuracy, balanced accuracy, macro-F1,
recall per class, the confusion matrix, the RSNA 2024 sample-weighted log loss, the plain log loss and the
top-label calibration error.

Every figure but the ECE is scikit-learn's (``accuracy_score``, ``balanced_accuracy_score``, ``f1_score``,
``recall_score``, ``confusion_matrix``, ``log_loss``), on the rows of known severity; this module adds the input
checks, the -1 rule and NaN where there is nothing to score.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from lss.anatomy import RSNA_SEVERITY_WEIGHTS, SEVERITIES
from lss.metrics.calibration import calibration_bins
from lss.metrics.utils import ArrayLike, severity_probabilities, severity_targets, to_numpy, weighted_log_loss

__all__ = ["SEVERITY_NAMES", "severity_metrics"]

# "normal_mild", "moderate", "severe": the RSNA 2024 submission column names of the three severities.
SEVERITY_NAMES: tuple[str, ...] = tuple(s.value.lower().replace("/", "_") for s in SEVERITIES)

CLASSES: tuple[int, ...] = tuple(range(len(SEVERITIES)))


def severity_metrics(probs: ArrayLike, targets: ArrayLike, softmax: bool = False) -> dict[str, float | list]:
    """Classification metrics of the three-class severity over N graded levels.

    Args:
        probs: (N, 3) probabilities (normalised per row here if they do not sum to 1) or, with ``softmax=True``,
            logits, in ``SEVERITIES`` order (Normal/Mild, Moderate, Severe).
        targets: (N,) severity indices; -1 (unknown) rows are left out.
        softmax: apply a softmax to ``probs`` first (for logits).

    Returns:
        ``n`` (rows scored); ``accuracy``; ``balanced_accuracy`` (mean recall over the classes present in the
        targets); ``macro_f1`` (mean F1 over the classes present in the targets or the predictions, F1 = 0 without a
        true positive; scikit-learn's ``f1_score(average="macro")``); ``recall_normal_mild``,
        ``recall_moderate``, ``recall_severe`` (NaN for a class absent from the targets); ``confusion_matrix``
        (3x3 list of counts, rows = truth, columns = prediction); ``rsna_log_loss`` (the RSNA 2024 sample-weighted
        log loss, weights ``RSNA_SEVERITY_WEIGHTS`` 1/2/4 by the true class, see ``rsna_score``); ``log_loss``
        (unweighted); ``ece`` (top-label expected calibration error, 10 bins). Scalars are NaN when ``n`` is 0.

    Raises:
        ValueError: on shapes other than (N, 3) / (N,), targets outside -1..2, non-finite values, or probabilities
            outside [0, 1] without ``softmax``.
    """
    p = to_numpy(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, {len(SEVERITIES)}), got shape {p.shape}.")
    p = severity_probabilities(p, softmax, "probs")
    t = severity_targets(targets, p.shape[:1], "targets")
    keep = t >= 0
    p, t = p[keep], t[keep]
    nan = float("nan")
    if t.size == 0:
        return {"n": 0, "accuracy": nan, "balanced_accuracy": nan, "macro_f1": nan,
                **{f"recall_{name}": nan for name in SEVERITY_NAMES},
                "confusion_matrix": np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64).tolist(),
                "rsna_log_loss": nan, "log_loss": nan, "ece": nan}
    predicted = p.argmax(axis=1)
    labels = list(CLASSES)
    with warnings.catch_warnings():
        # scikit-learn warns where a class is predicted but absent from the truth (it is left out, as documented
        # above) and where one class is all there is (its confusion matrix is then 1x1; the score is still right).
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true", category=UserWarning)
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        balanced = float(balanced_accuracy_score(t, predicted))
    recall = recall_score(t, predicted, labels=labels, average=None, zero_division=np.nan)
    out: dict[str, float | list] = {
        "n": int(t.size),
        "accuracy": float(accuracy_score(t, predicted)),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1_score(t, predicted, average="macro", zero_division=0.0)),
    }
    for name, value in zip(SEVERITY_NAMES, recall, strict=True):
        out[f"recall_{name}"] = float(value)
    out["confusion_matrix"] = confusion_matrix(t, predicted, labels=labels).tolist()
    weights = np.asarray(RSNA_SEVERITY_WEIGHTS, dtype=np.float64)
    out["rsna_log_loss"] = weighted_log_loss(t, p, weights[t], labels)
    out["log_loss"] = weighted_log_loss(t, p, None, labels)
    out["ece"] = calibration_bins(p.max(axis=1), predicted == t)["ece"]
    return out
