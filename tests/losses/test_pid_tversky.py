"""lss.losses.pid_tversky and lss.losses.factory: MONAI equivalence without gains, the adaptation of beta, state,
epoch updates, the focal exponent, the factory and every error message."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.losses import DiceLoss, TverskyLoss
from pydantic import ValidationError

from lss.config import LossConfig
from lss.losses import FOCAL_TVERSKY_GAMMA, AdaptivePIDTverskyLoss, PartialLabelLoss, build_segmentation_loss

IDLE = {"kp": 0.0, "ki": 0.0, "kd": 0.0}


def make_inputs(shape: tuple[int, ...], target: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``shape`` (B, C, spatial...) and a target: "index" (B, 1, ...) class indices, "onehot" (B, C, ...)
    binary float, "soft" (B, C, ...) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 2
    b, c, *spatial = shape
    if target == "index":
        return logits, torch.randint(0, max(c, 2), (b, 1, *spatial), generator=g)
    if target == "onehot":
        return logits, (torch.rand(shape, generator=g) > 0.6).float()
    return logits, torch.rand(shape, generator=g)


# (constructor arguments shared by MONAI's TverskyLoss and ours, input shape, target kind)
EQUIVALENCE_CASES = [
    ({"to_onehot_y": True, "softmax": True}, (2, 3, 8, 8), "index"),
    (
        {"to_onehot_y": True, "softmax": True, "include_background": False, "alpha": 0.3, "beta": 0.7},
        (2, 3, 8, 8),
        "index",
    ),
    ({"to_onehot_y": True, "softmax": True, "batch": True, "reduction": "sum"}, (2, 4, 6, 5, 4), "index"),
    (
        {"to_onehot_y": True, "softmax": True, "include_background": False, "reduction": "none"},
        (3, 2, 4, 5, 6),
        "index",
    ),
    ({"sigmoid": True, "reduction": "none"}, (2, 3, 5, 5, 5), "onehot"),
    ({"sigmoid": True, "batch": True, "alpha": 0.2, "beta": 0.9}, (2, 1, 9, 7), "onehot"),
    ({"sigmoid": True, "include_background": False, "smooth_nr": 0.0, "smooth_dr": 1e-3}, (4, 3, 6, 6), "onehot"),
    ({"other_act": torch.tanh}, (2, 2, 11), "onehot"),
    ({"softmax": True, "soft_label": True, "alpha": 0.6, "beta": 0.4}, (2, 3, 7, 7), "soft"),
    ({"to_onehot_y": True, "softmax": True, "ignore_index": 2}, (2, 3, 8, 8), "index"),
    ({"to_onehot_y": True, "softmax": True, "ignore_index": 255, "batch": True}, (2, 3, 6, 6, 3), "index"),
    ({"to_onehot_y": True, "softmax": True, "include_background": False}, (2, 1, 8, 8), "onehot"),  # warnings
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kwargs, shape, target_kind", EQUIVALENCE_CASES)
def test_without_gains_it_is_monai_tversky(kwargs, shape, target_kind, mode):
    logits, target = make_inputs(shape, target_kind)
    if kwargs.get("ignore_index") == 255:
        target[:, :, :2] = 255
    ours = AdaptivePIDTverskyLoss(**kwargs, num_classes=shape[1], **IDLE, ema=0.5, target=0.3)
    ours.train(mode == "train")
    theirs = TverskyLoss(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # the idle controller updates in train mode and must change nothing
            x_ours = logits.clone().requires_grad_(True)
            x_theirs = logits.clone().requires_grad_(True)
            value_ours, value_theirs = ours(x_ours, target), theirs(x_theirs, target)
            torch.testing.assert_close(value_ours, value_theirs, rtol=0, atol=0)
            value_ours.sum().backward()
            value_theirs.sum().backward()
            torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=0, atol=0)
    assert int(ours.controller.steps) == (3 if mode == "train" else 0)


@pytest.mark.parametrize(
    "include_background, softmax, to_onehot_y", [(False, False, False), (True, True, False), (True, False, True)]
)
def test_single_channel_warnings_like_monai(include_background, softmax, to_onehot_y):
    loss = AdaptivePIDTverskyLoss(
        include_background=include_background, softmax=softmax, to_onehot_y=to_onehot_y, num_classes=1
    )
    with pytest.warns(UserWarning, match="single channel"):
        loss(torch.ones(1, 1, 3), torch.ones(1, 1, 3))


@pytest.mark.parametrize("gamma", [0.5, 1.0, FOCAL_TVERSKY_GAMMA, 3.0])
def test_focal_exponent_follows_abraham_and_khan(gamma):
    logits, target = make_inputs((2, 3, 8, 8), "index", seed=1)
    kwargs = {"to_onehot_y": True, "softmax": True, "alpha": 0.3, "beta": 0.7}
    per_class = TverskyLoss(**kwargs, reduction="none")(logits, target)
    ours = AdaptivePIDTverskyLoss(**kwargs, num_classes=3, **IDLE, focal_gamma=gamma)(logits, target)
    torch.testing.assert_close(ours, (per_class ** (1.0 / gamma)).mean())


def test_focal_gradient_is_finite_at_a_perfect_prediction():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., :2] = 1
    logits = (torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).float() * 40).requires_grad_(True)
    loss = AdaptivePIDTverskyLoss(
        to_onehot_y=True, softmax=True, num_classes=2, smooth_nr=0, smooth_dr=0, focal_gamma=2.0
    )
    loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


# A 16x16 image whose structure (class 1, an 8x8 square) is predicted too small: a confident 6x6 core, the rest of
# the square missed (logit -3), the background confidently negative (-6).
TARGET = torch.zeros(1, 1, 16, 16, dtype=torch.long)
TARGET[..., 4:12, 4:12] = 1
UNDER = torch.zeros(1, 2, 16, 16)
UNDER[:, 1] = -6.0
UNDER[:, 1, 4:12, 4:12] = -3.0
UNDER[:, 1, 5:11, 5:11] = 3.0
MISSED = (TARGET[0, 0] == 1) & (UNDER[0, 1] < 0)


def soft_recall(logits: torch.Tensor) -> float:
    probability = torch.softmax(logits.detach(), dim=1)[:, 1:]
    truth = (TARGET == 1).float()
    return ((probability * truth).sum() / truth.sum()).item()


def test_beta_rises_for_an_under_segmented_class_and_the_gradient_grows_the_missed_region():
    loss = AdaptivePIDTverskyLoss(
        to_onehot_y=True, softmax=True, num_classes=2, kp=0.1, ki=0.02, ema=0.5, beta_bounds=(0.3, 0.9)
    )
    betas = []
    for _ in range(30):
        loss(UNDER, TARGET)
        betas.append(loss.alpha_beta()[1][1].item())
    assert all(b > a for a, b in zip(betas, betas[1:], strict=False) if a < 0.9)
    assert betas[0] > 0.5 and betas[-1] == pytest.approx(0.9)
    # the background is over-segmented (it claims the missed voxels): its beta falls
    assert loss.alpha_beta()[1][0] < 0.5
    # weights always trade against each other: alpha_c + beta_c = alpha + beta
    torch.testing.assert_close(sum(loss.alpha_beta()), torch.ones(2, dtype=torch.float64))

    adapted = UNDER.clone().requires_grad_(True)
    loss.eval()
    loss(adapted, TARGET).backward()
    base = UNDER.clone().requires_grad_(True)
    TverskyLoss(to_onehot_y=True, softmax=True)(base, TARGET).backward()
    # descent raises the structure's logit on every missed voxel, and harder than with the base weights
    assert (adapted.grad[0, 1][MISSED] < 0).all()
    assert (adapted.grad[0, 1][MISSED].abs() > base.grad[0, 1][MISSED].abs()).all()


@pytest.mark.parametrize(
    "gains",
    [{"kp": 0.3, "ki": 0.05, "ema": 0.0}, {"kp": 0.1, "ki": 0.01, "ema": 0.9}, {"kp": 0.5, "ki": 0.1, "ema": 0.5}],
)
def test_adaptation_improves_recall_faster_than_plain_tversky(gains):
    # A tiny learnable tensor: a per-class logit offset (like a last-layer bias) on the fixed under-segmenting map.
    # Every voxel shares it, so it trades false negatives against false positives, which is what beta weighs.
    def train(loss: torch.nn.Module) -> float:
        offset = torch.zeros(1, 2, 1, 1, requires_grad=True)
        optimiser = torch.optim.SGD([offset], lr=1.0)
        for _ in range(20):
            optimiser.zero_grad()
            loss(UNDER + offset, TARGET).backward()
            optimiser.step()
        return soft_recall(UNDER + offset)

    start = soft_recall(UNDER)
    pid = AdaptivePIDTverskyLoss(
        to_onehot_y=True, softmax=True, include_background=False, num_classes=2, beta_bounds=(0.3, 0.9), **gains
    )
    gain_pid = train(pid) - start
    gain_plain = train(TverskyLoss(to_onehot_y=True, softmax=True, include_background=False)) - start
    assert gain_plain > 0.03  # plain Tversky does learn here: the comparison is not against a stuck baseline
    assert gain_pid > 1.3 * gain_plain
    assert pid.alpha_beta()[1][1] > 0.7


@pytest.mark.parametrize("recall_core, beta_helps", [(slice(7, 9), False), (slice(5, 11), True)])
def test_raising_beta_pulls_harder_on_missed_voxels_only_above_a_recall_of_beta_over_one_plus_beta(
    recall_core, beta_helps
):
    # A property of the Tversky index the controller relies on (d|grad|/d beta > 0 iff soft recall > beta/(1+beta)
    # when false positives are few): with a 2x2 core (recall ~0.06) a larger beta *weakens* the pull.
    logits = UNDER.clone()
    logits[:, 1, 4:12, 4:12] = -3.0
    logits[:, 1, recall_core, recall_core] = 3.0
    missed = (TARGET[0, 0] == 1) & (logits[0, 1] < 0)
    pulls = []
    for beta in (0.5, 0.8):
        x = logits.clone().requires_grad_(True)
        AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=2, alpha=1 - beta, beta=beta, **IDLE)(
            x, TARGET
        ).backward()
        pulls.append(x.grad[0, 1][missed].abs().mean().item())
    assert (pulls[1] > pulls[0]) == beta_helps


def test_loss_uses_the_weights_before_the_update_and_eval_mode_does_not_update():
    logits, target = make_inputs((2, 3, 8, 8), "index", seed=2)
    loss = AdaptivePIDTverskyLoss(to_onehot_y=True, softmax=True, num_classes=3, kp=0.3, ki=0.1, ema=0.0)
    reference = TverskyLoss(to_onehot_y=True, softmax=True)(logits, target)
    loss.eval()
    for _ in range(2):
        torch.testing.assert_close(loss(logits, target), reference, rtol=0, atol=0)
    assert int(loss.controller.steps) == 0
    loss.train()
    torch.testing.assert_close(loss(logits, target), reference, rtol=0, atol=0)  # updated only afterwards
    assert int(loss.controller.steps) == 1
    assert not torch.equal(loss(logits, target), reference)


def test_excluded_background_keeps_the_base_weights():
    loss = AdaptivePIDTverskyLoss(
        to_onehot_y=True,
        softmax=True,
        include_background=False,
        num_classes=2,
        alpha=0.4,
        beta=0.6,
        kp=0.3,
        ki=0.1,
        target=-0.3,
        beta_bounds=(0.2, 0.9),
    )
    for _ in range(5):
        loss(UNDER, TARGET)
    alpha, beta = loss.alpha_beta()
    assert (alpha[0].item(), beta[0].item()) == (0.4, 0.6)
    assert beta[1] > 0.6 and alpha[1] == pytest.approx(1.0 - beta[1].item())


def test_epoch_update_equals_one_step_on_the_whole_epoch():
    batches = [make_inputs((2, 3, 6, 6), "index", seed=s) for s in range(3)]
    kwargs = {"to_onehot_y": True, "softmax": True, "num_classes": 3, "kp": 0.4, "ki": 0.1, "kd": 0.1}
    per_epoch = AdaptivePIDTverskyLoss(**kwargs, update="epoch")
    for logits, target in batches:
        per_epoch(logits, target)
    assert int(per_epoch.controller.steps) == 0 and int(per_epoch.epoch_batches) == 3
    alpha, beta = per_epoch.end_epoch()
    assert int(per_epoch.controller.steps) == 1 and int(per_epoch.epoch_batches) == 0

    per_step = AdaptivePIDTverskyLoss(**kwargs, update="step")
    per_step(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    torch.testing.assert_close((alpha, beta), per_step.alpha_beta())
    assert not torch.equal(beta, torch.full((3,), 0.5, dtype=torch.float64))

    steps = int(per_epoch.controller.steps)
    per_epoch.end_epoch()  # nothing accumulated: no update
    assert int(per_epoch.controller.steps) == steps


def test_end_epoch_in_step_mode_warns():
    with pytest.warns(UserWarning, match="end_epoch"):
        AdaptivePIDTverskyLoss(num_classes=2).end_epoch()


@pytest.mark.parametrize("update", ["step", "epoch"])
def test_state_dict_round_trip(tmp_path, update):
    kwargs = {
        "to_onehot_y": True,
        "softmax": True,
        "num_classes": 3,
        "kp": 0.2,
        "ki": 0.05,
        "kd": 0.05,
        "ema": 0.5,
        "update": update,
    }
    loss = AdaptivePIDTverskyLoss(**kwargs)
    for seed in range(4):
        loss(*make_inputs((2, 3, 6, 6), "index", seed=seed))
    if update == "epoch":
        loss.end_epoch()
    loss(*make_inputs((2, 3, 6, 6), "index", seed=10))  # mid-epoch counts are state too
    torch.save(loss.state_dict(), tmp_path / "loss.pt")

    restored = AdaptivePIDTverskyLoss(**kwargs)
    restored.load_state_dict(torch.load(tmp_path / "loss.pt"))
    torch.testing.assert_close(restored.alpha_beta(), loss.alpha_beta(), rtol=0, atol=0)
    nxt = make_inputs((2, 3, 6, 6), "index", seed=11)
    torch.testing.assert_close(restored(*nxt), loss(*nxt), rtol=0, atol=0)
    if update == "epoch":
        restored.end_epoch()
        loss.end_epoch()
    torch.testing.assert_close(restored.alpha_beta(), loss.alpha_beta(), rtol=0, atol=0)
    assert not torch.equal(loss.alpha_beta()[1], torch.full((3,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"other_act": "tanh"}, TypeError, "other_act"),
        ({"sigmoid": True, "softmax": True}, ValueError, "Incompatible"),
        ({"reduction": "median"}, ValueError, "median"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": "3"}, TypeError, "num_classes"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"beta": float("inf")}, ValueError, "beta"),
        ({"beta_bounds": (0.6, 0.9)}, ValueError, "beta_bounds"),  # beta = 0.5 outside
        ({"beta_bounds": (0.3, 1.2)}, ValueError, r"alpha \+ beta"),  # alpha would go negative
        ({"beta_bounds": (0.3,)}, ValueError, "beta_bounds"),
        ({"target": 1.0}, ValueError, "target"),
        ({"update": "batch"}, ValueError, "update"),
        ({"focal_gamma": 0.0}, ValueError, "focal_gamma"),
        ({"kp": -0.1}, ValueError, "kp"),
        ({"ema": 1.5}, ValueError, "ema"),
        ({"anti_windup": "reset"}, ValueError, "anti_windup"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdaptivePIDTverskyLoss(**{"num_classes": 3, **kwargs})


@pytest.mark.parametrize(
    "kwargs, input_shape, target, match",
    [
        ({}, (2, 3), torch.zeros(2, 3), "at least 3"),
        ({}, (2, 4, 5, 5), torch.zeros(2, 4, 5, 5), "4 channels but num_classes=3"),
        ({"to_onehot_y": True}, (2, 3, 5, 5), torch.zeros(1, 1, 5, 5), "batch size or spatial size"),
        ({"to_onehot_y": True}, (2, 3, 5, 5), torch.zeros(2, 1, 5, 4), "batch size or spatial size"),
        ({"to_onehot_y": True}, (2, 3, 5, 5), torch.zeros(2, 5, 5), "batch size or spatial size"),
        ({"to_onehot_y": True}, (2, 3, 5, 5), torch.zeros(2, 2, 5, 5), "B1H"),
        ({}, (2, 3, 5, 5), torch.zeros(2, 1, 5, 5), "differing shape"),
    ],
)
def test_bad_inputs(kwargs, input_shape, target, match):
    loss = AdaptivePIDTverskyLoss(**kwargs, softmax=True, num_classes=3)
    with pytest.raises(ValueError, match=match):
        loss(torch.zeros(input_shape), target)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("dice_ce", DiceLoss),
        ("tversky", TverskyLoss),
        ("focal_tversky", AdaptivePIDTverskyLoss),
        ("pid_tversky", AdaptivePIDTverskyLoss),
    ],
)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 6, 6, 4)])
def test_factory_builds_every_loss_for_logits_and_integer_labels(name, kind, shape):
    loss = build_segmentation_loss(LossConfig(name=name), num_classes=4)
    assert isinstance(loss, PartialLabelLoss) and isinstance(loss.base, kind)
    logits, labels = make_inputs(shape, "index", seed=3)
    logits.requires_grad_(True)
    value = loss(logits, labels)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_factory_passes_the_configuration():
    config = LossConfig(
        name="pid_tversky",
        alpha=0.3,
        beta=0.7,
        kp=0.2,
        ki=0.03,
        kd=0.01,
        beta_bounds=(0.5, 0.9),
        ema=0.5,
        target=-0.2,
        update="epoch",
        include_background=False,
    )
    pid = build_segmentation_loss(config, num_classes=3).base
    assert (pid.alpha, pid.beta, pid.target, pid.update, pid.focal_gamma, pid.include_background) == (
        0.3,
        0.7,
        -0.2,
        "epoch",
        1.0,
        False,
    )
    c = pid.controller
    assert (c.kp, c.ki, c.kd, c.bounds, c.ema, c.num_channels) == (0.2, 0.03, 0.01, (0.5, 0.9), 0.5, 3)
    focal = build_segmentation_loss(LossConfig(name="focal_tversky", alpha=0.3, beta=0.7), num_classes=3).base
    assert focal.focal_gamma == pytest.approx(4 / 3) and (
        focal.controller.kp,
        focal.controller.ki,
        focal.controller.kd,
    ) == (0, 0, 0)
    assert (
        build_segmentation_loss(LossConfig(name="focal_tversky", focal_gamma=2.0), num_classes=3).base.focal_gamma
        == 2.0
    )
    with pytest.raises(ValueError, match="num_classes"):
        build_segmentation_loss(LossConfig(), num_classes=1)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"beta": 0.95}, "beta_bounds"),  # outside the default bounds (0.3, 0.9)
        ({"alpha": 0.2, "beta": 0.5}, "alpha \\+ beta"),  # high bound 0.9 > alpha + beta
        ({"beta_bounds": (0.9, 0.3)}, "beta_bounds"),
        ({"ema": 1.0}, "ema"),
        ({"target": -1.0}, "target"),
        ({"update": "batch"}, "update"),
        ({"focal_gamma": 0.0}, "focal_gamma"),
    ],
)
def test_loss_config_rejects(fields, match):
    with pytest.raises(ValidationError, match=match):
        LossConfig(name="pid_tversky", **fields)


def test_loss_config_bounds_only_bind_pid_tversky():
    assert LossConfig(name="tversky", alpha=0.05, beta=0.95).beta == 0.95
