"""The metrics of the project, one implementation for training validation, evaluation and tuning.

Segmentation (MONAI): Dice per foreground structure and its macro mean, HD95 of the spinal canal
(``segmentation_metrics``, or ``SegmentationMeter`` to stream a validation loop). Severity (numpy): accuracy,
balanced accuracy, macro-F1, per-class recall, the confusion matrix, the RSNA 2024 sample-weighted log loss and the
top-label calibration error (``severity_metrics``); the RSNA 2024 study-level score with its ``any_severe_spinal``
term (``rsna_score``); reliability bins for calibration diagrams (``calibration_bins``); coverage and selective
accuracy of grades stated above a confidence threshold (``selective_metrics``).

Conventions shared by every function here:
    - a target of -1 means "unknown": an unlabelled pixel, level or case is left out, never counted as an error;
    - a metric with nothing to measure is NaN (never 0 or 1), and ``n``/``n_cases`` says how much was measured;
    - names come from ``lss.anatomy``: ``dice_<Structure.value>`` and ``recall_<severity>`` ("recall_normal_mild").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from lss.anatomy import RSNA_SEVERITY_WEIGHTS, SEVERITIES, Severity, Structure

__all__ = [
    "SEVERITY_NAMES",
    "LOG_LOSS_EPS",
    "structure_names",
    "SegmentationMeter",
    "segmentation_metrics",
    "severity_metrics",
    "rsna_score",
    "calibration_bins",
    "selective_metrics",
]

# "normal_mild", "moderate", "severe": the RSNA 2024 submission column names of the three severities.
SEVERITY_NAMES: tuple[str, ...] = tuple(s.value.lower().replace("/", "_") for s in SEVERITIES)

# Probabilities are clipped to [eps, 1 - eps] before the logarithm, as scikit-learn's log_loss does since 1.2 (the
# machine epsilon of float64; it was 1e-15 before, which scores an over-confident miss up to 1.5 lower).
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)

# Probabilities may stray this far outside [0, 1] (float32 rounding) before they are refused.
PROBABILITY_TOLERANCE = 1e-6

ArrayLike = torch.Tensor | np.ndarray | Sequence


def structure_names(num_classes: int = len(Structure)) -> tuple[str, ...]:
    """Name of every class index: ``Structure`` values ("background", "vertebral_body", ...), then "class_<k>"."""
    known = [s.value for s in Structure]
    return tuple(known[k] if k < len(known) else f"class_{k}" for k in range(num_classes))


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the finite entries; NaN (without a RuntimeWarning) where there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean


# ---------------------------------------------------------------------------------------------------- segmentation
class SegmentationMeter:
    """Streams Dice per structure and the canal HD95 over batches (update per batch, compute at the end).

    Dice comes from MONAI's ``DiceMetric(include_background=False, reduction="none", ignore_empty=False)``, per case
    and structure, then one rule on top:

    - ``ignore_empty=False`` so that a structure predicted in a case whose target has none scores 0: a hallucinated
      structure is an error (MONAI's default ``ignore_empty=True`` would make it NaN and let it go unnoticed);
    - a structure absent from both the prediction and the target, which MONAI then scores 1, is set to NaN and left
      out of the means (as nnU-Net's evaluation does): nothing was there to find, so it is neither a success nor a
      failure.

    ``dice_<structure>`` is the mean over the cases where it is defined; ``dice_macro`` is the mean of those
    per-structure means (each structure counts once, whatever the number of cases that contain it).

    HD95 of each structure is MONAI's ``compute_hausdorff_distance(percentile=95)`` (symmetric, euclidean, on the
    mask edges), in mm when the pixel spacing is given and in pixels otherwise; NaN in a case where the prediction
    or the target lacks the structure (or the case does not label it), and the mean over the other cases.

    Args:
        num_classes: number of classes K, background included (default ``len(Structure)``).
        hd_class: a class index whose HD95 must be measured (default the spinal canal; its key is ``hd_key``);
            None for no HD95 at all.
        hd_percentile: the Hausdorff percentile.
        hd_all: measure the HD95 of every foreground structure (``hd95_<structure>``), not only ``hd_class``.

    Raises:
        ValueError: when ``num_classes`` < 2, ``hd_class`` is no foreground class or ``hd_percentile`` is outside
            (0, 100].
    """

    def __init__(
        self,
        num_classes: int = len(Structure),
        hd_class: int | None = Structure.CANAL.index,
        hd_percentile: float = 95.0,
        hd_all: bool = True,
    ) -> None:
        from monai.metrics import DiceMetric

        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one structure), got {num_classes}.")
        if hd_class is not None and not 1 <= int(hd_class) < int(num_classes):
            raise ValueError(f"hd_class must be a foreground class in 1..{int(num_classes) - 1}, got {hd_class}.")
        if not 0 < float(hd_percentile) <= 100:
            raise ValueError(f"hd_percentile must be in (0, 100], got {hd_percentile}.")
        self.num_classes = int(num_classes)
        self.hd_class = None if hd_class is None else int(hd_class)
        self.hd_percentile = float(hd_percentile)
        self.names = structure_names(self.num_classes)[1:]
        all_names = structure_names(self.num_classes)
        self.hd_key = None if self.hd_class is None else f"hd{self.hd_percentile:g}_{all_names[self.hd_class]}"
        if self.hd_class is None:
            self.hd_classes: tuple[int, ...] = ()
        else:
            self.hd_classes = tuple(range(1, self.num_classes)) if hd_all else (self.hd_class,)
        self.hd_keys = {k: f"hd{self.hd_percentile:g}_{all_names[k]}" for k in self.hd_classes}
        self._dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        self.reset()

    def reset(self) -> None:
        """Forgets every batch seen."""
        self._dice.reset()
        self._both_empty: list[torch.Tensor] = []
        self._unlabelled: list[torch.Tensor] = []
        self._hd: list[np.ndarray] = []  # (B, len(hd_classes)) per batch
        self._in_mm: bool | None = None

    def __len__(self) -> int:
        """Number of labelled cases measured so far."""
        return int(sum(len(m) for m in self._both_empty))

    def _check(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 3:
            raise ValueError(f"target must be (B, H, W) class indices, got shape {tuple(y.shape)}.")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"target must hold integer class indices (-1 = unlabelled), got dtype {y.dtype}.")
        if y_pred.ndim == 4:
            if y_pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"prediction logits must have K={self.num_classes} channels, got shape {tuple(y_pred.shape)}."
                )
            if (y_pred.shape[0], *y_pred.shape[2:]) != tuple(y.shape):
                raise ValueError(
                    f"prediction (B, K, H, W) {tuple(y_pred.shape)} does not match target (B, H, W) {tuple(y.shape)}."
                )
            labels = y_pred.argmax(dim=1)
        elif y_pred.ndim == 3:
            if tuple(y_pred.shape) != tuple(y.shape):
                raise ValueError(f"prediction labels {tuple(y_pred.shape)} do not match target {tuple(y.shape)}.")
            if y_pred.dtype.is_floating_point:
                raise ValueError(f"prediction labels (B, H, W) must be integers, got dtype {y_pred.dtype}.")
            labels = y_pred.long()
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"prediction labels must be in 0..{self.num_classes - 1}, "
                                 f"got {int(labels.min())}..{int(labels.max())}.")
        else:
            raise ValueError(f"prediction must be (B, K, H, W) logits or (B, H, W) labels, got {tuple(y_pred.shape)}.")
        if y.numel() and (y.min() < -1 or y.max() >= self.num_classes):
            raise ValueError(f"target values must be -1 (unlabelled) or 0..{self.num_classes - 1}, "
                             f"got {int(y.min())}..{int(y.max())}.")
        return labels

    @staticmethod
    def _spacing(spacing, batch: int) -> np.ndarray | None:
        if spacing is None:
            return None
        values = np.asarray(spacing.detach().cpu() if isinstance(spacing, torch.Tensor) else spacing, dtype=np.float64)
        if values.ndim == 0:
            values = np.full((batch, 2), float(values))
        elif values.shape == (2,):
            values = np.tile(values, (batch, 1))
        if values.shape != (batch, 2):
            raise ValueError(f"spacing must be a number, (2,) or (B={batch}, 2) in mm, got shape {values.shape}.")
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"spacing must be positive and finite, got {values.tolist()}.")
        return values

    def update(self, y_pred: torch.Tensor, y: torch.Tensor, spacing: float | ArrayLike | None = None,
               partition: ArrayLike | None = None) -> torch.Tensor:
        """Adds a batch.

        Args:
            y_pred: (B, K, H, W) logits (or probabilities; the argmax over K is taken) or (B, H, W) integer labels.
            y: (B, H, W) integer targets; -1 marks unlabelled pixels, and a case whose target is all -1 is skipped.
            spacing: pixel size (H, W) in mm for HD95: a number, a pair, or one pair per case (B, 2); None = pixels.
            partition: (B, K) what each case labels (``lss.anatomy.label_partition``); None: everything. A
                structure a case does not label is scored NaN there (never a false positive), the prediction of an
                unlabelled structure counts as background, and a union label (SPIDER's whole vertebra) is scored
                under its lowest structure's name against the union of its members' predictions.

        Returns:
            (B', K - 1) Dice of the B' labelled cases of the batch (NaN where a structure is in neither).

        Raises:
            ValueError: on ill-shaped inputs, values out of range, a bad spacing, or spacing given for some batches
                and not for others (HD95 would mix mm and pixels).
        """
        y_pred, y = torch.as_tensor(y_pred).detach(), torch.as_tensor(y).detach()
        labels = self._check(y_pred, y)
        spacing_b = self._spacing(spacing, y.shape[0])
        in_mm = spacing_b is not None
        if self._in_mm is not None and in_mm != self._in_mm:
            raise ValueError("spacing was given for some batches and not for others: HD95 would mix mm and pixels.")
        self._in_mm = in_mm

        valid = y >= 0
        keep = valid.flatten(1).any(dim=1)
        if not bool(keep.any()):
            return torch.zeros((0, self.num_classes - 1))
        labels, y, valid = labels[keep].cpu(), y[keep].cpu(), valid[keep].cpu()
        if partition is None:
            part = torch.arange(self.num_classes).expand(len(labels), self.num_classes)
        else:
            part = torch.as_tensor(np.asarray(partition.cpu() if isinstance(partition, torch.Tensor) else partition))
            if part.shape != (y_pred.shape[0], self.num_classes):
                raise ValueError(f"partition must be (B, K) = {(y_pred.shape[0], self.num_classes)}, got {tuple(part.shape)}.")
            part = part.long()[keep.cpu()]
        labels = torch.gather(part, 1, labels.flatten(1)).reshape(labels.shape)
        unlabelled = part[:, 1:] != torch.arange(1, self.num_classes)
        self._unlabelled.append(unlabelled)
        if spacing_b is not None:
            spacing_b = spacing_b[keep.cpu().numpy()]
        # One-hot with the unlabelled pixels zeroed in both: they are neither hits, misses nor false alarms.
        mask = valid[:, None].float()
        pred_oh = torch.nn.functional.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float() * mask
        true_oh = torch.nn.functional.one_hot(y.clamp(min=0), self.num_classes).permute(0, 3, 1, 2).float() * mask

        dice = self._dice(y_pred=pred_oh, y=true_oh).float()
        pred_any = pred_oh[:, 1:].flatten(2).any(dim=2)
        true_any = true_oh[:, 1:].flatten(2).any(dim=2)
        both_empty = ~pred_any & ~true_any
        self._both_empty.append(both_empty)

        if self.hd_classes:
            self._hd.append(np.stack([self._hausdorff(pred_oh[:, k], true_oh[:, k], spacing_b)
                                      for k in self.hd_classes], axis=1))
        return torch.where(both_empty | unlabelled, torch.full_like(dice, float("nan")), dice)

    def _hausdorff(self, pred: torch.Tensor, true: torch.Tensor, spacing: np.ndarray | None) -> np.ndarray:
        from monai.metrics import compute_hausdorff_distance

        out = np.full(pred.shape[0], np.nan)
        both = (pred.flatten(1).any(dim=1) & true.flatten(1).any(dim=1)).numpy()
        if both.any():
            index = np.flatnonzero(both)

            def two(mask: torch.Tensor) -> torch.Tensor:  # (B, 2, H, W): background | structure
                return torch.stack([1 - mask, mask], dim=1)

            with warnings.catch_warnings():
                # MONAI 1.6 warns about an argument its own edge code still passes; nothing to act on here.
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
                values = compute_hausdorff_distance(
                    two(pred[index]), two(true[index]), include_background=False, percentile=self.hd_percentile,
                    spacing=None if spacing is None else [tuple(s) for s in spacing[index]],
                )
            out[index] = values[:, 0].double().numpy()
        return out

    def per_case(self) -> dict[str, np.ndarray]:
        """Every measured case: ``dice_<structure>`` (N,) each and the HD95 (N,), NaN where undefined.

        Under torch.distributed, MONAI's buffer gathers every rank's cases (rank order), and so do the empty flags
        and the HD95 here: each rank must call it, and each gets all cases.
        """
        import torch.distributed as dist

        empty = torch.zeros((0, self.num_classes - 1), dtype=torch.bool)
        both_empty = torch.cat(self._both_empty) if self._both_empty else empty
        unlabelled = torch.cat(self._unlabelled) if self._unlabelled else empty
        hd = np.concatenate(self._hd) if self._hd else np.zeros((0, len(self.hd_classes)))
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (both_empty, unlabelled, hd))
            both_empty = torch.cat([g[0] for g in gathered])
            unlabelled = torch.cat([g[1] for g in gathered])
            hd = np.concatenate([g[2] for g in gathered])
        if len(both_empty) == 0:
            dice = np.zeros((0, self.num_classes - 1))
        else:
            dice = self._dice.get_buffer().detach().cpu().double().numpy()
            dice[(both_empty | unlabelled).numpy()] = np.nan
        out = {f"dice_{name}": dice[:, k] for k, name in enumerate(self.names)}
        for j, k in enumerate(self.hd_classes):
            out[self.hd_keys[k]] = hd[:, j]
        return out

    def compute(self) -> dict[str, float]:
        """The aggregate of every batch seen.

        Returns:
            ``dice_<structure>`` for each foreground structure, ``dice_macro``, the HD95 (``hd95_spinal_canal`` by
            default; mm when spacing was given, else pixels) and ``n_cases`` (labelled cases measured). NaN for what
            could not be measured.
        """
        cases = self.per_case()
        out: dict[str, float] = {}
        per_structure = []
        for name in self.names:
            out[f"dice_{name}"] = _nanmean(cases[f"dice_{name}"])
            per_structure.append(out[f"dice_{name}"])
        out["dice_macro"] = _nanmean(np.array(per_structure))
        for key in self.hd_keys.values():
            out[key] = _nanmean(cases[key])
        out["n_cases"] = len(cases[f"dice_{self.names[0]}"])
        return out


def segmentation_metrics(
    logits_or_labels: torch.Tensor,
    target: torch.Tensor,
    num_classes: int = len(Structure),
    spacing: float | ArrayLike | None = None,
    partition: ArrayLike | None = None,
) -> dict[str, float]:
    """Dice and HD95 per foreground structure and the Dice macro mean of one batch.

    See ``SegmentationMeter`` for the rules (empty structures, unlabelled pixels, units).

    Args:
        logits_or_labels: (B, K, H, W) logits or (B, H, W) integer labels.
        target: (B, H, W) integer targets, -1 = unlabelled (a case that is all -1 is left out).
        num_classes: K, background included.
        spacing: pixel size in mm (a number, a pair or (B, 2)); None gives HD95 in pixels.
        partition: (B, K) what each case labels (see ``SegmentationMeter.update``); None: everything.

    Returns:
        ``dice_<structure>`` and ``hd95_<structure>`` for every foreground structure, ``dice_macro`` and ``n_cases`` for the
        default structures.

    Raises:
        ValueError: on ill-shaped inputs or values out of range.
    """
    meter = SegmentationMeter(num_classes=num_classes)
    meter.update(logits_or_labels, target, spacing, partition)
    return meter.compute()


# ---------------------------------------------------------------------------------------------------- severity
def _to_numpy(values: ArrayLike, dtype=np.float64) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def _probabilities(values: ArrayLike, softmax: bool, what: str) -> np.ndarray:
    """(..., 3) probabilities: softmax of logits, or the given probabilities normalised per row and clipped."""
    probs = _to_numpy(values)
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


def _targets(values: ArrayLike, shape: tuple[int, ...], what: str) -> np.ndarray:
    raw = _to_numpy(values, dtype=np.float64)
    if raw.shape != shape:
        raise ValueError(f"{what} must have shape {shape} to match the probabilities, got {raw.shape}.")
    if raw.size and (not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw))):
        raise ValueError(f"{what} must hold integer severity indices (-1 = unknown).")
    targets = raw.astype(np.int64)
    if targets.size and (targets.min() < -1 or targets.max() >= len(SEVERITIES)):
        raise ValueError(f"{what} must be -1 (unknown) or 0..{len(SEVERITIES) - 1}, "
                         f"got {targets.min()}..{targets.max()}.")
    return targets


def _weighted_log_loss(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    """sum_i w_i * -log p_i[t_i] / sum_i w_i (scikit-learn's ``log_loss`` with ``sample_weight``)."""
    if targets.size == 0:
        return float("nan")
    picked = probs[np.arange(len(targets)), targets]
    return float(np.sum(weights * -np.log(picked)) / np.sum(weights))


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
    conf = _to_numpy(confidence)
    hit = _to_numpy(outcome).astype(bool) if np.size(outcome) else np.zeros(0, dtype=bool)
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
        true positive; as scikit-learn's ``f1_score(average="macro")``); ``recall_normal_mild``,
        ``recall_moderate``, ``recall_severe`` (NaN for a class absent from the targets); ``confusion_matrix``
        (3x3 list of counts, rows = truth, columns = prediction); ``rsna_log_loss`` (the RSNA 2024 sample-weighted
        log loss, weights ``RSNA_SEVERITY_WEIGHTS`` 1/2/4 by the true class, see ``rsna_score``); ``log_loss``
        (unweighted); ``ece`` (top-label expected calibration error, 10 bins). Scalars are NaN when ``n`` is 0.

    Raises:
        ValueError: on shapes other than (N, 3) / (N,), targets outside -1..2, non-finite values, or probabilities
            outside [0, 1] without ``softmax``.
    """
    p = _to_numpy(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, {len(SEVERITIES)}), got shape {p.shape}.")
    p = _probabilities(p, softmax, "probs")
    t = _targets(targets, p.shape[:1], "targets")
    keep = t >= 0
    p, t = p[keep], t[keep]
    k = len(SEVERITIES)
    nan = float("nan")
    out: dict[str, float | list] = {"n": int(t.size)}
    predicted = p.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (t, predicted), 1)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    tp = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted_count > 0, tp / predicted_count, 0.0)
        f1 = np.where(tp > 0, 2 * precision * np.nan_to_num(recall) / (precision + np.nan_to_num(recall)), 0.0)
    present = (support > 0) | (predicted_count > 0)
    out["accuracy"] = float(tp.sum() / t.size) if t.size else nan
    out["balanced_accuracy"] = _nanmean(recall)
    out["macro_f1"] = float(f1[present].mean()) if t.size else nan
    for name, value in zip(SEVERITY_NAMES, recall, strict=True):
        out[f"recall_{name}"] = float(value)
    out["confusion_matrix"] = confusion.tolist()
    weights = np.asarray(RSNA_SEVERITY_WEIGHTS, dtype=np.float64)
    out["rsna_log_loss"] = _weighted_log_loss(p, t, weights[t])
    out["log_loss"] = _weighted_log_loss(p, t, np.ones(t.size))
    out["ece"] = calibration_bins(p.max(axis=1), predicted == t)["ece"] if t.size else nan
    return out


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
    p = _to_numpy(probs)
    if p.ndim < 1 or p.shape[-1] != len(SEVERITIES):
        raise ValueError(f"probs must be (N, {len(SEVERITIES)}), got shape {p.shape}.")
    p = _probabilities(p.reshape(-1, len(SEVERITIES)), False, "probs")
    t = _targets(_to_numpy(targets).reshape(-1), p.shape[:1], "targets")
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
    p = _to_numpy(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (B, L, {len(SEVERITIES)}), got shape {p.shape}.")
    p = _probabilities(p, softmax, "probs")
    t = _targets(targets, p.shape[:2], "targets")
    weights = np.asarray(RSNA_SEVERITY_WEIGHTS, dtype=np.float64)
    scored = t >= 0
    level_loss = _weighted_log_loss(p[scored], t[scored], weights[t[scored]])

    studies = scored.any(axis=1)
    severe = Severity.SEVERE.index
    label = (np.where(scored, t, -1) == severe).any(axis=1)[studies]
    defined = bool(label.any() and not label.all())
    if defined:
        p_severe = np.where(scored, p[..., severe], -np.inf).max(axis=1)[studies]
        weight = np.where(scored, weights[np.clip(t, 0, None)], 0.0).max(axis=1)[studies]
        p_severe = np.clip(p_severe, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        binary = -(label * np.log(p_severe) + (~label) * np.log(1 - p_severe))
        any_severe = float(np.sum(weight * binary) / np.sum(weight))
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

