"""lss.training.augment: shapes and dtypes kept, seeded draws, image and maps warped together (Dice), unknown (-1)
voxels kept unknown, the field-of-view cut, no in-place change of the cached sample, intensity-only changes in
[0, 1.5], every argument error, and a batch of augmented samples that collates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss.anatomy import (
    CANAL_LABEL,
    LEVELS,
    VERTEBRAE,
    Structure,
    disc_label_for_level,
    posterior_label,
    to_structure_mask,
    vertebra_label,
)
from lss.model.inputs import case_to_sample, collate_samples
from lss.training.augment import RealScanIntensityAugment, SpatialAugment, TrainingAugment

BG, VERT, POST, DISC, CANAL = (s.index for s in Structure)
Y, Z = 128, 192  # the model's sagittal input size (posterior -> anterior, inferior -> superior)
PAD_Z = 184  # z >= PAD_Z is zero padding, as preprocessing pads a scan that does not fill the crop

# Phantom intensities: background, body, posterior elements, disc, canal (a T2-like ordering).
INTENSITY = {BG: 0.05, VERT: 0.5, POST: 0.35, DISC: 0.8, CANAL: 1.0}

WARP = dict(prob_affine=1.0, prob_elastic=1.0, prob_fov_si=0.0, prob_fov_ap=0.0)
FOV = dict(prob_affine=0.0, prob_elastic=0.0, prob_fov_si=1.0, prob_fov_ap=1.0)
ALL_INTENSITY = dict(prob_bias=1.0, prob_contrast=1.0, prob_histogram_shift=1.0, prob_scale=1.0, prob_shift=1.0,
                     prob_noise=1.0, prob_smooth=1.0, prob_sharpen=1.0)


def phantom_case(labelled: bool = True) -> dict[str, np.ndarray]:
    """A lumbar-spine-like preprocessed case: S1..L1 bodies with discs, posterior elements and the canal."""
    labels = np.zeros((5, Y, Z), dtype=np.int16)
    z = 16
    for i, name in enumerate(VERTEBRAE[:6]):  # S1 (inferior) .. L1
        labels[:, 50:100, z : z + 20] = vertebra_label(name)
        labels[:, 18:36, z + 2 : z + 18] = posterior_label(name)
        z += 20
        if i < 5:
            labels[:, 50:100, z : z + 8] = disc_label_for_level(f"{VERTEBRAE[i + 1]}/{name}")
            z += 8
    labels[:, 38:48, 16:z] = CANAL_LABEL
    lookup = np.array([INTENSITY[index] for index in range(len(Structure))], dtype=np.float32)
    image = lookup[to_structure_mask(labels)]
    image[:, :, PAD_Z:] = 0.0
    axial = np.random.default_rng(0).uniform(0.05, 1.0, size=(5, 3, 32, 32)).astype(np.float32)
    axial[4] = 0.0  # L5/S1 without axial data
    case = {
        "sagittal_image": image,
        "axial_image": axial,
        "axial_present": np.array([True, True, True, True, False]),
        "severity": np.array([0, 1, 2, -1, -1], dtype=np.int8),
        "area_mm2": np.array([150.0, 100.0, 60.0, np.nan, np.nan], dtype=np.float32),
        "ap_mm": np.array([12.0, 10.0, 7.0, np.nan, np.nan], dtype=np.float32),
    }
    if labelled:
        case["sagittal_labels"] = labels
        case["axial_labels"] = np.where(axial > 0.5, CANAL_LABEL, 0).astype(np.int16)
    return case


@pytest.fixture(scope="module")
def labelled() -> dict[str, torch.Tensor]:
    return case_to_sample(phantom_case(labelled=True))


@pytest.fixture(scope="module")
def unlabelled() -> dict[str, torch.Tensor]:
    return case_to_sample(phantom_case(labelled=False))


def with_unknown_band(sample: dict[str, torch.Tensor], z_end: int = 30) -> dict[str, torch.Tensor]:
    """The sample with the target unknown (-1) below ``z_end``, that band marked as 1 in image channel 0."""
    sample = dict(sample)
    target = sample["sagittal_target"].clone()
    target[:, :z_end] = -1
    image = sample["sagittal"].clone()
    image[0] = 0.0
    image[0, :, :z_end] = 1.0
    sample["sagittal_target"], sample["sagittal"] = target, image
    return sample


def bounding_box(mask: torch.Tensor) -> torch.Tensor:
    """(Y, Z) bool: the smallest rectangle holding every True of ``mask``."""
    rows, columns = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    box = torch.zeros_like(mask)
    box[int(rows.min()) : int(rows.max()) + 1, int(columns.min()) : int(columns.max()) + 1] = True
    return box


def _replace(sample, **changes):
    return {**sample, **changes}


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values (NaN equals NaN)."""
    if a.is_floating_point():
        return a.shape == b.shape and bool(torch.all((a == b) | (a.isnan() & b.isnan())))
    return torch.equal(a, b)


def assert_same_structure(out: dict[str, torch.Tensor], sample: dict[str, torch.Tensor]) -> None:
    assert out.keys() == sample.keys()
    for key, value in sample.items():
        assert out[key].shape == value.shape, key
        assert out[key].dtype == value.dtype, key


# ---------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, pass-through keys, seeds


@pytest.mark.parametrize("spatial, intensity", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("which", ["labelled", "unlabelled"])
def test_shapes_dtypes_and_untouched_keys(spatial, intensity, which, request):
    sample = request.getfixturevalue(which)
    augment = TrainingAugment(spatial=spatial, intensity=intensity, seed=0)
    for _ in range(4):
        out = augment(sample)
        assert_same_structure(out, sample)
        for key in ("severity", "area_mm2", "ap_mm", "axial_present", "sagittal_partition", "axial_target"):
            assert equal(out[key], sample[key]), key
        assert out["level_target"].dtype == torch.bool


def test_same_seed_same_draws_and_different_seed_different(labelled):
    def run(augment):
        return [augment(labelled) for _ in range(3)]

    first, again, other = run(TrainingAugment(seed=3)), run(TrainingAugment(seed=3)), run(TrainingAugment(seed=4))
    for a, b in zip(first, again, strict=True):
        for key in a:
            assert equal(a[key], b[key]), key
    assert any(not torch.equal(a["sagittal"], b["sagittal"]) for a, b in zip(first, other, strict=True))
    # Re-seeding a used transform (what a worker does) replays its draws.
    used = TrainingAugment(seed=99)
    used(labelled)
    used.set_random_state(3)
    assert torch.equal(used(labelled)["sagittal"], first[0]["sagittal"])


def test_the_transforms_are_not_idle(labelled):
    spatial = SpatialAugment(**WARP).set_random_state(0)(labelled)
    assert not torch.equal(spatial["sagittal"], labelled["sagittal"])
    assert not torch.equal(spatial["sagittal_target"], labelled["sagittal_target"])
    intensity = RealScanIntensityAugment(**ALL_INTENSITY).set_random_state(0)(labelled)
    assert not torch.equal(intensity["sagittal"], labelled["sagittal"])
    assert not torch.equal(intensity["axial"], labelled["axial"])


# ---------------------------------------------------------------------------------------------------------------
# Spatial: image and maps move together; unknown stays unknown; outside is background


@pytest.mark.parametrize("seed", range(6))
def test_image_and_target_stay_aligned(labelled, seed):
    out = SpatialAugment(**WARP).set_random_state(seed)(labelled)
    image, target, levels = out["sagittal"][1], out["sagittal_target"], out["level_target"]
    assert dice(image > 0.2, target > 0) > 0.97  # foreground: midway between background and posterior elements
    assert dice((image > 0.65) & (image < 0.9), target == DISC) > 0.9  # the thin discs
    assert dice(image > 0.9, target == CANAL) > 0.9
    # Not idle: the image did move, so the unwarped target no longer fits it as well.
    assert dice(image > 0.2, labelled["sagittal_target"] > 0) < dice(image > 0.2, target > 0)
    # The level maps ride on the same nearest-neighbour grid as the target: exactly the warped discs.
    assert torch.equal(levels.any(dim=0), target == DISC)
    assert set(target.unique().tolist()) <= {BG, VERT, POST, DISC, CANAL}


@pytest.mark.parametrize("seed", range(4))
def test_unknown_voxels_stay_unknown_and_no_new_labels_appear(labelled, seed):
    sample = with_unknown_band(labelled)
    out = SpatialAugment(**WARP).set_random_state(seed)(sample)
    target = out["sagittal_target"]
    assert set(target.unique().tolist()) <= set(sample["sagittal_target"].unique().tolist())
    unknown = target == -1
    assert unknown.any()
    visible_band = out["sagittal"][0] > 0.5
    assert dice(unknown, visible_band) > 0.95


def test_outside_the_image_is_blank_background_even_where_the_border_was_unknown(labelled):
    sample = with_unknown_band(labelled)
    assert sample["sagittal_target"][0, 0] == -1
    shrink = SpatialAugment(prob_affine=1.0, rotate_range=0.0, zoom_range=(0.6, 0.6), translate_fraction=0.0,
                            shear_range=0.0, prob_elastic=0.0, prob_fov_si=0.0, prob_fov_ap=0.0)
    out = shrink(sample)
    for y, z in [(0, 0), (0, Z - 1), (Y - 1, 0), (Y - 1, Z - 1)]:
        assert out["sagittal_target"][y, z] == BG
        assert not out["level_target"][:, y, z].any()
        assert torch.all(out["sagittal"][:, y, z] == 0)
    assert (out["sagittal_target"] == -1).any()  # the band itself is still unknown where it maps
    assert (out["sagittal_target"] == DISC).any()


def test_a_case_without_labels_stays_all_unknown(unlabelled):
    augment = SpatialAugment(prob_affine=1.0, prob_elastic=1.0, prob_fov_si=1.0, prob_fov_ap=1.0)
    for seed in range(3):
        out = augment.set_random_state(seed)(unlabelled)
        assert torch.all(out["sagittal_target"] == -1)
        assert not out["level_target"].any()
        assert not torch.equal(out["sagittal"], unlabelled["sagittal"])


@pytest.mark.parametrize("seed", range(5))
def test_field_of_view_cut_blanks_the_image_and_sets_background(labelled, seed):
    sample = with_unknown_band(labelled)
    augment = SpatialAugment(**FOV).set_random_state(seed)
    out = augment(sample)
    window = bounding_box(out["sagittal"].ne(0).any(dim=0))
    # What is not blank is the input's non-zero part of one rectangle (the padding at z >= PAD_Z was zero already).
    assert torch.equal(out["sagittal"].ne(0).any(dim=0), window & sample["sagittal"].ne(0).any(dim=0))
    rows, columns = int(window.any(dim=1).sum()), int(window.any(dim=0).sum())
    assert 0.6 * Y - 1 <= rows <= 0.95 * Y + 1
    assert columns <= 0.95 * Z + 1
    # Inside: untouched. Outside: image 0, target background (also where it was unknown), no level.
    assert torch.equal(out["sagittal"][:, window], sample["sagittal"][:, window])
    assert torch.equal(out["sagittal_target"][window], sample["sagittal_target"][window])
    assert torch.equal(out["level_target"][:, window], sample["level_target"][:, window])
    assert torch.all(out["sagittal"][:, ~window] == 0)
    assert torch.all(out["sagittal_target"][~window] == BG)
    assert not out["level_target"][:, ~window].any()


def test_field_of_view_window_sizes_follow_the_keep_ranges(labelled):
    sample = _replace(labelled, sagittal=torch.ones_like(labelled["sagittal"]))
    augment = SpatialAugment(prob_affine=0.0, prob_elastic=0.0, prob_fov_si=1.0, fov_si_keep=(0.5, 0.6),
                             prob_fov_ap=0.0).set_random_state(1)
    starts = set()
    for _ in range(8):
        kept = augment(sample)["sagittal"].ne(0).all(dim=0)
        assert torch.equal(kept, bounding_box(kept))
        assert kept.any(dim=1).all()  # the whole anterior-posterior depth is kept
        columns = torch.nonzero(kept[0]).flatten()
        assert 0.5 * Z - 1 <= len(columns) <= 0.6 * Z + 1
        starts.add(int(columns[0]))
    assert len(starts) > 1  # the window moves: scans start and stop anywhere


def test_the_cached_input_is_not_modified(labelled):
    sample = with_unknown_band(labelled)
    before = {key: value.clone() for key, value in sample.items()}
    augment = TrainingAugment(SpatialAugment(prob_affine=1, prob_elastic=1, prob_fov_si=1, prob_fov_ap=1),
                              RealScanIntensityAugment(**ALL_INTENSITY), seed=0)
    out = augment(sample)
    assert out is not sample
    for key, value in before.items():
        assert equal(sample[key], value), key
    nothing = TrainingAugment(SpatialAugment(prob_affine=0, prob_elastic=0, prob_fov_si=0, prob_fov_ap=0),
                              RealScanIntensityAugment(**{name: 0.0 for name in ALL_INTENSITY}))
    out = nothing(sample)
    for key in ("sagittal", "sagittal_target", "level_target", "axial"):
        assert torch.equal(out[key], sample[key]) and out[key] is not sample[key], key


# ---------------------------------------------------------------------------------------------------------------
# Intensity


@pytest.mark.parametrize("per_level", [False, True])
def test_intensity_changes_images_only_within_range(labelled, per_level):
    augment = RealScanIntensityAugment(**ALL_INTENSITY, axial_per_level=per_level, noise_std=0.3, shift_offset=0.5)
    for seed in range(3):
        out = augment.set_random_state(seed)(labelled)
        for key in ("sagittal_target", "level_target", "axial_target", "severity", "sagittal_partition"):
            assert out[key] is labelled[key], key
        for key in ("sagittal", "axial"):
            assert out[key].dtype == torch.float32
            assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.5
        # Exact zeros (padding, a level without axial data) stay zero, as in real inputs.
        assert torch.all(out["sagittal"][:, :, PAD_Z:] == 0)
        assert torch.all(out["axial"][4] == 0)


def test_intensity_without_preserve_zeros_touches_padding(labelled):
    augment = RealScanIntensityAugment(prob_noise=1.0, noise_std=0.1, prob_shift=1.0, preserve_zeros=False,
                                       prob_bias=0, prob_contrast=0, prob_histogram_shift=0, prob_scale=0,
                                       prob_smooth=0, prob_sharpen=0, image_keys=("sagittal",))
    out = augment.set_random_state(0)(labelled)
    assert out["sagittal"][:, :, PAD_Z:].ne(0).any()
    assert out["axial"] is labelled["axial"]


# ---------------------------------------------------------------------------------------------------------------
# Batches


def test_augmented_samples_collate(labelled, unlabelled):
    augment = TrainingAugment(seed=5)
    samples = [augment(s) for s in (labelled, unlabelled, with_unknown_band(labelled), labelled)]
    batch = collate_samples(samples)
    assert batch["sagittal"].shape == (4, 3, Y, Z)
    assert batch["sagittal_target"].shape == (4, Y, Z) and batch["sagittal_target"].dtype == torch.int64
    assert batch["level_target"].shape == (4, len(LEVELS), Y, Z) and batch["level_target"].dtype == torch.bool
    assert batch["axial"].shape == (4, 5, 3, 32, 32)
    assert batch["sagittal_partition"].shape == (4, len(Structure))
    assert (batch["sagittal_target"] >= 0).flatten(1).any(dim=1).tolist() == [True, False, True, True]


# ---------------------------------------------------------------------------------------------------------------
# Errors

ARGUMENT_ERRORS = [
    (SpatialAugment, {"prob_affine": 1.5}, ValueError, "prob_affine"),
    (SpatialAugment, {"prob_elastic": -0.1}, ValueError, "prob_elastic"),
    (SpatialAugment, {"prob_fov_si": 2}, ValueError, "prob_fov_si"),
    (SpatialAugment, {"prob_fov_ap": -1}, ValueError, "prob_fov_ap"),
    (SpatialAugment, {"rotate_range": -0.1}, ValueError, "rotate_range"),
    (SpatialAugment, {"zoom_range": (1.2, 0.8)}, ValueError, "zoom_range"),
    (SpatialAugment, {"zoom_range": (0.0, 1.0)}, ValueError, "zoom_range"),
    (SpatialAugment, {"zoom_range": (1.0,)}, ValueError, "zoom_range"),
    (SpatialAugment, {"translate_fraction": 1.0}, ValueError, "translate_fraction"),
    (SpatialAugment, {"shear_range": -0.5}, ValueError, "shear_range"),
    (SpatialAugment, {"elastic_spacing": (0, 24)}, ValueError, "elastic_spacing"),
    (SpatialAugment, {"elastic_spacing": (24,)}, ValueError, "elastic_spacing"),
    (SpatialAugment, {"elastic_magnitude": (-1.0, 2.0)}, ValueError, "elastic_magnitude"),
    (SpatialAugment, {"fov_si_keep": (0.5, 1.2)}, ValueError, "fov_si_keep"),
    (SpatialAugment, {"fov_ap_keep": (0.0, 0.5)}, ValueError, "fov_ap_keep"),
    (SpatialAugment, {"mask_keys": "level_target"}, TypeError, "mask_keys"),
    (RealScanIntensityAugment, {"prob_noise": 2.0}, ValueError, "prob_noise"),
    (RealScanIntensityAugment, {"prob_bias": -0.5}, ValueError, "prob_bias"),
    (RealScanIntensityAugment, {"bias_degree": 0}, ValueError, "bias_degree"),
    (RealScanIntensityAugment, {"bias_coeff_range": (0.2, -0.2)}, ValueError, "bias_coeff_range"),
    (RealScanIntensityAugment, {"gamma_range": (0.0, 1.0)}, ValueError, "gamma_range"),
    (RealScanIntensityAugment, {"histogram_control_points": (2, 5)}, ValueError, "histogram_control_points"),
    (RealScanIntensityAugment, {"histogram_control_points": (4.5, 6)}, ValueError, "histogram_control_points"),
    (RealScanIntensityAugment, {"noise_std": -0.1}, ValueError, "noise_std"),
    (RealScanIntensityAugment, {"scale_factor": 1.0}, ValueError, "scale_factor"),
    (RealScanIntensityAugment, {"shift_offset": float("nan")}, ValueError, "shift_offset"),
    (RealScanIntensityAugment, {"smooth_sigma": (1.0, 0.5)}, ValueError, "smooth_sigma"),
    (RealScanIntensityAugment, {"sharpen_alpha": (-1.0, 2.0)}, ValueError, "sharpen_alpha"),
    (RealScanIntensityAugment, {"image_keys": "sagittal"}, TypeError, "image_keys"),
    (TrainingAugment, {"spatial": "yes"}, TypeError, "spatial"),
    (TrainingAugment, {"intensity": SpatialAugment()}, TypeError, "intensity"),
]


@pytest.mark.parametrize("cls, kwargs, error, name", ARGUMENT_ERRORS)
def test_invalid_arguments_raise(cls, kwargs, error, name):
    with pytest.raises(error, match=name):
        cls(**kwargs)


SAMPLE_ERRORS = [
    (lambda s: _replace(s, sagittal=s["sagittal"][0]), ValueError, r"sagittal must be \(S, Y, Z\)"),
    (lambda s: _replace(s, sagittal_target=s["sagittal_target"][:, :-1]), ValueError, "sagittal_target must be"),
    (lambda s: _replace(s, sagittal_target=s["sagittal_target"].int()), ValueError, "int64"),
    (lambda s: _replace(s, level_target=s["level_target"].float()), ValueError, "level_target must be bool"),
    (lambda s: _replace(s, level_target=s["level_target"][0]), ValueError, r"level_target must be \(C, Y, Z\)"),
    (lambda s: {k: v for k, v in s.items() if k != "level_target"}, KeyError, "allow_missing_keys"),
]


@pytest.mark.parametrize("corrupt, error, match", SAMPLE_ERRORS)
def test_ill_shaped_samples_raise(labelled, corrupt, error, match):
    with pytest.raises(error, match=match):
        SpatialAugment()(corrupt(labelled))


def test_missing_maps_can_be_allowed_and_bad_images_raise_in_intensity(labelled):
    sample = {k: v for k, v in labelled.items() if k not in ("level_target", "sagittal_target")}
    out = SpatialAugment(allow_missing_keys=True, **WARP)(sample)
    assert out.keys() == sample.keys()
    with pytest.raises(ValueError, match=r"axial must be \(S, Y, Z\) or \(L, S, H, W\)"):
        RealScanIntensityAugment()(_replace(labelled, axial=labelled["axial"][None]))
    with pytest.raises(KeyError, match="axial"):
        RealScanIntensityAugment()({"sagittal": labelled["sagittal"]})
