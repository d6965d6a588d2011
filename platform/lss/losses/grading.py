"""Severity grading loss: class-weighted (focal) cross-entropy over the severities of each level, plus RSNA's
"any severe" term."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lss.anatomy import RSNA_SEVERITY_WEIGHTS, SEVERITIES, Severity

__all__ = ["SeverityLoss", "RSNA_SEVERITY_WEIGHTS"]


class SeverityLoss(nn.Module):
    """Class-weighted cross-entropy (optionally focal) over the severity classes of each graded level.

    For each level l of study b with a known grade ``y`` (``targets[b, l] != ignore_index``)::

        loss_bl = -w_y (1 - p_y) ** focal_gamma log p_y,    p = softmax(logits[b, l])

    and the severity term is ``sum(loss_bl) / sum(w_y)`` over known levels: with ``focal_gamma = 0`` this is exactly
    ``torch.nn.functional.cross_entropy(logits, targets, weight=w, ignore_index=ignore_index)``, i.e. RSNA 2024's
    sample-weighted log loss with ``weights="rsna"`` (1/2/4). ``focal_gamma > 0`` is the focal loss of Lin et al.
    (2017), down-weighting levels already graded confidently.

    With ``any_severe_weight > 0`` the RSNA "any severe" term is added: per study, the prediction is the largest
    Severe probability over its known levels and the label is whether any known level is Severe; a binary log loss
    weighted like RSNA's metric by the largest class weight among the study's known levels (``w_Severe`` when a level
    is Severe), normalised by the sum of those weights. Studies without a known level do not count. The total is
    ``severity term + any_severe_weight * any-severe term``. With no known level at all, a term is 0 (still attached
    to the graph), not NaN.

    Args:
        weights: per-class weights in ``lss.anatomy.SEVERITIES`` order, ``"rsna"`` for ``RSNA_SEVERITY_WEIGHTS``
            (1, 2, 4), or None for equal weights.
        focal_gamma: focal exponent >= 0; 0 = cross-entropy.
        any_severe_weight: coefficient (>= 0) of the "any severe" term; 0 = off.
        ignore_index: target value of an unknown grade (ignored); must not be a class index.

    Raises:
        TypeError: when ``weights`` is neither None, "rsna" nor a sequence of numbers.
        ValueError: for weights of the wrong length, negative, non-finite or all zero, an unknown weights name,
            a negative or non-finite ``focal_gamma`` or ``any_severe_weight``, or an ``ignore_index`` in 0..2.

    Example::

        loss = SeverityLoss(weights="rsna", any_severe_weight=1.0)
        value = loss(logits, grades)  # logits (B, 5, 3) for the five levels, grades (B, 5) in {-1, 0, 1, 2}
    """

    class_weights: torch.Tensor

    def __init__(
        self,
        weights: Sequence[float] | Literal["rsna"] | None = None,
        focal_gamma: float = 0.0,
        any_severe_weight: float = 0.0,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        num_classes = len(SEVERITIES)
        if weights is None:
            values: tuple[float, ...] = (1.0,) * num_classes
        elif isinstance(weights, str):
            if weights != "rsna":
                raise ValueError(f"weights must be None, 'rsna' or {num_classes} numbers, got {weights!r}.")
            values = RSNA_SEVERITY_WEIGHTS
        else:
            try:
                values = tuple(float(w) for w in weights)
            except (TypeError, ValueError) as error:
                raise TypeError(f"weights must be None, 'rsna' or {num_classes} numbers, got {weights!r}.") from error
        if len(values) != num_classes:
            raise ValueError(f"weights must have {num_classes} values (one per severity), got {len(values)}: {values}.")
        if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) == 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {values}.")
        if not (math.isfinite(float(focal_gamma)) and focal_gamma >= 0):
            raise ValueError(f"focal_gamma must be a finite number >= 0, got {focal_gamma!r}.")
        if not (math.isfinite(float(any_severe_weight)) and any_severe_weight >= 0):
            raise ValueError(f"any_severe_weight must be a finite number >= 0, got {any_severe_weight!r}.")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must not be a class index (0..{num_classes - 1}), got {ignore_index}.")
        self.num_classes = num_classes
        self.focal_gamma = float(focal_gamma)
        self.any_severe_weight = float(any_severe_weight)
        self.ignore_index = int(ignore_index)
        self.register_buffer("class_weights", torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, L, 3) unnormalised scores per level and severity (``SEVERITIES`` order).
            targets: (B, L) integer severity indices, ``ignore_index`` (-1) where unknown.

        Returns:
            the loss, a scalar.

        Raises:
            ValueError: for logits not (B, L, 3), targets not (B, L), or a target value that is neither a class
                index nor ``ignore_index``.
            TypeError: for targets that are not integers.
        """
        if logits.ndim != 3 or logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits must be (B, L, {self.num_classes}), got shape {tuple(logits.shape)}.")
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"targets must be (B, L) = {tuple(logits.shape[:2])}, got shape {tuple(targets.shape)}.")
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}.")
        known = targets != self.ignore_index
        if bool(((targets[known] < 0) | (targets[known] >= self.num_classes)).any()):
            bad = sorted(set(targets[known].tolist()) - set(range(self.num_classes)))
            raise ValueError(
                f"targets must be in 0..{self.num_classes - 1} or {self.ignore_index} (unknown), got values {bad}."
            )

        weights = self.class_weights.to(device=logits.device, dtype=logits.dtype)
        log_probs = torch.log_softmax(logits, dim=-1)
        safe_targets = torch.where(known, targets, torch.zeros_like(targets)).long()
        log_p = log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (B, L)
        sample_weights = weights[safe_targets] * known  # (B, L), 0 where unknown
        per_level = -log_p
        if self.focal_gamma > 0:
            per_level = per_level * (1.0 - log_p.exp()).clamp_min(0).pow(self.focal_gamma)
        loss = self._weighted_mean(per_level, sample_weights, logits)
        if self.any_severe_weight > 0:
            loss = loss + self.any_severe_weight * self._any_severe(log_probs, known, targets, sample_weights, logits)
        return loss

    @staticmethod
    def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        total = weights.sum()
        if total <= 0:
            return logits.sum() * 0.0
        return (values * weights).sum() / total

    def _any_severe(
        self,
        log_probs: torch.Tensor,
        known: torch.Tensor,
        targets: torch.Tensor,
        sample_weights: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor:
        severe = Severity.SEVERE.index
        others = [i for i in range(self.num_classes) if i != severe]
        # log of the largest Severe probability, and log of (1 - it) computed from the other classes (stable).
        log_severe = log_probs[..., severe].masked_fill(~known, -math.inf).amax(dim=1)  # (B,)
        log_not_severe = torch.logsumexp(log_probs[..., others], dim=-1)  # (B, L): log(1 - p_severe)
        log_not_any = log_not_severe.masked_fill(~known, math.inf).amin(dim=1)  # (B,)
        label = ((targets == severe) & known).any(dim=1)
        study_known = known.any(dim=1)
        per_study = -torch.where(label, log_severe, log_not_any)
        per_study = torch.where(study_known, per_study, torch.zeros_like(per_study))
        study_weights = sample_weights.amax(dim=1) * study_known
        return self._weighted_mean(per_study, study_weights, logits)

    def extra_repr(self) -> str:
        return (
            f"weights={tuple(self.class_weights.tolist())}, focal_gamma={self.focal_gamma}, "
            f"any_severe_weight={self.any_severe_weight}, ignore_index={self.ignore_index}"
        )
