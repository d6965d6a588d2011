"""Partial-label training: what a case does not label is never background, for every segmentation loss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss, TverskyLoss

from lss.anatomy import Structure, label_partition
from lss.config import LossConfig
from lss.losses import AdaptivePIDTverskyLoss, PartialLabelLoss, build_segmentation_loss

C = len(Structure)
BODY, POST, DISC, CANAL = (s.index for s in (Structure.VERTEBRAL_BODY, Structure.POSTERIOR_ELEMENTS, Structure.DISC,
                                             Structure.CANAL))
NAMES = ["dice_ce", "tversky", "focal_tversky", "pid_tversky"]
BODIES_ONLY = torch.as_tensor(label_partition([["vertebral_body"]]))
SPIDER = torch.as_tensor(label_partition([["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]]))


def _target(batch: int = 2, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Bodies-only labels: a block of body voxels, the rest 0 (background or unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.zeros(batch, 1, size, size, dtype=torch.long)
    for b in range(batch):
        y0, z0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        target[b, 0, y0:y0 + size // 3, z0:z0 + size // 3] = BODY
    return target


def _redistributed_logits(body: torch.Tensor, others: list[int], seed: int) -> torch.Tensor:
    """Logits whose softmax gives ``body`` as the body probability and splits the rest randomly over ``others``."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.full((body.shape[0], C, *body.shape[1:]), 1e-4)
    weights = torch.rand((body.shape[0], len(others), *body.shape[1:]), generator=g) + 0.05
    weights = weights / weights.sum(1, keepdim=True)
    rest = (1.0 - body - 1e-4 * (C - 1 - len(others))).unsqueeze(1)
    probs[:, others] = weights * rest
    probs[:, BODY] = body
    return probs.log()


@pytest.mark.parametrize("name", NAMES)
def test_bodies_only_case_ignores_the_predictions_of_unlabelled_structures(name):
    target = _target()
    body = torch.rand(target.shape[0], *target.shape[2:], generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    partition = BODIES_ONLY.expand(target.shape[0], C)
    others = [0, POST, DISC, CANAL]
    loss = build_segmentation_loss(LossConfig(name=name), C).eval()
    a = loss(_redistributed_logits(body, others, seed=2), target, partition)
    b = loss(_redistributed_logits(body, others, seed=3), target, partition)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The same change matters when the case claims to label everything: the test can fail.
    full_a = loss(_redistributed_logits(body, others, seed=2), target)
    full_b = loss(_redistributed_logits(body, others, seed=3), target)
    assert not torch.allclose(full_a, full_b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_a_union_label_ignores_how_its_members_share_the_probability(name):
    target = _target()
    body = torch.rand(target.shape[0], *target.shape[2:], generator=torch.Generator().manual_seed(4)) * 0.5
    loss = build_segmentation_loss(LossConfig(name=name), C).eval()
    partition = SPIDER.expand(target.shape[0], C)
    # Keep background, disc and canal fixed; move mass between the body and the posterior elements.
    logits = _redistributed_logits(body, [0, POST, DISC, CANAL], seed=5)
    probs = logits.softmax(1)
    union = probs[:, BODY] + probs[:, POST]
    share = torch.rand(union.shape, generator=torch.Generator().manual_seed(6))
    moved = probs.clone()
    moved[:, BODY], moved[:, POST] = union * share, union * (1 - share)
    torch.testing.assert_close(loss(logits, target, partition), loss(moved.log(), target, partition), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_voxels_are_left_out(name):
    target = _target(seed=7)
    target[:, :, :, :3] = -1
    logits = torch.randn(target.shape[0], C, *target.shape[2:], generator=torch.Generator().manual_seed(8))
    changed = logits.clone()
    changed[:, :, :, :3] = torch.randn(changed[:, :, :, :3].shape, generator=torch.Generator().manual_seed(9)) * 5
    loss = build_segmentation_loss(LossConfig(name=name), C).eval()
    partition = BODIES_ONLY.expand(target.shape[0], C)
    torch.testing.assert_close(loss(logits, target, partition), loss(changed, target, partition), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name, plain",
    [
        ("dice_ce", DiceCELoss(to_onehot_y=True, softmax=True)),
        ("tversky", TverskyLoss(to_onehot_y=True, softmax=True)),
        ("pid_tversky", AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=C)),
    ],
)
def test_fully_labelled_cases_get_the_plain_loss(name, plain):
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(3, C, 10, 10, generator=g)
    target = torch.randint(0, C, (3, 1, 10, 10), generator=g)
    loss = build_segmentation_loss(LossConfig(name=name), C).eval()
    torch.testing.assert_close(loss(logits, target), plain.eval()(logits, target), rtol=1e-5, atol=1e-5)


def test_the_controller_only_moves_the_weights_of_what_the_batch_labels():
    loss = build_segmentation_loss(LossConfig(name="pid_tversky", kp=0.5, ki=0.1, ema=0.0), C).train()
    target = _target(seed=11)
    # Under-segment the bodies: the body weight beta must rise; nothing else may move.
    logits = torch.zeros(target.shape[0], C, *target.shape[2:])
    logits[:, 0] = 3.0
    loss(logits, target, BODIES_ONLY.expand(target.shape[0], C))
    alpha, beta = loss.alpha_beta()
    assert beta[BODY] > 0.5
    for c in (0, POST, DISC, CANAL):
        assert beta[c] == 0.5 and alpha[c] == 0.5
    assert loss.controller.channel_steps.tolist() == [0, 1, 0, 0, 0]
    # A union label is no single structure's evidence either; SPIDER labels everything, so its background is real.
    loss(logits, target, SPIDER.expand(target.shape[0], C))
    assert loss.controller.channel_steps.tolist() == [1, 1, 0, 1, 1]


def test_the_controller_of_an_epoch_update_counts_only_observed_classes():
    loss = build_segmentation_loss(LossConfig(name="pid_tversky", kp=0.5, ki=0.1, update="epoch"), C).train()
    target = _target(seed=12)
    logits = torch.zeros(target.shape[0], C, *target.shape[2:])
    loss(logits, target, BODIES_ONLY.expand(target.shape[0], C))
    loss.end_epoch()
    assert loss.controller.channel_steps.tolist() == [0, 1, 0, 0, 0]


def test_a_mixed_batch_weighs_each_group_by_its_cases():
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(3, C, 8, 8, generator=g)
    target = _target(batch=3, size=8, seed=14)
    partition = torch.stack([torch.arange(C), BODIES_ONLY, BODIES_ONLY])
    loss = build_segmentation_loss(LossConfig(name="tversky"), C).eval()
    mixed = loss(logits, target, partition)
    full = loss(logits[:1], target[:1])
    partial = loss(logits[1:], target[1:], partition[1:])
    torch.testing.assert_close(mixed, full / 3 + partial * 2 / 3)


def test_gradients_reach_the_labelled_logits_only_through_the_marginal():
    target = _target(seed=15)
    logits = torch.randn(target.shape[0], C, *target.shape[2:], generator=torch.Generator().manual_seed(16))
    logits.requires_grad_(True)
    loss = build_segmentation_loss(LossConfig(name="dice_ce"), C)
    loss(logits, target, BODIES_ONLY.expand(target.shape[0], C)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:, BODY].abs().sum() > 0


def test_bad_inputs_are_refused():
    loss = build_segmentation_loss(LossConfig(name="tversky"), C)
    logits = torch.zeros(1, C, 4, 4)
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="not labelled"):
        loss(logits, torch.full_like(target, DISC), BODIES_ONLY[None])
    with pytest.raises(ValueError, match="partition"):
        loss(logits, target, torch.tensor([[0, 1, 3, 3, 4]]))
    with pytest.raises(ValueError, match="partition must be"):
        loss(logits, target, BODIES_ONLY[None, :3])
    with pytest.raises(ValueError, match="channels"):
        loss(torch.zeros(1, 3, 4, 4), target)
    with pytest.raises(ValueError, match="num_classes"):
        PartialLabelLoss(TverskyLoss(), 1)
