"""Attention localisation loss and hit rate."""

from __future__ import annotations

import pytest
import torch

from lss.losses.localisation import AttentionLocalisationLoss, attention_hit_rate, level_regions


def _masks():
    masks = torch.zeros(1, 2, 32, 32, dtype=torch.bool)
    masks[0, 0, 4:8, 4:8] = True  # level 0 top-left
    masks[0, 1, 24:28, 24:28] = True  # level 1 bottom-right
    return masks


def _attention(cells):
    attention = torch.full((1, 2, 8, 8), 1e-4)
    for level, (y, x) in enumerate(cells):
        attention[0, level, y, x] = 1.0
    return attention / attention.sum(dim=(2, 3), keepdim=True)


def test_regions_on_the_grid():
    regions = level_regions(_masks(), (8, 8), grow=0)
    assert regions[0, 0].nonzero().tolist() == [[1, 1]] and regions[0, 1].nonzero().tolist() == [[6, 6]]
    assert level_regions(_masks(), (8, 8), grow=1)[0, 0].sum() == 9


@pytest.mark.parametrize("cells, hit", [([(1, 1), (6, 6)], 1.0), ([(6, 6), (1, 1)], 0.0), ([(1, 2), (0, 0)], 0.5)])
def test_hit_rate(cells, hit):
    assert attention_hit_rate(_attention(cells), _masks()) == hit


def test_loss_is_low_on_target_and_high_off_it():
    loss = AttentionLocalisationLoss()
    good, bad = loss(_attention([(1, 1), (6, 6)]), _masks()), loss(_attention([(6, 6), (1, 1)]), _masks())
    assert good < 0.01 < 3.0 < bad
    logits = torch.zeros(1, 2, 64, requires_grad=True)
    value = loss(logits.softmax(-1).reshape(1, 2, 8, 8), _masks())
    value.backward()
    assert logits.grad[0, 0, 1 * 8 + 1] < 0  # raising attention inside the region lowers the loss


def test_no_region_and_bad_shapes():
    empty = torch.zeros(1, 2, 32, 32, dtype=torch.bool)
    assert AttentionLocalisationLoss()(_attention([(0, 0), (0, 0)]), empty) == 0
    assert attention_hit_rate(_attention([(0, 0), (0, 0)]), empty) != attention_hit_rate(
        _attention([(0, 0), (0, 0)]), empty
    )  # NaN
    with pytest.raises(ValueError, match="agree"):
        AttentionLocalisationLoss()(torch.rand(1, 3, 8, 8), _masks())
    with pytest.raises(ValueError, match="grow"):
        AttentionLocalisationLoss(grow=-1)
