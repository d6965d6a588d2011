"""Per-level heads: severity (3 classes) and, optionally, dural sac area and AP diameter regression.

They read the attended per-level features of the prompt attention (sagittal level prompt + the level's axial
stack) and, when enabled, the canal area measured on the predicted axial mask.
"""

from __future__ import annotations

import torch
from torch import nn

from lss.anatomy import SEVERITIES

__all__ = ["SeverityHead"]


class SeverityHead(nn.Module):
    """A shared MLP applied to each level's feature vector.

    Args:
        in_features: F, width of a level's feature vector.
        hidden: hidden width.
        num_classes: severity classes (3: Normal/Mild, Moderate, Severe).
        regression: also predict (area_mm2 / 100, ap_mm / 10) per level.
        dropout: dropout before the output layers.

    Shapes:
        features (B, L, F) -> logits (B, L, num_classes), regression (B, L, 2) or None.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,
        num_classes: int = len(SEVERITIES),
        regression: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.in_features = int(in_features)
        self.trunk = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, hidden), nn.GELU(),
                                   nn.Dropout(dropout))
        self.classify = nn.Linear(hidden, num_classes)
        self.regress = nn.Linear(hidden, 2) if regression else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if features.ndim != 3 or features.shape[-1] != self.in_features:
            raise ValueError(f"features must be (B, L, {self.in_features}), got {tuple(features.shape)}.")
        hidden = self.trunk(features)
        return self.classify(hidden), (self.regress(hidden) if self.regress is not None else None)
