"""lss.metrics.segmentation: hand-computed Dice and HD95, perfect and worst cases, -1 ignoring, partial labels,
streaming equals one batch, agreement with MONAI, and every error message."""

from __future__ import annotations

import math

import pytest
import torch

from lss.anatomy import Structure
from lss.metrics import SegmentationMeter, segmentation_metrics

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
     {"dice_vertebral_body": 1.0, "dice_disc": 1.0, "dice_spinal_canal": 1.0, "dice_macro": 1.0,
      "hd95_spinal_canal": 0.0, "n_cases": 1}),
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
