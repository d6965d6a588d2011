"""Partial-label segmentation: a loss that never treats an unlabelled structure as background.

Real datasets label different subsets of the structures: ``fastcleverseg_vb2`` vertebral bodies only, the Vesal
slices discs and bodies, SPIDER the whole vertebra as one label (body and posterior elements together). A voxel
marked 0 in such a mask means "background or any structure this dataset does not label", and a voxel of a merged
label means "one of these structures". ``PartialLabelLoss`` scores each case against exactly that: the softmax
probabilities of the structures a label covers are summed into one class (the marginal loss of Shi et al.,
"Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA 2021), so moving
probability between the background and an unlabelled structure (or between the members of a merged label) does
not change the loss, while every labelled boundary is still learned. Voxels marked -1 are unknown for every
structure and left out entirely.

Each case says what it labels with a partition (``lss.anatomy.label_partition``): ``partition[c]`` is the class
that structure ``c`` is merged into (its group's lowest channel; 0 = merged into the background). The identity
partition is a fully labelled case, for which the loss equals the wrapped loss on the plain softmax.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PartialLabelLoss", "merge_probabilities"]


def _membership(partition: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, K) float membership of each structure in each merged class, and the (K,) merged class ids (sorted)."""
    classes = torch.unique(partition)  # sorted; classes[0] == 0 (the background group)
    membership = (partition[:, None] == classes[None, :]).to(torch.float32)
    return membership, classes


def merge_probabilities(probabilities: torch.Tensor, partition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums the probabilities of the structures each label covers.

    Args:
        probabilities: (B, C, *spatial) softmax probabilities.
        partition: (C,) int64 partition shared by the batch.

    Returns:
        (B, K, *spatial) merged probabilities and the (K,) structure channel each merged class stands for.
    """
    membership, classes = _membership(partition.to(probabilities.device), probabilities.shape[1])
    merged = torch.einsum("bc...,ck->bk...", probabilities, membership.to(probabilities.dtype))
    return merged, classes


def _check_partition(partition: torch.Tensor, num_classes: int) -> None:
    if partition.ndim != 1 or partition.shape[0] != num_classes:
        raise ValueError(f"a partition must have shape ({num_classes},), got {tuple(partition.shape)}.")
    values = partition.tolist()
    if values[0] != 0 or any(not 0 <= v <= c or values[v] != v for c, v in enumerate(values)):
        raise ValueError(
            f"partition {values} is not valid: entry c must name the lowest channel of c's group (<= c, a fixed "
            "point), and the background (channel 0) is always its own group's representative."
        )


class PartialLabelLoss(nn.Module):
    """Applies a segmentation loss to the classes each case labels (the marginal over what it does not).

    For every distinct partition in the batch: softmax over the C channels, probabilities summed into the K classes
    of the partition, one-hot targets over those K classes, and voxels with target -1 masked out of both (their
    true positives, false positives and false negatives are all zero). The wrapped loss then sees an ordinary
    K-class problem; the losses of the groups are averaged weighted by their number of cases.

    Args:
        base: a loss over probabilities and one-hot targets ``(B, K, *spatial)`` (built with ``softmax=False``,
            ``to_onehot_y=False``). When it accepts ``classes`` / ``observe`` (``AdaptivePIDTverskyLoss``) it is told
            which structure each merged class stands for, and which of them are single structures: only those feed
            its controller, so a merged class (background plus unlabelled structures, or a union label) never moves
            a structure's weights.
        num_classes: C, the channels of the network's logits.
        ce_weight: weight of a cross-entropy term on the merged probabilities (``dice_ce``); 0 for none.

    Shapes:
        logits (B, C, *spatial); target (B, 1, *spatial) int64 structure indices (in the partition's representative
        channels) with -1 = unknown; partition (B, C) int64 or None (every case fully labelled) -> scalar.

    Raises:
        ValueError: for ``num_classes < 2``, a negative ``ce_weight``, or inputs whose shapes disagree, an invalid
            partition, or a target value that its case's partition does not label.
    """

    def __init__(self, base: nn.Module, num_classes: int, ce_weight: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one structure), got {num_classes}.")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}.")
        self.base = base
        self.num_classes = int(num_classes)
        self.ce_weight = float(ce_weight)
        self._routes = "classes" in inspect.signature(base.forward).parameters

    # The PID controller of a wrapped AdaptivePIDTverskyLoss, for the training loop's logging and epoch updates.
    @property
    def controller(self):
        return self.base.controller

    def has_controller(self) -> bool:
        return hasattr(self.base, "controller")

    def alpha_beta(self):
        return self.base.alpha_beta()

    def end_epoch(self):
        return self.base.end_epoch()

    @staticmethod
    def _log_merged(logits: torch.Tensor, partition: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, K, *spatial) log of the merged probabilities, as a log-sum-exp of the log-softmax (no log(0))."""
        log_p = torch.log_softmax(logits.float(), dim=1)
        member = partition[:, None] == classes[None, :]  # (C, K)
        offset = torch.zeros(member.shape, dtype=log_p.dtype, device=log_p.device).masked_fill(~member, float("-inf"))
        offset = offset.reshape(1, *member.shape, *([1] * (log_p.ndim - 2)))
        return torch.logsumexp(log_p.unsqueeze(2) + offset, dim=1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                partition: torch.Tensor | None = None) -> torch.Tensor:
        b, c = logits.shape[:2]
        if c != self.num_classes:
            raise ValueError(f"logits have {c} channels but num_classes={self.num_classes}.")
        if (target.ndim != logits.ndim or target.shape[0] != b or target.shape[1] != 1
                or target.shape[2:] != logits.shape[2:]):
            raise ValueError(f"target must be (B, 1, *spatial) matching logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}.")
        if partition is None:
            partition = torch.arange(c, device=logits.device).expand(b, c)
        if partition.shape != (b, c):
            raise ValueError(f"partition must be (B, C) = {(b, c)}, got {tuple(partition.shape)}.")
        partition = partition.to(logits.device).long()
        probabilities = torch.softmax(logits.float(), dim=1)
        groups = torch.unique(partition, dim=0)
        total = logits.sum() * 0.0
        for row in groups:
            _check_partition(row, c)
            members = (partition == row).all(dim=1)
            merged, classes = merge_probabilities(probabilities[members], row)
            labels = target[members, 0]
            known = labels >= 0
            allowed = torch.zeros(c, dtype=torch.bool, device=labels.device)
            allowed[classes] = True
            if bool((known & ~allowed[labels.clamp_min(0)]).any()):
                bad = sorted(set(labels[known & ~allowed[labels.clamp_min(0)]].unique().tolist()))
                raise ValueError(f"target values {bad} are not labelled classes of partition {row.tolist()}.")
            # structure index -> merged class index
            lookup = torch.zeros(c, dtype=torch.long, device=labels.device)
            lookup[classes] = torch.arange(len(classes), device=labels.device)
            merged_labels = lookup[labels.clamp_min(0)]
            mask = known.unsqueeze(1).to(merged.dtype)
            onehot = F.one_hot(merged_labels, len(classes)).movedim(-1, 1).to(merged.dtype) * mask
            if self._routes:
                singles = torch.tensor([int((row == k).sum()) == 1 for k in classes.tolist()], device=row.device)
                value = self.base(merged * mask, onehot, classes=classes, observe=singles)
            else:
                value = self.base(merged * mask, onehot)
            if self.ce_weight > 0:
                nll = -(self._log_merged(logits[members], row, classes) * onehot).sum(dim=1)
                value = value + self.ce_weight * nll.sum() / mask.sum().clamp_min(1.0)
            total = total + value * (members.sum() / b)
        return total
