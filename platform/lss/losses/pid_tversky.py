"""Adaptive PID-Tversky loss: a Tversky loss whose per-class false-negative weight is steered by a PID controller."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.distributed as dist
from monai.losses.utils import compute_tp_fp_fn, mask_loss_inputs
from monai.metrics.utils import create_ignore_mask
from monai.networks import one_hot
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from lss.losses.pid import AntiWindup, PIDController

__all__ = ["AdaptivePIDTverskyLoss", "UPDATE_MODES", "ERROR_COUNTS"]

UPDATE_MODES: tuple[str, ...] = ("step", "epoch")
ERROR_COUNTS: tuple[str, ...] = ("hard", "soft")

# Keeps the error of a class with no false negatives and no false positives at 0 (in voxels, soft counts).
_ERROR_EPS = 1e-6


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums ``tensor`` over the workers of the default process group; returns it unchanged without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    device = tensor.device
    work = tensor.clone()
    if dist.get_backend() == "nccl" and device.type != "cuda":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(device)


class AdaptivePIDTverskyLoss(_Loss):
    """Tversky loss with per-class weights adapted during training by a PID controller on an under-segmentation error.

    The loss of a batch is the Tversky loss of Salehi et al. (2017), as MONAI's ``TverskyLoss`` computes it, with
    class-wise weights and an optional focal exponent (Abraham & Khan 2019)::

        TI_c   = (TP_c + smooth_nr) / (TP_c + alpha_c FP_c + beta_c FN_c + smooth_dr)
        loss_c = (1 - TI_c) ** (1 / focal_gamma)

    ``focal_gamma = 1`` is the plain Tversky loss; Abraham & Khan use ``focal_gamma = 4/3``. With
    ``kp = ki = kd = 0`` the weights never move and the loss is exactly MONAI's ``TverskyLoss`` with the same
    arguments (``focal_gamma = 1``).

    **Error signal.** After the loss of a training batch is computed with the current weights, the counts of the
    batch (summed over batch and space, detached, all-reduced over DDP workers) give per class::

        e_c = (FN_c - FP_c) / (FN_c + FP_c + eps) - target

    With ``error_counts="hard"`` (the default) FN and FP are counted on the argmax of the prediction, the mask every
    measurement is taken from; ``"soft"`` counts them on the probabilities, as the Tversky index does. The two set
    different fixed points: soft counts balance when the summed probabilities match the true volume, which leaves the
    argmax mask larger or smaller whenever the probabilities at the boundary are not symmetric (a steady area bias of
    the measured masks that the integral never sees). ``FN_c - FP_c`` equals the true minus the predicted volume, so
    ``e_c > 0`` means class c is under-segmented (more missed voxels than spurious ones) and ``e_c < 0``
    over-segmented. The normalised form is bounded in [-1, 1], does not depend on the size of the class or of the
    batch (so one set of gains fits a small canal and large vertebrae alike), is 0 exactly when the predicted volume
    matches the true volume, and stays
    defined for a class absent from the batch (then every error is a false positive and ``e_c = -1``). Unlike
    "target recall minus recall" it cannot ask for an unreachable value, so the integral has a real fixed point.
    ``target`` shifts the balance aimed at: a negative value asks for more false positives than false negatives
    (favours recall).

    **Weights.** A per-class ``PIDController`` turns the error into
    ``beta_c = clip(beta + Kp e_c + Ki sum(e_c) + Kd delta(e_c), beta_bounds)``; the false-positive weight moves the
    other way by the same amount, ``alpha_c = alpha - (beta_c - beta)``, so ``alpha_c + beta_c = alpha + beta``
    always holds: the controller trades false positives against false negatives without changing the overall scale
    of the denominator. With ``alpha + beta = 1`` (the usual choice) this is ``alpha_c = 1 - beta_c``; another sum
    is kept as given. The integral does not wind up (see ``PIDController``, ``anti_windup``).

    Raising ``beta_c`` always shifts the balance of the gradient from false positives towards false negatives. Its
    absolute pull on a missed voxel, ``(alpha FP + beta |G|) / denominator**2``, grows with beta only while the soft
    recall exceeds about ``beta / (1 + beta)`` (with few false positives): for a class that is almost entirely
    missed, a larger beta weakens that pull, and the adaptation helps once the class is partly found.

    **When it updates.** Only in train mode (``self.training``), as a side effect under ``torch.no_grad`` after the
    loss is computed, so the returned loss is a function of the input and the current weights. The loss is usually
    not a sub-module of the network: call ``loss.eval()`` yourself around validation. ``update="step"`` updates
    after every training batch; ``update="epoch"`` accumulates the counts and updates when ``end_epoch()`` is called.
    When ``torch.distributed`` is initialised, the counts are all-reduced (SUM) before the update, so every worker
    holds the same weights; every worker must then call ``forward`` (in train mode) and ``end_epoch`` equally often.

    The controller state (integral, previous error, current beta, step count) and the epoch accumulators are
    buffers: ``state_dict()`` saves them and ``load_state_dict`` restores them. ``alpha_beta()`` returns the
    current weights for logging. A background channel excluded by ``include_background=False`` keeps the base
    weights.

    Args:
        include_background: if False, channel 0 (background) is excluded from the loss and the controller.
        to_onehot_y: whether to convert ``target`` (class indices, B1H[WD]) into one-hot format.
        sigmoid: if True, apply a sigmoid to the prediction.
        softmax: if True, apply a softmax over channels to the prediction.
        other_act: another activation to apply to the prediction (e.g. ``torch.tanh``), instead of sigmoid/softmax.
        alpha: base weight of false positives.
        beta: base weight of false negatives; the controller's set-point output (zero error, zero integral).
        reduction: ``"none"`` (B, C) or (C,) with ``batch=True``, ``"mean"`` or ``"sum"``.
        smooth_nr: a small constant added to the numerator to avoid zero.
        smooth_dr: a small constant added to the denominator to avoid nan.
        batch: sum the counts over the batch before dividing (one Tversky index per class), as in MONAI.
            The controller always uses the counts summed over the batch, whatever this option.
        soft_label: whether the target contains non-binary values (MONAI's soft-label formulation).
        ignore_index: a class index (or sentinel value) whose voxels are excluded, as in MONAI.
        num_classes: the number of channels C of the prediction; sizes the per-class controller state.
        kp: proportional gain (>= 0).
        ki: integral gain (>= 0) per update.
        kd: derivative gain (>= 0) per update.
        beta_bounds: (low, high) limits of ``beta_c`` with ``0 <= low <= beta <= high <= alpha + beta``, so that both
            weights stay non-negative. None: ``(0, alpha + beta)``.
        ema: smoothing factor of the error in [0, 1) (``e <- ema * e_previous + (1 - ema) * e_batch``); 0 = none.
        target: the balance ``(FN - FP) / (FN + FP)`` aimed at, in (-1, 1); 0 = as many false negatives as false
            positives.
        update: ``"step"`` (after every training batch) or ``"epoch"`` (on ``end_epoch()``).
        focal_gamma: focal exponent gamma > 0, the loss per class is ``(1 - TI) ** (1 / gamma)``; 1 = plain Tversky.
        anti_windup: ``"conditional"`` (default), ``"clamp"`` or ``"none"``, see ``PIDController``.
        integral_limit: bound of the integral for ``anti_windup="clamp"``; None: ``(high - low) / ki``.
        error_counts: ``"hard"`` (counts of the argmax mask, what is measured) or ``"soft"`` (of the probabilities).

    Raises:
        TypeError: when ``other_act`` is not callable or ``num_classes`` is not an int.
        ValueError: when more than one of ``sigmoid``, ``softmax``, ``other_act`` is set, for an unknown
            ``reduction``, ``update`` or ``error_counts``, a negative ``alpha``/``beta``, ``beta_bounds`` not
            containing ``beta`` or reaching past ``alpha + beta``, a bad gain, ``ema``, ``target`` or
            ``focal_gamma``.

    Example::

        loss = AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=4, kp=0.1, ki=0.01)
        value = loss(logits, labels)  # logits (B, 4, H, W[, D]), labels (B, 1, H, W[, D]) integer classes
        alpha, beta = loss.alpha_beta()  # (4,), (4,)
    """

    epoch_statistics: torch.Tensor
    epoch_batches: torch.Tensor

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        reduction: LossReduction | str = LossReduction.MEAN,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        ignore_index: int | None = None,
        *,
        num_classes: int,
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.0,
        beta_bounds: Sequence[float] | None = None,
        ema: float = 0.9,
        target: float = 0.0,
        update: Literal["step", "epoch"] = "step",
        focal_gamma: float = 1.0,
        anti_windup: AntiWindup = "conditional",
        integral_limit: float | None = None,
        error_counts: Literal["hard", "soft"] = "hard",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__} ({num_classes!r}).")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        for name, weight in (("alpha", alpha), ("beta", beta)):
            if not math.isfinite(float(weight)) or weight < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}.")
        if beta_bounds is None:
            beta_bounds = (0.0, float(alpha) + float(beta))
        if len(beta_bounds) != 2:
            raise ValueError(f"beta_bounds must be (low, high), got {tuple(beta_bounds)!r}.")
        low, high = float(beta_bounds[0]), float(beta_bounds[1])
        if not 0.0 <= low <= beta <= high <= alpha + beta:
            raise ValueError(
                f"beta_bounds must satisfy 0 <= low <= beta <= high <= alpha + beta (= {alpha + beta}) so that beta "
                f"starts inside and alpha stays >= 0; got beta_bounds={(low, high)}, alpha={alpha}, beta={beta}."
            )
        if not -1.0 < target < 1.0:
            raise ValueError(f"target must be in (-1, 1) (a balance (FN - FP) / (FN + FP)), got {target!r}.")
        if update not in UPDATE_MODES:
            raise ValueError(f"update must be one of {UPDATE_MODES}, got {update!r}.")
        if error_counts not in ERROR_COUNTS:
            raise ValueError(f"error_counts must be one of {ERROR_COUNTS}, got {error_counts!r}.")
        if not (math.isfinite(float(focal_gamma)) and focal_gamma > 0):
            raise ValueError(f"focal_gamma must be a finite number > 0, got {focal_gamma!r}.")

        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.soft_label = soft_label
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.target = float(target)
        self.update = update
        self.focal_gamma = float(focal_gamma)
        self.error_counts = error_counts
        # Channel 0 is dropped from the loss (and kept at the base weights) when background is excluded.
        self.first_channel = 0 if include_background or num_classes == 1 else 1
        self.controller = PIDController(
            num_classes,
            kp=kp,
            ki=ki,
            kd=kd,
            base=self.beta,
            bounds=(low, high),
            ema=ema,
            anti_windup=anti_windup,
            integral_limit=integral_limit,
        )
        # Rows: summed false negatives, summed false positives, batches that observed the class, since end_epoch().
        self.register_buffer("epoch_statistics", torch.zeros(3, num_classes, dtype=torch.float64))
        self.register_buffer("epoch_batches", torch.zeros((), dtype=torch.long))

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current weights, for logging.

        Returns:
            (alpha, beta), each (num_classes,) float64: the false-positive and false-negative weight of each class.
        """
        beta = self.controller.output.detach().clone()
        alpha = self.alpha - (beta - self.beta)
        return alpha, beta

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        classes: Sequence[int] | torch.Tensor | None = None,
        observe: Sequence[bool] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input: BNH[WD], the prediction (logits with ``sigmoid``/``softmax``), N = ``num_classes``, or N classes
                of them named by ``classes``.
            target: B1H[WD] class indices with ``to_onehot_y``, else BNH[WD] one-hot (or soft) labels.
            classes: (N,) which of the ``num_classes`` classes each input channel is, increasing, channel 0 the
                background (class 0); used by ``lss.losses.PartialLabelLoss`` for a case that labels only some
                structures (the others merged into the background). None: all classes in order.
            observe: (N,) bool, the channels whose counts feed the controller (a merged channel should not: its
                counts are not those of any one class). None: all.

        Returns:
            the loss: a scalar for ``"mean"``/``"sum"``, else (B, N) (or (N,) with ``batch=True``), N without the
            background when it is excluded.

        Raises:
            ValueError: when ``input`` has fewer than 3 dimensions or not ``num_classes`` channels, or when
                ``target`` does not match ``input`` in batch size, spatial shape or (after one-hot) channels.
        """
        if input.ndim < 3:
            raise ValueError(f"input must be BNH[WD] (at least 3 dimensions), got shape {tuple(input.shape)}.")
        n_pred_ch = input.shape[1]
        if classes is None:
            if n_pred_ch != self.num_classes:
                raise ValueError(f"input has {n_pred_ch} channels but num_classes={self.num_classes}.")
            classes = torch.arange(self.num_classes)
        classes = torch.as_tensor(classes, dtype=torch.long).cpu()
        if (
            classes.shape != (n_pred_ch,)
            or int(classes[0]) != 0
            or bool((classes[1:] <= classes[:-1]).any())
            or int(classes[-1]) >= self.num_classes
        ):
            raise ValueError(
                f"classes must name the input's {n_pred_ch} channels "
                f"as increasing classes of 0..{self.num_classes - 1} "
                f"starting with the background 0, got {classes.tolist()}."
            )
        observe = torch.ones(n_pred_ch, dtype=torch.bool) if observe is None else torch.as_tensor(observe).bool().cpu()
        if observe.shape != (n_pred_ch,):
            raise ValueError(f"observe must have shape ({n_pred_ch},), got {tuple(observe.shape)}.")
        if target.ndim != input.ndim or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)} "
                "in batch size or spatial size."
            )

        if self.sigmoid:
            input = torch.sigmoid(input)
        if self.softmax:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=2)
            else:
                input = torch.softmax(input, 1)
        if self.other_act is not None:
            input = self.other_act(input)

        # The masks measured downstream are the argmax of the prediction: the controller sees the same counts.
        hard = self._hard_prediction(input) if self.training and self.error_counts == "hard" else None
        original_target = target
        if self.to_onehot_y:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=2)
            else:
                if target.shape[1] != 1:
                    raise ValueError(
                        f"to_onehot_y=True expects class indices of shape B1H[WD], got target {tuple(target.shape)}."
                    )
                if self.ignore_index is not None and (self.ignore_index < 0 or self.ignore_index >= n_pred_ch):
                    target = torch.where(target == self.ignore_index, torch.zeros_like(target), target)
                target = one_hot(target, num_classes=n_pred_ch)
        if self.ignore_index is not None:
            mask = create_ignore_mask(original_target, self.ignore_index)
            input, target = mask_loss_inputs(input, target, self.ignore_index, mask=mask)
            if hard is not None:
                hard = hard * mask

        if not self.include_background:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=2)
            else:
                target = target[:, 1:]
                input = input[:, 1:]
                hard = None if hard is None else hard[:, 1:]
        if target.shape != input.shape:
            raise ValueError(
                f"ground truth has differing shape ({tuple(target.shape)}) from input ({tuple(input.shape)})."
            )

        reduce_axis: list[int] = list(range(2, input.ndim))
        if self.batch:
            reduce_axis = [0] + reduce_axis
        tp, fp, fn = compute_tp_fp_fn(input, target, reduce_axis, 1, self.soft_label, False)

        alpha, beta = self.alpha_beta()
        alpha = alpha[classes][self.first_channel :].to(device=fp.device, dtype=fp.dtype)
        beta = beta[classes][self.first_channel :].to(device=fn.device, dtype=fn.dtype)
        numerator = tp + self.smooth_nr
        denominator = tp + fp * alpha + fn * beta + self.smooth_dr
        score: torch.Tensor = 1.0 - numerator / denominator
        if self.focal_gamma != 1.0:
            # clamp: (1 - TI) ** (1 / gamma) has an infinite slope at 0 for gamma > 1
            score = score.clamp_min(torch.finfo(score.dtype).eps).pow(1.0 / self.focal_gamma)

        if self.training:
            if hard is not None:
                with torch.no_grad():
                    _, fp, fn = compute_tp_fp_fn(hard, target, reduce_axis, 1, self.soft_label, False)
            self._observe(fn, fp, classes, observe)

        if self.reduction == LossReduction.SUM.value:
            return torch.sum(score)
        if self.reduction == LossReduction.NONE.value:
            return score
        if self.reduction == LossReduction.MEAN.value:
            return torch.mean(score)
        raise ValueError(f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].')

    @torch.no_grad()
    def _hard_prediction(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) one-hot of the argmax over channels (a 0.5 threshold per channel with ``sigmoid`` or one
        channel), the mask a prediction becomes when it is measured."""
        if self.sigmoid or probabilities.shape[1] == 1:
            return (probabilities > 0.5).to(probabilities.dtype)
        return one_hot(probabilities.argmax(dim=1, keepdim=True), num_classes=probabilities.shape[1]).to(
            probabilities.dtype)

    @torch.no_grad()
    def _observe(self, fn: torch.Tensor, fp: torch.Tensor, classes: torch.Tensor, observe: torch.Tensor) -> None:
        """Records the counts of one training batch: an update now (``"step"``) or at ``end_epoch`` (``"epoch"``).

        Rows of the statistics: summed false negatives, summed false positives, and how many batches observed each
        class; a class no batch observed keeps its controller state.
        """
        statistics = torch.zeros(3, self.num_classes, dtype=torch.float64, device=fn.device)
        kept = classes[self.first_channel :].to(fn.device)
        seen = observe[self.first_channel :].to(fn.device)
        statistics[0, kept] = fn.detach().reshape(-1, fn.shape[-1]).sum(0).double() * seen
        statistics[1, kept] = fp.detach().reshape(-1, fp.shape[-1]).sum(0).double() * seen
        statistics[2, kept] = seen.double()
        if self.update == "step":
            self._update(_all_reduce_sum(statistics))
        else:
            self.epoch_statistics += statistics.to(self.epoch_statistics.device)
            self.epoch_batches += 1

    def _update(self, statistics: torch.Tensor) -> None:
        fn, fp, seen = statistics.to(self.controller.output.device)
        error = (fn - fp) / (fn + fp + _ERROR_EPS) - self.target
        active = seen > 0
        active[: self.first_channel] = False  # an excluded background stays at the base weights
        if not bool(torch.isfinite(error[active]).all()):
            warnings.warn(
                f"non-finite segmentation counts {statistics.tolist()}; controller update skipped.", stacklevel=3
            )
            return
        if active.any():
            self.controller.step(torch.where(active, error, torch.zeros_like(error)), active)

    @torch.no_grad()
    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Updates the weights from the counts accumulated since the last call (``update="epoch"``).

        Under DDP this is a collective call: every worker must call it. Without accumulated batches (on all workers)
        the weights stay as they are.

        Returns:
            ``alpha_beta()`` after the update.
        """
        if self.update != "epoch":
            warnings.warn("end_epoch() does nothing with update='step' (the weights update every batch).", stacklevel=2)
            return self.alpha_beta()
        packed = torch.cat([self.epoch_statistics.flatten(), self.epoch_batches.double().view(1)])
        packed = _all_reduce_sum(packed)
        self.epoch_statistics.zero_()
        self.epoch_batches.zero_()
        if packed[-1] > 0:
            self._update(packed[:-1].view(3, self.num_classes))
        return self.alpha_beta()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}, include_background="
            f"{self.include_background}, focal_gamma={self.focal_gamma}, target={self.target}, update={self.update!r}"
        )
