"""Attention localisation: a level prompt's attention map should fall on that level.

Where masks exist (synthetic studies, SPIDER), the disc of each level on the mid-sagittal slice says where "central
spinal canal at L4/L5" ought to look. ``AttentionLocalisationLoss`` is the negative log of the attention mass inside
that region (grown by one patch, so the canal just behind the disc counts); ``attention_hit_rate`` is the share of
levels whose attention peak lies in it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["level_regions", "AttentionLocalisationLoss", "attention_hit_rate"]


def level_regions(level_masks: torch.Tensor, grid: tuple[int, int], grow: int = 1) -> torch.Tensor:
    """Patch cells touched by each level's mask.

    Args:
        level_masks: (B, L, Y, Z) bool, a level's disc on the mid-sagittal slice.
        grid: (Y', Z') the attention grid.
        grow: cells added around the region on each side.

    Returns:
        (B, L, Y', Z') bool.
    """
    if level_masks.ndim != 4:
        raise ValueError(f"level_masks must be (B, L, Y, Z), got {tuple(level_masks.shape)}.")
    b, n, y, z = level_masks.shape
    cells = F.adaptive_max_pool2d(level_masks.float().reshape(b * n, 1, y, z), grid)
    if grow > 0:
        cells = F.max_pool2d(cells, kernel_size=2 * grow + 1, stride=1, padding=grow)
    return cells.reshape(b, n, *grid) > 0


def _check(attention: torch.Tensor, level_masks: torch.Tensor) -> None:
    if attention.ndim != 4 or level_masks.ndim != 4 or attention.shape[:2] != level_masks.shape[:2]:
        raise ValueError(
            f"attention (B, L, Y', Z') and level_masks (B, L, Y, Z) must agree on B and L, got "
            f"{tuple(attention.shape)} and {tuple(level_masks.shape)}."
        )


class AttentionLocalisationLoss(nn.Module):
    """-log(attention mass inside the level's region), averaged over levels that have a region.

    Args:
        grow: cells added around each region.
        eps: floor inside the logarithm.

    Shapes:
        attention (B, L, Y', Z') (sums to 1 over Y' x Z'), level_masks (B, L, Y, Z) bool -> scalar.
    """

    def __init__(self, grow: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        if grow < 0:
            raise ValueError(f"grow must be >= 0, got {grow}.")
        self.grow = int(grow)
        self.eps = float(eps)

    def forward(self, attention: torch.Tensor, level_masks: torch.Tensor) -> torch.Tensor:
        _check(attention, level_masks)
        regions = level_regions(level_masks, tuple(attention.shape[2:]), self.grow)
        has = regions.flatten(2).any(dim=2)  # (B, L)
        if not has.any():
            return attention.sum() * 0.0
        mass = (attention * regions).flatten(2).sum(dim=2)
        return -(mass[has] + self.eps).log().mean()


def attention_hit_rate(attention: torch.Tensor, level_masks: torch.Tensor, grow: int = 1) -> float:
    """Share of levels (with a region) whose attention peak lies inside their region; NaN when none has one."""
    _check(attention, level_masks)
    regions = level_regions(level_masks, tuple(attention.shape[2:]), grow)
    has = regions.flatten(2).any(dim=2)
    if not has.any():
        return float("nan")
    peak = attention.flatten(2).argmax(dim=2)  # (B, L)
    hit = regions.flatten(2).gather(2, peak[..., None])[..., 0]
    return float(hit[has].float().mean())
