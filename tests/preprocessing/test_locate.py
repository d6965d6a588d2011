"""The coarse first pass: geometry of the shrunk field of view, and the model placing the crop of a real scan."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REAL_SCAN
from lss.anatomy import Structure
from lss.config import PreprocessConfig
from lss.preprocessing.locate import coarse_view, spine_centre


def test_the_coarse_view_fits_the_whole_field_of_view_and_maps_back():
    image = np.zeros((20, 300, 360), dtype=np.float32)
    image[:, 200:230, 40:300] = 1.0  # a "spine" far from the centre of the field of view
    view = coarse_view(image, (128, 192), slices=3)
    assert view.image.shape == (3, 128, 192) and view.scale == pytest.approx(300 / 128)
    mask = np.where(view.image[1] > 0.5, Structure.VERTEBRAL_BODY.index, 0)
    centre = spine_centre(mask, view)
    assert centre is not None
    np.testing.assert_allclose(centre[1:], [214.5, 169.5], atol=view.scale)
    assert centre[0] == 10


def test_no_spine_found_is_none_and_a_stray_blob_does_not_move_the_centre():
    image = np.zeros((5, 128, 192), dtype=np.float32)
    view = coarse_view(image, (128, 192), slices=3)
    assert view.scale == 1.0
    assert spine_centre(np.zeros((128, 192), dtype=int), view) is None
    mask = np.zeros((128, 192), dtype=int)
    mask[60:70, 20:170] = Structure.DISC.index
    mask[5:9, 5:9] = Structure.CANAL.index  # small and far away
    np.testing.assert_allclose(spine_centre(mask, view)[1:], [64.5, 94.5], atol=0.5)
    with pytest.raises(ValueError, match="odd"):
        coarse_view(image, (128, 192), slices=2)


def test_a_real_scan_without_a_mask_gets_its_crop_from_the_model(tiny_model_file):
    from lss.data.adapters import build_manifest
    from lss.inference.locate import SpineLocator
    from lss.model import load_model
    from lss.preprocessing.transforms import preprocess_study

    config = PreprocessConfig()
    record = build_manifest(REAL_SCAN).records[0]
    calls = []
    locator = SpineLocator(load_model(tiny_model_file), tuple(config.sagittal_shape[1:]))

    def spy(image):
        calls.append(image.shape)
        return locator(image)

    case = preprocess_study(record, config, spy)
    assert len(calls) == 1 and len(calls[0]) == 3
    assert case.info["sagittal_crop_placed_by"] in ("coarse_pass", "field_of_view_centre")
    fixed = preprocess_study(record, config, lambda image: np.array([image.shape[0] // 2, 10.0, 10.0]))
    assert fixed.info["sagittal_crop_placed_by"] == "coarse_pass" and fixed.info["sagittal_centre_vox"][1:] == [10, 10]
    assert preprocess_study(record, config).info["sagittal_crop_placed_by"] == "field_of_view_centre"


@pytest.mark.parametrize("variant", ["thick_slices_fine_matrix", "partial_coverage"])
def test_real_fields_of_view_preprocess_to_the_model_grid(variant, tmp_path):
    """5 mm slices on a 0.5 mm, ~500-pixel matrix, and a scan cut to its lower half: the same crop, spacing and
    placement rules apply (a coarse pass given as a fixed locator here, the real model in the test above)."""
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
    assert seen and case.info["sagittal_crop_placed_by"] == "coarse_pass"
    assert not case.axial_present.any() and np.isfinite(case.sagittal_image.astype(np.float32)).all()
