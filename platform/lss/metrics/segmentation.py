"""Segmentation metrics (MONAI): Dice per foreground structure and its macro mean, and the HD95 of each structure,
per batch (``segmentation_metrics``) or streamed over a validation loop (``SegmentationMeter``).

A target of -1 is an unlabelled pixel, and a structure with nothing to measure is NaN (``lss.metrics.utils``). Names
are ``dice_<Structure.value>`` and ``hd95_<Structure.value>``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from lss.anatomy import Structure
from lss.metrics.utils import ArrayLike, nanmean

__all__ = ["structure_names", "SegmentationMeter", "segmentation_metrics"]


def structure_names(num_classes: int = len(Structure)) -> tuple[str, ...]:
    """Name of every class index: ``Structure`` values ("background", "vertebral_body", ...), then "class_<k>"."""
    known = [s.value for s in Structure]
    return tuple(known[k] if k < len(known) else f"class_{k}" for k in range(num_classes))



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
                raise ValueError(f"partition must be (B, K) = {(y_pred.shape[0], self.num_classes)}, "
                                 f"got {tuple(part.shape)}.")
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
            out[f"dice_{name}"] = nanmean(cases[f"dice_{name}"])
            per_structure.append(out[f"dice_{name}"])
        out["dice_macro"] = nanmean(np.array(per_structure))
        for key in self.hd_keys.values():
            out[key] = nanmean(cases[key])
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
        ``dice_<structure>`` and ``hd95_<structure>`` for every foreground structure, ``dice_macro`` and ``n_cases``
        for the default structures.

    Raises:
        ValueError: on ill-shaped inputs or values out of range.
    """
    meter = SegmentationMeter(num_classes=num_classes)
    meter.update(logits_or_labels, target, spacing, partition)
    return meter.compute()
