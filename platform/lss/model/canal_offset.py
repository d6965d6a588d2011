"""A logit offset of the dural sac channel, fitted on validation so that the measured sac area is unbiased.

The argmax mask of a network trained with a Dice- or Tversky-type loss is not calibrated: its boundary sits where
the loss is indifferent, about a pixel outside the labelled sac for the Tversky losses here (+50 mm2 on axial
slices), whatever the false-positive / false-negative weights (the PID controller drove the sac's beta to either
lower bound it was given, 0.3 or 0.05, and the masks stayed as large). Every reported area, AP diameter and rule
grade is measured on that mask, so the bias is removed where it arises: the canal logit is shifted by ``offset``
before the argmax, with ``offset`` chosen on the validation split so that the mean predicted area equals the mean
labelled area (``fit_canal_offset``). It is saved with the model and applied wherever masks are made.

    offset = fit_canal_offset(margins, spacings, label_areas)     # margins: canal logit minus the best other
    logits = offset.apply(axial_logits, channel_dim=1)           # before argmax
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lss.anatomy import Structure

__all__ = ["CanalOffset", "fit_canal_offset", "canal_margin"]

CANAL = Structure.CANAL.index
# Logit offsets searched; beyond +-12 a softmax channel is all or nothing.
SEARCH_RANGE = (-12.0, 12.0)


@dataclass
class CanalOffset:
    """The dural sac logit offset of one model.

    Attributes:
        offset: added to the canal logit before the argmax (negative: smaller masks).
        fitted: whether it was fitted (False: the identity, 0).
        n_levels: validation levels it was fitted on.
        bias_before_mm2, bias_after_mm2: mean (predicted - labelled) sac area on those levels, with offset 0 and
            with the fitted offset.
        note: how it was fitted, or why it was not.
    """

    offset: float = 0.0
    fitted: bool = False
    n_levels: int = 0
    bias_before_mm2: float | None = None
    bias_after_mm2: float | None = None
    note: str = "not fitted: argmax masks as the network gives them"

    def apply(self, logits: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """Logits with the canal channel shifted by ``offset`` (a new tensor; the input is left as it is).

        Args:
            logits: (..., K, ...) segmentation logits with the K structures along ``channel_dim``.
            channel_dim: the structure dimension.
        """
        if not self.offset:
            return logits
        shift = torch.zeros(logits.shape[channel_dim], dtype=logits.dtype, device=logits.device)
        shift[CANAL] = float(self.offset)
        view = [1] * logits.ndim
        view[channel_dim] = -1
        return logits + shift.view(view)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CanalOffset:
        """The offset saved by ``as_dict``; None (a model saved before offsets existed) is the identity."""
        return cls() if not values else cls(**values)


def canal_margin(logits: torch.Tensor | np.ndarray, channel_dim: int = 0) -> np.ndarray:
    """The canal logit minus the largest other logit: > 0 where the argmax is the canal.

    Args:
        logits: (K, H, W) logits of one slice (or with K along ``channel_dim``).
    """
    values = torch.as_tensor(logits).float().movedim(channel_dim, 0)
    others = torch.cat([values[:CANAL], values[CANAL + 1:]]).amax(dim=0)
    return (values[CANAL] - others).numpy()


def _area(margin: np.ndarray, spacing: Sequence[float], offset: float) -> float:
    from lss.reporting.measurements import largest_component, region_area_mm2

    return region_area_mm2(largest_component(margin + offset > 0), spacing)


def fit_canal_offset(
    margins: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]],
    label_areas: Sequence[float],
    iterations: int = 30,
) -> CanalOffset:
    """Finds the canal logit offset that makes the mean measured sac area equal the mean labelled area.

    The measured area (largest connected region, as every report measures it) grows with the offset, so the zero
    of the mean error is found by bisection within ``SEARCH_RANGE``.

    Args:
        margins: per validation level, (H, W) ``canal_margin`` of the level's slice.
        spacings: per level, the (H, W) pixel size in mm.
        label_areas: per level, the labelled sac area in mm2 (measured on the label mask the same way).
        iterations: bisection steps (30 halve the range to ~2e-8).

    Returns:
        The fitted ``CanalOffset``; the identity, with a note, when there is no level to fit on.

    Raises:
        ValueError: when the three sequences differ in length or an area is not finite.
    """
    if not len(margins) == len(spacings) == len(label_areas):
        raise ValueError(f"margins, spacings and label_areas differ in length: {len(margins)}, {len(spacings)}, "
                         f"{len(label_areas)}.")
    truth = np.asarray(label_areas, dtype=np.float64)
    if not np.all(np.isfinite(truth)):
        raise ValueError("label_areas must be finite.")
    if truth.size == 0:
        return CanalOffset(note="not fitted: no validation level with a labelled sac")

    def bias(offset: float) -> float:
        return float(np.mean([_area(m, s, offset) for m, s in zip(margins, spacings, strict=True)]) - truth.mean())

    before = bias(0.0)
    low, high = SEARCH_RANGE
    if bias(low) > 0 or bias(high) < 0:
        edge = low if bias(low) > 0 else high
        return CanalOffset(offset=edge, fitted=True, n_levels=int(truth.size), bias_before_mm2=before,
                           bias_after_mm2=bias(edge), note=f"the bias does not cross 0 within {SEARCH_RANGE}: "
                           "the offset is at the edge of the search")
    for _ in range(int(iterations)):
        middle = (low + high) / 2
        if bias(middle) > 0:
            high = middle
        else:
            low = middle
    offset = (low + high) / 2
    return CanalOffset(offset=offset, fitted=True, n_levels=int(truth.size), bias_before_mm2=before,
                       bias_after_mm2=bias(offset),
                       note=f"fitted on {truth.size} validation levels: mean predicted sac area = mean labelled area")
