"""Axial dropout: training the sagittal-only path by hiding the axial input of some levels and studies.

Many studies have no axial series (research sets, follow-ups). The severity head grades such a level from the
sagittal view alone: its axial features, presence flag and canal area are zero (``LSSModel.forward`` multiplies
them by ``axial_present``). Trained only on studies with axial data, that path is never exercised and its grades
are meaningless. ``drop_axial`` turns ``axial_present`` False for a random share of levels and of whole studies in
a training batch, so the head learns both paths from the same targets.

The axial image itself stays in the batch: with ``axial_present`` False the severity head never sees it (its
features are multiplied by 0, exactly as when no axial input is given), while the axial segmentation loss still
learns from it (its target is the image's own mask, whatever the head is shown).
"""

from __future__ import annotations

import torch

__all__ = ["drop_axial"]


def drop_axial(
    axial_present: torch.Tensor,
    level_rate: float,
    study_rate: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A copy of ``axial_present`` with the axial input of random levels and whole studies dropped.

    Each level is dropped with probability ``level_rate`` and each study (all its levels) with probability
    ``study_rate``, independently; a level without axial data stays without.

    Args:
        axial_present: (B, L) bool, which levels have axial data.
        level_rate: probability of dropping a level, in [0, 1].
        study_rate: probability of dropping a whole study, in [0, 1].
        generator: a CPU ``torch.Generator`` for reproducible draws (None: the global one).

    Returns:
        (B, L) bool on the device of ``axial_present``.

    Raises:
        ValueError: for a rate outside [0, 1] or an ``axial_present`` that is not (B, L).
    """
    for name, rate in (("level_rate", level_rate), ("study_rate", study_rate)):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}.")
    if axial_present.ndim != 2:
        raise ValueError(f"axial_present must be (B, L), got {tuple(axial_present.shape)}.")
    present = axial_present.bool()
    if float(level_rate) == 0.0 and float(study_rate) == 0.0:
        return present.clone()
    b, n_levels = present.shape
    dropped = torch.rand(b, n_levels, generator=generator) < float(level_rate)
    dropped |= (torch.rand(b, 1, generator=generator) < float(study_rate)).expand(b, n_levels)
    return present & ~dropped.to(present.device)
