"""The controller's error is counted on the mask that is measured (the argmax), not on the probabilities."""

from __future__ import annotations

import pytest
import torch

from lss.losses import AdaptivePIDTverskyLoss


def _boundary_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes on 1 x 20 pixels: 10 true foreground pixels found at p = 0.8 (soft FN 2.0) and 4 background
    pixels at p = 0.51 (soft FP 2.04): the soft volumes nearly balance, the argmax mask is 4 pixels too large."""
    p = torch.zeros(1, 1, 20)
    p[..., :10] = 0.8
    p[..., 10:14] = 0.51
    probabilities = torch.cat([1 - p, p], dim=1)
    labels = torch.zeros(1, 1, 20, dtype=torch.long)
    labels[..., :10] = 1
    return torch.log(probabilities), labels


@pytest.mark.parametrize("counts", ["hard", "soft"])
def test_over_segmented_argmax_lowers_beta_only_when_counted_hard(counts):
    logits, labels = _boundary_batch()
    loss = AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=2, kp=0.1, ki=0.0, ema=0.0,
                                  beta_bounds=(0.1, 0.9), error_counts=counts)
    loss(logits, labels)
    _, beta = loss.alpha_beta()
    if counts == "hard":
        # FN 0, FP 4: e = -1, beta moves by kp towards fewer false positives
        assert beta[1].item() == pytest.approx(0.5 - 0.1, abs=1e-6)
    else:
        # (2.0 - 2.04) / 4.04: the controller sees (almost) no error while the measured mask is 40% too large
        assert beta[1].item() == pytest.approx(0.5 - 0.1 * 0.04 / 4.04, abs=1e-5)


def test_hard_counts_leave_the_loss_value_unchanged():
    logits, labels = _boundary_batch()
    values = [AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=2, error_counts=c)(logits, labels)
              for c in ("hard", "soft")]
    assert torch.equal(values[0], values[1])


def test_unknown_error_counts_are_refused():
    with pytest.raises(ValueError, match="error_counts"):
        AdaptivePIDTverskyLoss(num_classes=2, error_counts="argmax")
