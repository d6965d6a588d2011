"""lss.training.metrics: hand-computed Dice / HD95 / severity / RSNA values, perfect and worst cases, -1 ignoring,
streaming equals one batch, calibration bins, scikit-learn agreement, and every error message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lss.anatomy import RSNA_SEVERITY_WEIGHTS, Structure
from lss.training.metrics import (
    LOG_LOSS_EPS,
    SEVERITY_NAMES,
    SegmentationMeter,
    calibration_bins,
    rsna_score,
    segmentation_metrics,
    severity_metrics,
)

BG, VERT, POST, DISC, CANAL = (s.index for s in Structure)
K = len(Structure)
NAN = float("nan")


def grid(rows: list[str]) -> torch.Tensor:
    """A (H, W) label map from strings: '.' background, 'v' vertebral body, 'd' disc, 'c' canal, 'x' unlabelled (-1)."""
    code = {".": BG, "v": VERT, "d": DISC, "c": CANAL, "x": -1}
    return torch.tensor([[code[ch] for ch in row] for row in rows], dtype=torch.long)


def batch(*maps: list[str]) -> torch.Tensor:
    return torch.stack([grid(m) for m in maps])


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


FULL = ["vv..", "vv..", "dd.c", "dd.c"]  # every structure present: vertebra 4 px, disc 4 px, canal 2 px

# (prediction, target, spacing, expected values; absent keys are not checked)
SEGMENTATION_CASES = [
    # Perfect: Dice 1 everywhere, HD95 0.
    (batch(FULL), batch(FULL), None,
     {"dice_vertebral_body": 1.0, "dice_disc": 1.0, "dice_spinal_canal": 1.0, "dice_macro": 1.0, "hd95_spinal_canal": 0.0,
      "n_cases": 1}),
    # Worst: every structure predicted somewhere else: Dice 0.
    (batch(["dd.c", "dd.c", "vv..", "vv.."]), batch(FULL), None,
     {"dice_vertebral_body": 0.0, "dice_disc": 0.0, "dice_spinal_canal": 0.0, "dice_macro": 0.0}),
    # Half the vertebra found plus 2 false pixels: 2*2/(4+4) = 0.5; canal 1 of 2 pixels: 2*1/(1+2) = 2/3.
    (batch(["v.vv", "v...", "dd..", "dd.c"]), batch(FULL), None,
     {"dice_vertebral_body": 0.5, "dice_disc": 1.0, "dice_spinal_canal": 2 / 3, "dice_macro": (0.5 + 1 + 2 / 3) / 3}),
    # No disc in prediction nor target: NaN and left out of the macro mean (not 0, not 1).
    (batch(["vv..", "vv..", "...c", "...c"]), batch(["vv..", "vv..", "...c", "...c"]), None,
     {"dice_disc": NAN, "dice_macro": 1.0}),
    # A disc predicted where the target has none: 0, and it counts in the macro mean.
    (batch(["vv..", "vv..", "d..c", "...c"]), batch(["vv..", "vv..", "...c", "...c"]), None,
     {"dice_disc": 0.0, "dice_macro": 2 / 3}),
    # Unlabelled pixels are neither hits nor false alarms: the extra disc pixel sits on -1.
    (batch(["vv..", "vv..", "dd.c", "ddvc"]), batch(["vv..", "vv..", "dd.c", "ddxc"]), None,
     {"dice_vertebral_body": 1.0, "dice_macro": 1.0}),
    # A case whose target is all -1 is left out entirely.
    (batch(FULL, ["....", "....", "....", "...."]), batch(FULL, ["xxxx"] * 4), None,
     {"dice_macro": 1.0, "n_cases": 1}),
    # HD95 of a one-pixel canal 3 columns away: 3 pixels, 6 mm with (H, W) spacing (1, 2).
    (batch(["c...", "....", "....", "...."]), batch(["...c", "....", "....", "...."]), None,
     {"hd95_spinal_canal": 3.0}),
    (batch(["c...", "....", "....", "...."]), batch(["...c", "....", "....", "...."]), (1.0, 2.0),
     {"hd95_spinal_canal": 6.0}),
    # Per-case spacing, and the mean over cases: 3 * 2 mm and 3 * 0.5 mm.
    (batch(["c...", "....", "....", "...."], ["c...", "....", "....", "...."]),
     batch(["...c", "....", "....", "...."], ["...c", "....", "....", "...."]), [(1.0, 2.0), (1.0, 0.5)],
     {"hd95_spinal_canal": (6.0 + 1.5) / 2}),
    # No canal predicted: HD95 NaN (not inf, not 0), Dice 0.
    (batch(["vv..", "vv..", "dd..", "dd.."]), batch(FULL), 1.0, {"hd95_spinal_canal": NAN, "dice_spinal_canal": 0.0}),
    # Nothing labelled at all: every value NaN, no case.
    (batch(FULL), batch(["xxxx"] * 4), None, {"dice_macro": NAN, "hd95_spinal_canal": NAN, "n_cases": 0}),
]


@pytest.mark.parametrize("pred, target, spacing, expected", SEGMENTATION_CASES)
def test_segmentation_metrics_by_hand(pred, target, spacing, expected):
    result = segmentation_metrics(pred, target, spacing=spacing)
    names = [s.value for s in list(Structure)[1:]]
    assert set(result) == {f"dice_{n}" for n in names} | {f"hd95_{n}" for n in names} | {"dice_macro", "n_cases"}
    assert math.isnan(result["dice_posterior_elements"])  # in neither prediction nor target
    for key, value in expected.items():
        assert same(result[key], value, 1e-6), (key, result[key], value)


def test_a_case_is_scored_only_on_what_it_labels():
    from lss.anatomy import label_partition

    bodies_only = torch.as_tensor(label_partition([["vertebral_body"]]))[None]
    # The prediction finds the body and also paints a disc and a canal where the target says 0 (unknown there).
    pred, target = batch(["vv..", "vv..", "dd.c", "dd.c"]), batch(["vv..", "vv..", "....", "...."])
    scored = segmentation_metrics(pred, target, partition=bodies_only)
    assert scored["dice_vertebral_body"] == 1.0 and scored["dice_macro"] == 1.0
    for name in ("disc", "spinal_canal", "posterior_elements"):
        assert math.isnan(scored[f"dice_{name}"]) and math.isnan(scored[f"hd95_{name}"])
    # Scored as if fully labelled, the same prediction has false discs and canal: the partition is what saves it.
    assert segmentation_metrics(pred, target)["dice_disc"] == 0.0
    # A union label (SPIDER's vertebra = body + posterior elements) is scored on the union of the predictions.
    spider = torch.as_tensor(label_partition([["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]]))
    pred = torch.tensor([[[VERT, POST], [DISC, CANAL]]])
    target = torch.tensor([[[VERT, VERT], [DISC, CANAL]]])
    assert segmentation_metrics(pred, target, partition=spider[None])["dice_vertebral_body"] == 1.0


def test_logits_and_labels_give_the_same_numbers():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, K, 16, 20, generator=g)
    target = torch.randint(0, K, (3, 16, 20), generator=g)
    target[1, :4] = -1
    by_logits = segmentation_metrics(logits, target, spacing=(0.5, 0.5))
    by_labels = segmentation_metrics(logits.argmax(dim=1), target, spacing=(0.5, 0.5))
    assert by_logits == pytest.approx(by_labels, nan_ok=True)


def test_the_meter_streams_to_the_same_result_as_one_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, K, 12, 12, generator=g)
    target = torch.randint(0, K, (5, 12, 12), generator=g)
    target[2] = -1
    spacing = torch.tensor([[1.0, 1.0], [0.5, 2.0], [1.0, 1.0], [2.0, 2.0], [0.9, 0.9]])
    meter = SegmentationMeter()
    rows = [meter.update(logits[i:i + 2], target[i:i + 2], spacing[i:i + 2]) for i in range(0, 5, 2)]
    assert [len(r) for r in rows] == [2, 1, 1] and len(meter) == 4
    assert meter.compute() == pytest.approx(segmentation_metrics(logits, target, spacing=spacing), nan_ok=True)
    assert meter.per_case()["dice_disc"].shape == (4,)
    meter.reset()
    assert len(meter) == 0 and math.isnan(meter.compute()["dice_macro"])


def test_dice_matches_monai_on_cases_where_every_structure_is_present():
    from monai.metrics import compute_dice

    g = torch.Generator().manual_seed(2)
    pred = torch.randint(0, K, (4, 10, 10), generator=g)
    target = torch.randint(0, K, (4, 10, 10), generator=g)

    def onehot(x):
        return torch.nn.functional.one_hot(x, K).permute(0, 3, 1, 2).float()

    monai = compute_dice(onehot(pred), onehot(target), include_background=False).mean(dim=0)
    result = segmentation_metrics(pred, target)
    for s, value in zip(list(Structure)[1:], monai, strict=True):
        assert result[f"dice_{s.value}"] == pytest.approx(float(value))


# (callable, expected message fragment)
SEGMENTATION_ERRORS = [
    (lambda: segmentation_metrics(torch.zeros(1, K, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long)), "does not match"),
    (lambda: segmentation_metrics(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)), "K=5 channels"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4, dtype=torch.long)),
     "(B, H, W) class indices"),
    (lambda: segmentation_metrics(torch.zeros(4, 4), torch.zeros(1, 4, 4, dtype=torch.long)), "(B, K, H, W) logits"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4)), "integer class"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)), "must be integers"),
    (lambda: segmentation_metrics(torch.full((1, 4, 4), 7), torch.zeros(1, 4, 4, dtype=torch.long)), "0..4"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 5)), "-1 (unlabelled)"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long),
                                  spacing=(1.0, 1.0, 1.0)), "spacing must be"),
    (lambda: segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long),
                                  spacing=(1.0, -1.0)), "positive"),
    (lambda: SegmentationMeter(num_classes=1), "at least 2"),
    (lambda: SegmentationMeter(hd_class=0), "foreground class"),
    (lambda: SegmentationMeter(hd_percentile=0), "hd_percentile"),
]


@pytest.mark.parametrize("call, message", SEGMENTATION_ERRORS)
def test_segmentation_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_the_meter_refuses_to_mix_mm_and_pixels():
    meter = SegmentationMeter()
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    meter.update(labels, labels, spacing=1.0)
    with pytest.raises(ValueError, match="mix mm and pixels"):
        meter.update(labels, labels)


# ---------------------------------------------------------------------------------------------------- severity
P3 = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])
W = np.asarray(RSNA_SEVERITY_WEIGHTS)
WORST = -math.log(LOG_LOSS_EPS)  # log loss of probability 0 on the true class after clipping: 34.54

# (probs, targets, softmax, expected; absent keys are not checked)
SEVERITY_CASES = [
    # Perfect one-hot predictions.
    (np.eye(3), [0, 1, 2], False,
     {"n": 3, "accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "rsna_log_loss": 0.0, "log_loss": 0.0,
      "recall_severe": 1.0, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "ece": 0.0}),
    # Worst: all the mass on a wrong class; log loss = -log(1e-15) whatever the weights.
    (np.eye(3)[[1, 2, 0]], [0, 1, 2], False,
     {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "rsna_log_loss": WORST, "log_loss": WORST,
      "confusion_matrix": [[0, 1, 0], [0, 0, 1], [1, 0, 0]], "ece": 1.0}),
    # Uniform: log(3), weighted or not.
    (np.full((4, 3), 1 / 3), [0, 1, 2, 2], False, {"rsna_log_loss": math.log(3), "log_loss": math.log(3)}),
    # Sample weights 1/2/4 by the true class.
    (P3, [0, 1, 2], False,
     {"rsna_log_loss": (-1 * math.log(0.7) - 2 * math.log(0.5) - 4 * math.log(0.6)) / 7,
      "log_loss": -(math.log(0.7) + math.log(0.5) + math.log(0.6)) / 3}),
    # Rows not summing to 1 are normalised (the competition metric's rule).
    (P3 * 0.5, [0, 1, 2], False, {"rsna_log_loss": (-1 * math.log(0.7) - 2 * math.log(0.5) - 4 * math.log(0.6)) / 7}),
    # Logits with softmax=True: log of the softmax.
    (np.log(P3) + 3.0, [0, 1, 2], True, {"log_loss": -(math.log(0.7) + math.log(0.5) + math.log(0.6)) / 3}),
    # Unknown (-1) rows are left out.
    (np.vstack([P3, np.eye(3)[[2]]]), [0, 1, 2, -1], False, {"n": 3, "accuracy": 1.0}),
    # Predictions [0, 1, 1, 2, 0] for truth [0, 0, 1, 2, 2]: recalls 1/2, 1, 1/2; F1 1/2, 2/3, 2/3.
    (np.eye(3)[[0, 1, 1, 2, 0]] * 0.8 + 0.2 / 3, [0, 0, 1, 2, 2], False,
     {"accuracy": 0.6, "recall_normal_mild": 0.5, "recall_moderate": 1.0, "recall_severe": 0.5,
      "balanced_accuracy": 2 / 3, "macro_f1": (0.5 + 2 / 3 + 2 / 3) / 3,
      "confusion_matrix": [[1, 1, 0], [0, 1, 0], [1, 0, 1]]}),
    # A class absent from the truth: its recall is NaN and balanced accuracy averages the others.
    (np.eye(3)[[0, 0, 1]], [0, 0, 1], False, {"recall_severe": NAN, "balanced_accuracy": 1.0, "macro_f1": 1.0}),
    # Nothing known: NaN metrics and an empty confusion matrix.
    (P3, [-1, -1, -1], False,
     {"n": 0, "accuracy": NAN, "rsna_log_loss": NAN, "macro_f1": NAN, "confusion_matrix": [[0] * 3] * 3}),
]


@pytest.mark.parametrize("probs, targets, softmax, expected", SEVERITY_CASES)
def test_severity_metrics_by_hand(probs, targets, softmax, expected):
    result = severity_metrics(probs, targets, softmax=softmax)
    assert {f"recall_{n}" for n in SEVERITY_NAMES} <= set(result)
    for key, value in expected.items():
        if isinstance(value, list):
            assert result[key] == value, key
        else:
            assert same(result[key], value, 1e-9), (key, result[key], value)


def test_severity_metrics_take_torch_tensors():
    from_numpy = severity_metrics(P3, [0, 1, 2])
    from_torch = severity_metrics(torch.tensor(P3, dtype=torch.float32), torch.tensor([0, 1, 2]))
    assert from_torch["rsna_log_loss"] == pytest.approx(from_numpy["rsna_log_loss"], rel=1e-6)


def test_severity_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = rng.integers(0, 3, size=200)
    result = severity_metrics(probs, targets)
    predicted = probs.argmax(axis=1)
    assert result["rsna_log_loss"] == pytest.approx(
        sklearn_metrics.log_loss(targets, probs, sample_weight=W[targets], labels=[0, 1, 2]), rel=1e-9)
    assert result["log_loss"] == pytest.approx(sklearn_metrics.log_loss(targets, probs, labels=[0, 1, 2]), rel=1e-9)
    assert result["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(targets, predicted))
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(targets, predicted, average="macro"))
    assert result["confusion_matrix"] == sklearn_metrics.confusion_matrix(targets, predicted).tolist()
    recalls = sklearn_metrics.recall_score(targets, predicted, average=None)
    assert [result[f"recall_{n}"] for n in SEVERITY_NAMES] == pytest.approx(recalls)


SEVERITY_ERRORS = [
    (lambda: severity_metrics(np.zeros((3, 4)), [0, 1, 2]), "3 severity classes"),
    (lambda: severity_metrics(np.full(3, 1 / 3), [0]), r"probs must be \(N, 3\)"),
    (lambda: severity_metrics(P3, [0, 1]), r"targets must have shape \(3,\)"),
    (lambda: severity_metrics(P3, [0, 1, 3]), "-1 \\(unknown\\) or 0..2"),
    (lambda: severity_metrics(P3, [0, 1, 1.5]), "integer severity indices"),
    (lambda: severity_metrics(P3 - 0.5, [0, 1, 2]), "softmax=True"),
    (lambda: severity_metrics(np.array([[0.5, np.nan, 0.5]]), [0]), "NaN or infinite"),
    (lambda: severity_metrics(np.zeros((1, 3)), [0]), "row of zeros"),
    (lambda: rsna_score(P3, [0, 1, 2]), r"probs must be \(B, L, 3\)"),
    (lambda: rsna_score(P3[None], [[0, 1]]), r"targets must have shape \(1, 3\)"),
    (lambda: calibration_bins([0.5, 1.5], [1, 0]), r"\[0, 1\]"),
    (lambda: calibration_bins([0.5], [1, 0]), r"both be \(N,\)"),
    (lambda: calibration_bins([0.5], [1], n_bins=0), "n_bins"),
]


@pytest.mark.parametrize("call, message", SEVERITY_ERRORS)
def test_severity_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------------- RSNA score
def _study(p_severe: list[float], rest_on: int = 0) -> list[list[float]]:
    """Levels whose P(Severe) is given and whose remaining mass sits on class ``rest_on``."""
    rows = []
    for p in p_severe:
        row = [0.0, 0.0, p]
        row[rest_on] += 1 - p
        rows.append(row)
    return rows


def test_rsna_score_by_hand():
    # Study A: truth (Normal, Severe), P(Severe) (0.1, 0.6) -> any severe: label 1, prediction 0.6, weight 4.
    # Study B: truth (Normal, Moderate), P(Severe) (0.2, 0.3) -> label 0, prediction 0.3, weight max(1, 2) = 2.
    probs = np.array([[[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]], [[0.6, 0.2, 0.2], [0.2, 0.5, 0.3]]])
    targets = np.array([[0, 2], [0, 1]])
    result = rsna_score(probs, targets)
    level = (-math.log(0.7) - 4 * math.log(0.6) - math.log(0.6) - 2 * math.log(0.5)) / (1 + 4 + 1 + 2)
    any_severe = (-4 * math.log(0.6) - 2 * math.log(0.7)) / (4 + 2)
    assert result["rsna_log_loss"] == pytest.approx(level)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2)
    assert (result["n"], result["n_studies"]) == (4, 2)
    # The level term is severity_metrics' weighted log loss on the same levels.
    flat = severity_metrics(probs.reshape(-1, 3), targets.ravel())
    assert result["rsna_log_loss"] == pytest.approx(flat["rsna_log_loss"])


# (probs (B, L, 3), targets (B, L), expected any_severe_log_loss)
ANY_SEVERE_CASES = [
    # Only scored levels count: the unknown level's P(Severe) 0.9 is not the study's maximum.
    (np.array([_study([0.2, 0.9]), _study([0.5, 0.5])]), np.array([[0, -1], [2, -1]]),
     (-math.log(0.8) - 4 * math.log(0.5)) / 5),
    # A negative study with no Moderate level has weight 1; with one, weight 2; a positive one 4.
    (np.array([_study([0.5]), _study([0.5], rest_on=1), _study([0.5])]), np.array([[0], [1], [2]]), math.log(2)),
    (np.array([_study([0.1]), _study([0.9])]), np.array([[0], [2]]), (-math.log(0.9) - 4 * math.log(0.9)) / 5),
    # Perfect and worst predictions.
    (np.array([_study([0.0, 1.0]), _study([0.0, 0.0])]), np.array([[0, 2], [0, 0]]), -math.log(1 - LOG_LOSS_EPS)),
    (np.array([_study([0.0, 0.0]), _study([1.0, 0.0])]), np.array([[0, 2], [0, 0]]), WORST),
]


@pytest.mark.parametrize("probs, targets, expected", ANY_SEVERE_CASES)
def test_any_severe_term(probs, targets, expected):
    assert rsna_score(probs, targets)["any_severe_log_loss"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_rsna_score_without_known_levels_is_nan():
    result = rsna_score(np.full((2, 5, 3), 1 / 3), np.full((2, 5), -1))
    assert math.isnan(result["rsna_score"]) and (result["n"], result["n_studies"]) == (0, 0)


def test_rsna_score_agrees_with_the_competition_code_written_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(30, 5, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    targets = rng.integers(-1, 3, size=(30, 5))
    targets[0] = -1  # a study with nothing scored
    result = rsna_score(logits, targets, softmax=True)
    # The competition's steps (score() of the RSNA 2024 metric notebook), on the scored rows only.
    scored = targets >= 0
    t, p = targets[scored], probs[scored]
    level = sklearn_metrics.log_loss(t, p, sample_weight=W[t], labels=[0, 1, 2])
    studies = scored.any(axis=1)
    label = np.array([(targets[b][scored[b]] == 2).any() for b in np.flatnonzero(studies)])
    pred = np.array([probs[b, scored[b], 2].max() for b in np.flatnonzero(studies)])
    weight = np.array([W[targets[b][scored[b]]].max() for b in np.flatnonzero(studies)])
    any_severe = sklearn_metrics.log_loss(label, pred, sample_weight=weight, labels=[False, True])
    assert result["rsna_log_loss"] == pytest.approx(level, rel=1e-9)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe, rel=1e-9)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2, rel=1e-9)


# ---------------------------------------------------------------------------------------------------- calibration
def test_calibration_bins_by_hand():
    # Bins [0, .1): conf .05 never right; [.1, .2): conf .15 never right; [.9, 1]: conf .95 right once of twice.
    result = calibration_bins([0.05, 0.15, 0.95, 1.0], [0, 0, 1, 0], n_bins=10)
    assert result["count"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert result["frequency"][9] == 0.5 and result["confidence"][9] == pytest.approx(0.975)
    assert math.isnan(result["confidence"][5])
    assert result["ece"] == pytest.approx(0.25 * 0.05 + 0.25 * 0.15 + 0.5 * 0.475)
    assert math.isnan(calibration_bins([], [])["ece"])


def test_any_severe_term_is_undefined_when_every_study_has_the_same_label():
    # scikit-learn's binary log_loss raises on one class in y_true: the official metric has no value there.
    probs = np.array([_study([0.1, 0.2]), _study([0.3, 0.0])])
    for targets in (np.array([[0, 1], [0, 0]]), np.array([[2, 0], [0, 2]])):
        result = rsna_score(probs, targets)
        assert result["any_severe_defined"] is False
        assert math.isnan(result["any_severe_log_loss"]) and math.isnan(result["rsna_score"])
        assert math.isfinite(result["rsna_log_loss"])


def test_rsna_score_matches_the_official_metric_on_saturated_probabilities():
    """The host's metric: scikit-learn's log_loss (eps = float64 machine epsilon since 1.2) with RSNA weights on the
    levels, and on the per-study maximum of P(Severe) with the per-study maximum weight; the mean of both."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(7)
    probs = rng.dirichlet([0.2, 0.2, 0.2], size=(40, 5))
    probs[:10] = np.eye(3)[rng.integers(0, 3, size=(10, 5))]  # saturated: exact 0 and 1, some confidently wrong
    targets = rng.integers(0, 3, size=(40, 5))
    targets[0, 0], targets[1, 2] = -1, -1  # unknown levels are not scored
    result = rsna_score(probs, targets)

    weights = np.array([1.0, 2.0, 4.0])
    scored = targets >= 0
    level = log_loss(targets[scored], probs[scored], sample_weight=weights[targets[scored]], labels=[0, 1, 2])
    p_severe = np.where(scored, probs[..., 2], -np.inf).max(axis=1)
    label = (targets == 2).any(axis=1).astype(int)
    weight = np.where(scored, weights[np.clip(targets, 0, None)], 0).max(axis=1)
    any_severe = log_loss(label, p_severe, sample_weight=weight)
    assert result["rsna_log_loss"] == pytest.approx(level, rel=1e-12)
    assert result["any_severe_log_loss"] == pytest.approx(any_severe, rel=1e-12)
    assert result["rsna_score"] == pytest.approx((level + any_severe) / 2, rel=1e-12)
    assert LOG_LOSS_EPS == np.finfo(np.float64).eps
