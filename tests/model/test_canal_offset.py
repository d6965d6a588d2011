"""The canal logit offset: fitted so that the measured sac area is unbiased, applied only to the canal channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss.anatomy import Structure
from lss.model.canal_offset import CanalOffset, canal_margin, fit_canal_offset
from lss.reporting.measurements import region_area_mm2

CANAL = Structure.CANAL.index


def _over_segmented(radius_px: float, ring_px: float, size: int = 48) -> tuple[np.ndarray, float]:
    """A margin map whose zero level is a circle ``ring_px`` wider than the labelled one; the labelled area."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    margin = (radius_px + ring_px) - distance  # logit-like: 1 per pixel of distance
    label = distance < radius_px
    return margin.astype(np.float32), region_area_mm2(label, (0.5, 0.5))


def test_fitted_offset_removes_an_area_bias():
    levels = [_over_segmented(r, 1.5) for r in (6.0, 8.0, 10.0, 12.0)]
    margins, areas = [m for m, _ in levels], [a for _, a in levels]
    offset = fit_canal_offset(margins, [(0.5, 0.5)] * 4, areas)
    assert offset.fitted and offset.n_levels == 4
    assert offset.bias_before_mm2 > 5  # a 1.5-pixel ring on 0.5 mm pixels
    assert abs(offset.bias_after_mm2) < 0.5
    assert offset.offset == pytest.approx(-1.5, abs=0.3)


def test_no_level_gives_the_identity_and_bad_input_is_refused():
    assert not fit_canal_offset([], [], []).fitted
    with pytest.raises(ValueError, match="differ in length"):
        fit_canal_offset([np.zeros((4, 4))], [], [1.0])
    with pytest.raises(ValueError, match="finite"):
        fit_canal_offset([np.zeros((4, 4))], [(1, 1)], [float("nan")])


def test_apply_shifts_only_the_canal_channel_and_round_trips():
    logits = torch.randn(2, 5, len(Structure), 8, 8)
    offset = CanalOffset(offset=-3.0, fitted=True)
    shifted = offset.apply(logits, channel_dim=2)
    assert torch.allclose(shifted[:, :, CANAL], logits[:, :, CANAL] - 3.0)
    others = [k for k in range(len(Structure)) if k != CANAL]
    assert torch.equal(shifted[:, :, others], logits[:, :, others])
    assert CanalOffset().apply(logits) is logits  # the identity leaves the masks as the network gives them
    assert CanalOffset.from_dict(offset.as_dict()) == offset and CanalOffset.from_dict(None) == CanalOffset()
    margin = canal_margin(logits[0, 0], channel_dim=0)
    assert np.array_equal(margin > 0, (logits[0, 0].argmax(dim=0) == CANAL).numpy())
