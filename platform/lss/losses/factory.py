"""Builds the segmentation loss named in the configuration (``loss.name``)."""

from __future__ import annotations

from monai.losses import DiceLoss, TverskyLoss
from torch import nn

from lss.config import LossConfig
from lss.losses.partial import PartialLabelLoss
from lss.losses.pid_tversky import AdaptivePIDTverskyLoss

__all__ = ["build_segmentation_loss", "FOCAL_TVERSKY_GAMMA"]

# Abraham & Khan (2019) train the focal Tversky loss with gamma = 4/3.
FOCAL_TVERSKY_GAMMA = 4.0 / 3.0


def build_segmentation_loss(config: LossConfig, num_classes: int) -> PartialLabelLoss:
    """The segmentation loss ``config.name`` for a network with ``num_classes`` output channels.

    Every loss is a ``PartialLabelLoss``: it takes the network's logits ``(B, C, H, W[, D])``, integer class labels
    ``(B, 1, H, W[, D])`` (``C = num_classes``, background = 0, -1 = unknown) and optionally each case's partition
    ``(B, C)`` (which structures it labels, ``lss.anatomy.label_partition``); it applies the softmax, merges what a
    case does not label into the background, and hands probabilities and one-hot targets to the loss below
    (``.base``). For fully labelled cases each equals the plain loss on the softmax.

    - ``"dice_ce"``: MONAI ``DiceLoss`` plus a cross-entropy term of weight 1 (MONAI's ``DiceCELoss``).
    - ``"tversky"``: MONAI ``TverskyLoss`` with ``config.alpha`` / ``config.beta``.
    - ``"focal_tversky"``: ``AdaptivePIDTverskyLoss`` with all gains 0 (fixed weights) and the focal exponent
      ``config.focal_gamma`` (None: 4/3, as Abraham & Khan).
    - ``"pid_tversky"``: ``AdaptivePIDTverskyLoss`` with the configured gains, bounds, smoothing, target and update
      mode, and the focal exponent ``config.focal_gamma`` (None: 1, the plain Tversky loss).

    ``config.include_background`` applies to all four. For ``"pid_tversky"`` the training loop must call
    ``loss.end_epoch()`` after each epoch when ``config.update == "epoch"``, and ``loss.eval()`` around validation.

    Args:
        config: the ``loss`` section of the configuration.
        num_classes: output channels of the network, background included.

    Raises:
        ValueError: for ``num_classes < 2`` (softmax over one channel is constant) or an unknown ``config.name``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and at least one structure), got {num_classes}.")
    return PartialLabelLoss(_base_loss(config, num_classes), num_classes,
                            ce_weight=1.0 if config.name == "dice_ce" else 0.0)


def _base_loss(config: LossConfig, num_classes: int) -> nn.Module:
    common = dict(include_background=config.include_background, to_onehot_y=False, softmax=False)
    if config.name == "dice_ce":
        return DiceLoss(**common)
    if config.name == "tversky":
        return TverskyLoss(**common, alpha=config.alpha, beta=config.beta)
    if config.name == "focal_tversky":
        gamma = FOCAL_TVERSKY_GAMMA if config.focal_gamma is None else config.focal_gamma
        return AdaptivePIDTverskyLoss(
            **common,
            alpha=config.alpha,
            beta=config.beta,
            num_classes=num_classes,
            kp=0.0,
            ki=0.0,
            kd=0.0,
            focal_gamma=gamma,
        )
    if config.name == "pid_tversky":
        return AdaptivePIDTverskyLoss(
            **common,
            alpha=config.alpha,
            beta=config.beta,
            num_classes=num_classes,
            kp=config.kp,
            ki=config.ki,
            kd=config.kd,
            beta_bounds=config.beta_bounds,
            ema=config.ema,
            target=config.target,
            update=config.update,
            error_counts=config.error_counts,
            focal_gamma=1.0 if config.focal_gamma is None else config.focal_gamma,
        )
    raise ValueError(
        f"unknown segmentation loss {config.name!r}; expected dice_ce, tversky, focal_tversky or pid_tversky."
    )
