"""Losses: the Adaptive PID-Tversky segmentation loss (with its controller), the partial-label wrapper every
segmentation loss is built in, the severity grading loss, the attention localisation loss, and the factory that
builds a segmentation loss by name from ``LossConfig``."""

from __future__ import annotations

from lss.losses.factory import FOCAL_TVERSKY_GAMMA, build_segmentation_loss
from lss.losses.grading import RSNA_SEVERITY_WEIGHTS, SeverityLoss
from lss.losses.localisation import AttentionLocalisationLoss, attention_hit_rate, level_regions
from lss.losses.partial import PartialLabelLoss, merge_probabilities
from lss.losses.pid import PIDController
from lss.losses.pid_tversky import AdaptivePIDTverskyLoss

__all__ = [
    "AdaptivePIDTverskyLoss",
    "PartialLabelLoss",
    "merge_probabilities",
    "PIDController",
    "SeverityLoss",
    "RSNA_SEVERITY_WEIGHTS",
    "build_segmentation_loss",
    "FOCAL_TVERSKY_GAMMA",
    "AttentionLocalisationLoss",
    "attention_hit_rate",
    "level_regions",
]
