"""The model's first pass: where the crop goes in a whole field of view, and the model placing a real scan's crop."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REAL_SCAN
from lss.anatomy import Structure
from lss.config import PreprocessConfig
from lss.preprocessing.locate import spine_centre, spine_column


def _column(levels_z: list[int], sacrum: tuple[int, int], shape=(128, 400), y=(50, 80)) -> np.ndarray:
    """A mid-sagittal mask of a spine: a sacrum (a tall body), discs at ``levels_z`` (caudal first) with 28-pixel
    bodies between them, and the canal behind; 1 mm pixels."""
    mask = np.zeros(shape, dtype=int)
    mask[y[0] - 12:y[0] - 4, sacrum[0]:levels_z[-1] + 40] = Structure.CANAL.index
    mask[y[0]:y[1], sacrum[0]:sacrum[1]] = Structure.VERTEBRAL_BODY.index
    for z in levels_z:
        mask[y[0]:y[1], z - 4:z + 5] = Structure.DISC.index
        mask[y[0]:y[1], z + 5:z + 33] = Structure.VERTEBRAL_BODY.index
    return mask


def test_the_crop_is_centred_between_l5_s1_and_l1_l2_where_the_levels_can_be_counted():
    """A field of view from the thoracic spine to the coccyx is longer than the crop: the crop goes where the graded
    levels are, not to the column's middle nor its caudal end."""
    discs = [80, 118, 156, 194, 232, 270, 308]  # L5/S1 ... L1/L2, T12/L1, T11/T12
    mask = _column(discs, sacrum=(5, 76))
    mask[100:110, 380:390] = Structure.DISC.index  # a stray "disc" in the abdomen is not part of the column
    centre = spine_centre(mask, (1.0, 1.0), crop_z=192)
    assert centre is not None
    assert centre[1] == pytest.approx((80 + 232) / 2) and 38 <= centre[0] < 80  # Y: within the column
    # Without counting (no crop size): the column's middle.
    assert abs(spine_centre(mask, (1.0, 1.0))[1] - (80 + 232) / 2) > 15


def test_without_a_sacrum_the_crop_is_anchored_at_the_caudal_end_of_a_long_column():
    discs = [60, 98, 136, 174, 212, 250, 288]
    mask = _column(discs, sacrum=(0, 0))  # no body below the lowest disc: the levels cannot be counted
    mask[:, :56] = 0
    centre = spine_centre(mask, (1.0, 1.0), crop_z=192, margin_z=8)
    z_low = np.argwhere(np.isin(mask, [1, 3, 4]))[:, 1].min()
    assert centre[1] == pytest.approx(z_low - 8 + 96)


def test_no_spine_found_is_none_and_a_stray_blob_does_not_move_the_centre():
    assert spine_centre(np.zeros((128, 192), dtype=int), (1.25, 1.25)) is None
    mask = np.zeros((128, 192), dtype=int)
    mask[60:70, 20:170] = Structure.DISC.index
    mask[5:9, 5:9] = Structure.CANAL.index  # small and far away
    np.testing.assert_allclose(spine_centre(mask, (1.25, 1.25)), [64.5, 94.5], atol=0.5)
    assert spine_column(mask)[5:9, 5:9].sum() == 0


def test_the_locator_segments_the_whole_field_of_view_at_the_working_spacing(tiny_model_file):
    from lss.inference.locate import SpineLocator
    from lss.model import load_model

    locator = SpineLocator(load_model(tiny_model_file), (128, 192), (1.25, 1.25))
    image = np.random.default_rng(0).random((9, 240, 300)).astype(np.float32)
    assert locator.segment(image).shape == (240, 300)  # windows over the whole field of view, no resizing
    centre = locator(image)
    assert centre is None or (centre[0] == 4 and 0 <= centre[1] < 240 and 0 <= centre[2] < 300)
    with pytest.raises(ValueError, match="spacing_mm"):
        SpineLocator(locator.model, (128, 192), (0.0, 1.25))
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        locator.segment(image[0])


def test_a_real_scan_without_a_mask_gets_its_crop_from_the_model(tiny_model_file):
    from lss.data.adapters import build_manifest
    from lss.inference.locate import SpineLocator
    from lss.model import load_model
    from lss.preprocessing.transforms import preprocess_study

    config = PreprocessConfig()
    record = build_manifest(REAL_SCAN).records[0]
    calls = []
    locator = SpineLocator(load_model(tiny_model_file), config.sagittal_shape[1:], config.sagittal_spacing_mm[1:])

    def spy(image):
        calls.append(image.shape)
        return locator(image)

    case = preprocess_study(record, config, spy)
    assert len(calls) == 1 and len(calls[0]) == 3
    assert case.info["sagittal_crop_placed_by"] in ("model_pass", "field_of_view_centre")
    fixed = preprocess_study(record, config, lambda image: np.array([image.shape[0] // 2, 10.0, 10.0]))
    assert fixed.info["sagittal_crop_placed_by"] == "model_pass" and fixed.info["sagittal_centre_vox"][1:] == [10, 10]
    assert preprocess_study(record, config).info["sagittal_crop_placed_by"] == "field_of_view_centre"


@pytest.mark.parametrize("variant", ["thick_slices_fine_matrix", "partial_coverage"])
def test_real_fields_of_view_preprocess_to_the_model_grid(variant, tmp_path):
    """5 mm slices on a 0.5 mm, ~500-pixel matrix, and a scan cut to its lower half: the same crop, spacing and
    placement rules apply (the model's pass given as a fixed locator here, the real model in the test above)."""
    import nibabel as nib

    from lss.data.adapters import build_manifest
    from lss.preprocessing.transforms import preprocess_study

    source = nib.load(REAL_SCAN)
    data = np.asarray(source.dataobj, dtype=np.float32)
    affine = source.affine.copy()
    if variant == "thick_slices_fine_matrix":
        x = data.shape[0] // 5 * 5
        data = data[:x].reshape(x // 5, 5, *data.shape[1:]).mean(axis=1)
        data = np.repeat(np.repeat(data, 2, axis=1), 2, axis=2)
        affine[:3, :3] = affine[:3, :3] @ np.diag([5.0, 0.5, 0.5])
    else:
        data = data[:, :, : data.shape[2] // 2]
    path = tmp_path / f"{variant}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    config = PreprocessConfig()
    seen = []

    def locator(image):
        seen.append(image.shape)
        return (np.array(image.shape) - 1) / 2.0

    case = preprocess_study(build_manifest(path).records[0], config, locator)
    assert case.sagittal_image.shape == tuple(config.sagittal_shape)
    spacing = np.linalg.norm(case.sagittal_affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, config.sagittal_spacing_mm, atol=1e-3)
    assert seen and case.info["sagittal_crop_placed_by"] == "model_pass"
    assert not case.axial_present.any() and np.isfinite(case.sagittal_image.astype(np.float32)).all()
