"""lss.losses.grading: weighted (focal) cross-entropy over severities, unknown grades ignored, RSNA's any-severe
term, and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lss.anatomy import SEVERITIES, Severity
from lss.losses import RSNA_SEVERITY_WEIGHTS, SeverityLoss


def make_batch(batch: int = 4, levels: int = 5, seed: int = 0, unknown: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, levels, len(SEVERITIES), generator=g) * 2
    targets = torch.randint(0, len(SEVERITIES), (batch, levels), generator=g)
    targets[torch.rand(batch, levels, generator=g) < unknown] = -1
    return logits, targets


def reference_cross_entropy(logits, targets, weight):
    return F.cross_entropy(logits.reshape(-1, 3), targets.reshape(-1), weight=weight, ignore_index=-1)


@pytest.mark.parametrize(
    "weights, weight_tensor",
    [
        (None, None),
        ("rsna", torch.tensor([1.0, 2.0, 4.0])),
        ((0.5, 1.0, 3.0), torch.tensor([0.5, 1.0, 3.0])),
        ([1.0, 0.0, 1.0], torch.tensor([1.0, 0.0, 1.0])),
    ],
)
@pytest.mark.parametrize("shape, unknown", [((4, 5), 0.0), ((4, 5), 0.3), ((1, 1), 0.0), ((8, 3), 0.5)])
def test_without_focus_it_is_torch_cross_entropy(weights, weight_tensor, shape, unknown):
    logits, targets = make_batch(*shape, seed=sum(shape), unknown=unknown)
    targets[0, 0] = 0  # at least one known grade
    torch.testing.assert_close(
        SeverityLoss(weights=weights)(logits, targets), reference_cross_entropy(logits, targets, weight_tensor)
    )


def test_rsna_weights_follow_severities_order():
    assert RSNA_SEVERITY_WEIGHTS == (1.0, 2.0, 4.0)
    weights = dict(zip(SEVERITIES, RSNA_SEVERITY_WEIGHTS, strict=True))
    assert weights[Severity.NORMAL_MILD] < weights[Severity.MODERATE] < weights[Severity.SEVERE]


def test_unknown_grades_are_ignored():
    logits, targets = make_batch(seed=1, unknown=0.0)
    loss = SeverityLoss(weights="rsna", focal_gamma=1.5, any_severe_weight=1.0)
    masked = targets.clone()
    masked[:, 2] = -1
    changed = logits.clone()
    changed[:, 2] = torch.randn(logits.shape[0], 3) * 10  # whatever is predicted at an unknown level
    torch.testing.assert_close(loss(changed, masked), loss(logits, masked))
    assert not torch.allclose(loss(logits, targets), loss(logits, masked))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("weights", [None, "rsna"])
def test_focal_term_matches_its_definition(gamma, weights):
    logits, targets = make_batch(seed=2)
    w = torch.tensor(RSNA_SEVERITY_WEIGHTS if weights else (1.0, 1.0, 1.0))
    known = targets >= 0
    p = torch.softmax(logits, -1)[known].gather(-1, targets[known].unsqueeze(-1)).squeeze(-1)
    wy = w[targets[known]]
    expected = (-wy * (1 - p) ** gamma * torch.log(p)).sum() / wy.sum()
    torch.testing.assert_close(SeverityLoss(weights=weights, focal_gamma=gamma)(logits, targets), expected)


def test_focal_term_down_weights_confident_levels():
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.3, 0.0]]])
    targets = torch.tensor([[0, 1]])
    plain = [F.cross_entropy(logits[0, i : i + 1], targets[0, i : i + 1]).item() for i in range(2)]
    focal = SeverityLoss(focal_gamma=2.0)
    ratios = [focal(logits[:, i : i + 1], targets[:, i : i + 1]).item() / plain[i] for i in range(2)]
    assert ratios[0] < 0.01 and ratios[1] > 0.3  # (1 - p) ** 2: 0.001 for p = 0.96, 0.36 for p = 0.4


def reference_any_severe(logits, targets, weights):
    """RSNA 2024's metric term, written out per study: max Severe probability over known levels vs any Severe level,
    binary log loss weighted by the largest sample weight of the study's known levels."""
    probabilities = torch.softmax(logits.double(), -1)
    total, weight_sum = 0.0, 0.0
    for b in range(logits.shape[0]):
        known = [level for level in range(logits.shape[1]) if targets[b, level] >= 0]
        if not known:
            continue
        label = any(int(targets[b, level]) == 2 for level in known)
        p = max(float(probabilities[b, level, 2]) for level in known)
        w = max(weights[int(targets[b, level])] for level in known)
        total += -w * (math.log(p) if label else math.log(1 - p))
        weight_sum += w
    return total / weight_sum


@pytest.mark.parametrize("weights", [None, "rsna"])
@pytest.mark.parametrize("coefficient", [0.5, 1.0])
@pytest.mark.parametrize("seed", [3, 4])
def test_any_severe_term_matches_the_rsna_metric(weights, coefficient, seed):
    logits, targets = make_batch(batch=6, seed=seed, unknown=0.3)
    targets[5] = -1  # a study with no known level does not count
    targets[0] = torch.tensor([0, 0, 2, -1, 1])  # one study with a Severe level
    targets[1] = torch.tensor([0, 1, 0, 0, -1])  # one without
    w = RSNA_SEVERITY_WEIGHTS if weights else (1.0, 1.0, 1.0)
    expected = reference_cross_entropy(logits, targets, torch.tensor(w)) + coefficient * reference_any_severe(
        logits, targets, w
    )
    got = SeverityLoss(weights=weights, any_severe_weight=coefficient)(logits, targets)
    torch.testing.assert_close(got, expected.to(got.dtype))


def test_any_severe_gradient_is_finite_with_saturated_probabilities():
    logits = torch.tensor(
        [[[0.0, 0.0, 60.0], [60.0, 0.0, 0.0]], [[80.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True
    )
    targets = torch.tensor([[0, 0], [2, -1]])
    value = SeverityLoss(weights="rsna", any_severe_weight=1.0, focal_gamma=2.0)(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_all_unknown_gives_zero_with_a_graph():
    logits = torch.randn(2, 5, 3, requires_grad=True)
    value = SeverityLoss(weights="rsna", any_severe_weight=1.0)(logits, torch.full((2, 5), -1))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert logits.grad.abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"weights": "kaggle"}, ValueError, "kaggle"),
        ({"weights": (1.0, 2.0)}, ValueError, "3 values"),
        ({"weights": (1.0, -2.0, 4.0)}, ValueError, "weights"),
        ({"weights": (0.0, 0.0, 0.0)}, ValueError, "not all 0"),
        ({"weights": 3.0}, TypeError, "weights"),
        ({"focal_gamma": -1.0}, ValueError, "focal_gamma"),
        ({"any_severe_weight": float("nan")}, ValueError, "any_severe_weight"),
        ({"ignore_index": 1}, ValueError, "ignore_index"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SeverityLoss(**kwargs)


@pytest.mark.parametrize(
    "logits, targets, error, match",
    [
        (torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long), ValueError, r"\(B, L, 3\)"),
        (torch.zeros(2, 5, 4), torch.zeros(2, 5, dtype=torch.long), ValueError, r"\(B, L, 3\)"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long), ValueError, "targets must be"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 5), TypeError, "integer"),
        (torch.zeros(2, 5, 3), torch.tensor([[0, 1, 2, 3, -1], [0, 0, 0, -2, 0]]), ValueError, r"\[-2, 3\]"),
    ],
)
def test_bad_inputs(logits, targets, error, match):
    with pytest.raises(error, match=match):
        SeverityLoss()(logits, targets)
