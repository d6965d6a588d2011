"""Attention targets of the level prompts: the disc of each level, labelled or derived between its two labelled
vertebral bodies (hand-built masks, one real fastcleverseg_vb2 scan, the warp of the training augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from lss.anatomy import LEVELS, Structure, disc_label_for_level, label_partition, vertebra_label
from lss.config import PreprocessConfig
from lss.data.adapters.card import discover
from lss.model import case_to_sample
from lss.model.level_targets import disc_between_bodies, level_disc_targets
from lss.preprocessing.transforms import preprocess_study
from lss.training.augment import SpatialAugment

CARDS = REPO_ROOT / "data" / "cards"
SHARED = REPO_ROOT.parent / "shared" / "data" / "real"
needs_shared = pytest.mark.skipif(not (SHARED / "fastcleverseg_vb2").is_dir(), reason="../shared/data/real is absent")


def _box(shape, y0, y1, z0, z1) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, z0:z1] = True
    return mask


def test_the_disc_fills_the_gap_between_two_bodies_across_their_shared_extent():
    shape = (40, 60)
    lower, upper = _box(shape, 10, 30, 5, 20), _box(shape, 10, 30, 26, 41)
    disc = disc_between_bodies(upper, lower, spacing_mm=(1.0, 1.0))
    np.testing.assert_array_equal(disc, _box(shape, 10, 30, 20, 26))  # z 20..25, across y 10..29
    # Anisotropic pixels: same pixels, same disc.
    np.testing.assert_array_equal(disc_between_bodies(upper, lower, spacing_mm=(0.8, 1.25)), disc)
    # The upper body shifted 2 px forwards: the shared extent (y 12..29) is filled, at most a pixel row beyond it.
    upper = _box(shape, 12, 32, 26, 41)
    disc = disc_between_bodies(upper, lower, spacing_mm=(1.0, 1.0))
    assert disc[12:30, 20:26].all() and not (disc & (upper | lower)).any()
    ys, zs = np.nonzero(disc)
    assert ys.min() >= 11 and ys.max() <= 30 and disc[11:31].sum() == disc.sum()
    assert disc.sum() <= 18 * 6 + 2 * 10


def test_a_wedge_shaped_disc_follows_both_endplates():
    shape = (50, 70)
    yy, zz = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    in_ap = (yy >= 10) & (yy < 40)
    lower = in_ap & (zz >= 5) & (zz < 25)
    upper = in_ap & (zz >= 30 + (yy - 10) // 5) & (zz < 50)  # lordotic: the gap is 5 px posterior, 10 anterior
    disc = disc_between_bodies(upper, lower)
    height = disc.sum(axis=1)
    assert height[11] == 5 and height[38] == 10
    assert np.all(np.diff(height[11:39]) >= 0)  # widens from posterior to anterior
    assert height[:10].sum() == 0 and height[40:].sum() == 0 and not (disc & (upper | lower)).any()


def test_touching_bodies_give_a_small_disc_at_the_facing_endplates():
    shape = (40, 60)
    lower, upper = _box(shape, 10, 30, 5, 20), _box(shape, 10, 30, 20, 35)
    disc = disc_between_bodies(upper, lower, spacing_mm=(1.0, 1.0), radius_mm=4.0)
    ys, zs = np.nonzero(disc)
    assert disc.sum() == np.count_nonzero(np.hypot(*np.indices(shape) - np.array([19.5, 19.5])[:, None, None]) <= 4)
    assert abs(ys.mean() - 19.5) < 0.01 and abs(zs.mean() - 19.5) < 0.01
    # A gap of two pixels: those two rows, across the shared extent.
    lower, upper = _box(shape, 10, 30, 5, 19), _box(shape, 10, 30, 21, 35)
    disc = disc_between_bodies(upper, lower, radius_mm=4.0)
    ys, zs = np.nonzero(disc)
    assert set(zs.tolist()) == {19, 20} and ys.min() == 10 and ys.max() == 29


def test_no_disc_without_both_bodies_or_with_bodies_in_the_wrong_order():
    shape = (40, 60)
    lower, upper = _box(shape, 10, 30, 5, 20), _box(shape, 10, 30, 26, 41)
    empty = np.zeros(shape, dtype=bool)
    assert not disc_between_bodies(empty, lower).any() and not disc_between_bodies(upper, empty).any()
    assert not disc_between_bodies(lower, upper).any()  # "upper" below "lower": no disc
    with pytest.raises(ValueError, match="one shape"):
        disc_between_bodies(upper, lower[:, :50])
    with pytest.raises(ValueError, match="spacing_mm"):
        disc_between_bodies(upper, lower, spacing_mm=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"\(Y, Z\) mask"):
        disc_between_bodies(upper[None], lower[None])


def test_labelled_discs_win_and_missing_discs_are_derived_from_their_bodies():
    shape = (40, 120)
    labels = np.zeros(shape, dtype=np.int16)
    labels[_box(shape, 10, 30, 0, 15)] = vertebra_label("S1")
    labels[_box(shape, 10, 30, 20, 40)] = vertebra_label("L5")
    labels[_box(shape, 10, 30, 46, 66)] = vertebra_label("L4")
    labels[_box(shape, 10, 30, 72, 92)] = vertebra_label("L3")
    labels[_box(shape, 12, 28, 16, 19)] = disc_label_for_level("L5/S1")
    targets = level_disc_targets(labels, (1.0, 1.0))
    assert targets.shape == (len(LEVELS), *shape)
    by_level = dict(zip(LEVELS, targets, strict=True))
    np.testing.assert_array_equal(by_level["L5/S1"], labels == disc_label_for_level("L5/S1"))  # labelled: as is
    assert set(np.nonzero(by_level["L4/L5"])[1].tolist()) == set(range(40, 46))
    assert set(np.nonzero(by_level["L3/L4"])[1].tolist()) == set(range(66, 72))
    assert not by_level["L2/L3"].any() and not by_level["L1/L2"].any()  # L2 and L1 are not labelled
    off = level_disc_targets(labels, (1.0, 1.0), derive_from_bodies=False)
    assert off[LEVELS.index("L5/S1")].any() and not off[LEVELS.index("L4/L5")].any()


def _phantom_like_case(labels: np.ndarray, groups) -> dict[str, np.ndarray]:
    return {
        "sagittal_image": np.zeros(labels.shape, dtype=np.float16),
        "sagittal_labels": labels.astype(np.int16),
        "sagittal_affine": np.diag([3.5, 1.25, 1.25, 1.0]),
        "label_partition": label_partition(groups).astype(np.int8),
        "labelled_span_only": np.asarray(groups is not None),
        "axial_image": np.zeros((len(LEVELS), 3, 8, 8), dtype=np.float16),
        "axial_present": np.zeros(len(LEVELS), dtype=bool),
        "severity": np.full(len(LEVELS), -1, dtype=np.int8),
        "area_mm2": np.full(len(LEVELS), np.nan, dtype=np.float32),
        "ap_mm": np.full(len(LEVELS), np.nan, dtype=np.float32),
    }


def test_case_to_sample_derives_only_where_labels_are_bodies_alone():
    slice_ = np.zeros((40, 100), dtype=np.int16)
    slice_[_box(slice_.shape, 10, 30, 10, 30)] = vertebra_label("L5")
    slice_[_box(slice_.shape, 10, 30, 36, 56)] = vertebra_label("L4")
    labels = np.stack([slice_] * 3)
    bodies = case_to_sample(_phantom_like_case(labels, [["vertebral_body"]]))
    target = bodies["level_target"][LEVELS.index("L4/L5")]
    assert target.dtype == torch.bool and target.any()
    assert set(torch.nonzero(target)[:, 1].tolist()) == set(range(30, 36))
    # The labelled span still bounds the structure target (bodies only: -1 above and below, discs unknown).
    assert (bodies["sagittal_target"][:, :10] == -1).all() and (bodies["sagittal_target"][:, 56:] == -1).all()
    # Whole vertebrae (SPIDER: body and posterior elements in one label): a gap there is no disc.
    whole = case_to_sample(_phantom_like_case(labels, [["vertebral_body", "posterior_elements"], ["disc"]]))
    assert not whole["level_target"].any()


def test_the_training_warp_moves_the_derived_disc_with_the_image():
    slice_ = np.zeros((64, 96), dtype=np.int16)
    slice_[_box(slice_.shape, 20, 44, 10, 40)] = vertebra_label("L5")
    slice_[_box(slice_.shape, 20, 44, 48, 78)] = vertebra_label("L4")
    sample = case_to_sample(_phantom_like_case(np.stack([slice_] * 3), [["vertebral_body"]]))
    augment = SpatialAugment(prob_affine=1.0, rotate_range=np.radians(15.0), prob_elastic=0.0, prob_fov_si=0.0,
                             prob_fov_ap=0.0).set_random_state(seed=0)
    out = augment(dict(sample))
    warped = out["level_target"]
    assert warped.dtype == torch.bool and warped.shape == sample["level_target"].shape
    level = LEVELS.index("L4/L5")
    assert warped[level].any() and not torch.equal(warped[level], sample["level_target"][level])
    # The warped disc still lies between the warped bodies (it is background in the warped structure target).
    body = out["sagittal_target"] == Structure.VERTEBRAL_BODY.index
    assert (warped[level] & body).float().sum() <= 0.1 * warped[level].float().sum()


@needs_shared
def test_a_real_vb2_scan_gets_one_disc_between_each_pair_of_labelled_bodies():
    record = next(r for r in discover(CARDS / "fastcleverseg_vb2.yaml").records if r.study_id == "fastcleverseg_vb2_02")
    case = preprocess_study(record, PreprocessConfig()).arrays()
    sample = case_to_sample(case)
    mid = case["sagittal_labels"][case["sagittal_labels"].shape[0] // 2]
    target = sample["level_target"].numpy()
    centres = {}
    for level, disc in zip(LEVELS, target, strict=True):
        upper_name, lower_name = level.split("/")
        upper, lower = mid == vertebra_label(upper_name), mid == vertebra_label(lower_name)
        if not (upper.any() and lower.any()):
            assert not disc.any(), level  # L5/S1: the sacrum is not labelled on vb2
            continue
        assert not (disc & (upper | lower)).any()
        area_mm2 = disc.sum() * 1.25 * 1.25
        assert 80 <= area_mm2 <= 700, (level, area_mm2)  # a lumbar disc on a sagittal slice: ~ 30-45 x 4-15 mm
        zs = np.nonzero(disc)[1]
        assert np.nonzero(lower)[1].mean() < zs.mean() < np.nonzero(upper)[1].mean()
        centres[level] = zs.mean()
    assert set(centres) == {"L1/L2", "L2/L3", "L3/L4", "L4/L5"}
    assert [centres[level] for level in ("L4/L5", "L3/L4", "L2/L3", "L1/L2")] == sorted(centres.values())
