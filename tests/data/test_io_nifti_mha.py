"""NIfTI and MetaImage/NRRD: round trips with oblique affines, the real scan, format detection, views, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers_io import axial_axes, image_volume, label_volume, sagittal_axes

from lss.data.errors import ErrorCode, StudyError
from lss.data.io import (
    detect_format,
    guess_view,
    read_image_geometry,
    read_series,
    read_volume,
    through_plane_axis,
    view_of_normal,
    write_mha,
    write_nifti,
)
from lss.data.manifest import SeriesRecord
from lss.data.volume import Volume

REAL_SCAN = Path(__file__).resolve().parents[2] / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"

WRITERS: dict[str, Callable[[Volume, Path], Path]] = {
    ".nii": write_nifti,
    ".nii.gz": write_nifti,
    ".mha": write_mha,
    ".mhd": write_mha,
    ".nrrd": write_mha,
}
FORMATS = {".nii": "nifti", ".nii.gz": "nifti", ".mha": "mha", ".mhd": "mha", ".nrrd": "nrrd"}
VOLUMES = [
    ("oblique axial image", lambda: image_volume(axial_axes(15.0)), "axial"),
    ("sagittal label map", lambda: label_volume(sagittal_axes(), spacing=(0.6, 0.6, 3.3)), "sagittal"),
    ("left-handed oblique image", lambda: image_volume(axial_axes(-10.0) * [[1], [1], [-1]]), "axial"),
]


@pytest.mark.parametrize("suffix", list(WRITERS))
@pytest.mark.parametrize("name, make, view", VOLUMES, ids=[case[0] for case in VOLUMES])
def test_round_trip(tmp_path: Path, suffix: str, name: str, make, view: str) -> None:
    volume = make()
    path = WRITERS[suffix](volume, tmp_path / f"volume{suffix}")
    assert path.exists()
    back = read_volume(path)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    assert back.meta["format"] == FORMATS[suffix]
    assert back.meta["view"] == view
    shape, affine = read_image_geometry(path)
    assert shape == volume.shape
    np.testing.assert_allclose(affine, volume.affine, atol=1e-4)


def test_mha_geometry_is_lps_on_disk(tmp_path: Path) -> None:
    volume = image_volume(axial_axes(15.0), origin=(10.0, 20.0, 30.0))
    path = write_mha(volume, tmp_path / "v.mha")
    image = sitk.ReadImage(str(path))
    assert image.GetOrigin() == pytest.approx((-10.0, -20.0, 30.0))
    assert image.GetSize() == volume.shape
    # ITK index (i, j, k) is the Volume index (i, j, k).
    assert image.GetPixel(3, 2, 1) == pytest.approx(float(volume.array[3, 2, 1]))


def test_bool_and_int64_are_written(tmp_path: Path) -> None:
    base = label_volume(sagittal_axes())
    for array in (base.array > 100, base.array.astype(np.int64)):
        volume = Volume(array, base.affine)
        for path in (write_nifti(volume, tmp_path / "m.nii.gz"), write_mha(volume, tmp_path / "m.mha")):
            np.testing.assert_array_equal(read_volume(path).array, array.astype(np.int64))


def test_real_scan_reads_as_sagittal() -> None:
    if not REAL_SCAN.exists():
        pytest.skip(f"{REAL_SCAN} is not in this checkout")
    volume = read_volume(REAL_SCAN)
    assert volume.shape == (38, 257, 201)
    assert volume.meta["view"] == "sagittal"
    assert volume.meta["slice_axis"] == 0
    assert volume.axcodes() == ("R", "A", "S")
    np.testing.assert_allclose(volume.spacing, 1.0, atol=1e-3)
    assert np.isfinite(volume.array).all()


@pytest.mark.parametrize(
    "shape, spacing, expected",
    [
        ((20, 256, 256), (3.3, 0.6, 0.6), 0),  # thick sagittal slices first
        ((256, 256, 20), (0.6, 0.6, 4.0), 2),
        ((38, 257, 201), (1.0, 1.0, 1.0), 0),  # isotropic: fewest voxels
        ((100, 100, 100), (1.0, 1.0, 1.0), 0),  # full tie: first axis
        ((64, 30, 64), (1.0, 1.02, 1.0), 1),  # within 5 %: fewest voxels
    ],
)
def test_through_plane_axis(shape, spacing, expected) -> None:
    assert through_plane_axis(shape, spacing) == expected


@pytest.mark.parametrize(
    "normal, view",
    [((1, 0, 0), "sagittal"), ((-0.9, 0.3, 0.2), "sagittal"), ((0, 1, 0.2), "coronal"), ((0, -0.26, 0.97), "axial")],
)
def test_view_of_normal(normal, view) -> None:
    assert view_of_normal(normal) == view


def test_view_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="slice normal"):
        view_of_normal((0, 0, 0))
    with pytest.raises(ValueError, match="4x4"):
        guess_view(np.eye(3))
    with pytest.raises(ValueError, match="slice_axis"):
        guess_view(np.eye(4), slice_axis=3)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.nii", "nifti"),
        ("a.NII.GZ", "nifti"),
        ("a.mha", "mha"),
        ("a.mhd", "mha"),
        ("a.nrrd", "mha"),
        ("a.dcm", "dicom"),
    ],
)
def test_detect_format_by_suffix(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    assert detect_format(path) == expected


def test_detect_format_sniffs_dicom_without_suffix(tmp_path: Path) -> None:
    from helpers_io import write_series

    files = write_series(image_volume(sagittal_axes()), tmp_path / "s", file_name="IM{instance:05d}")
    assert detect_format(files[0]) == "dicom"
    assert detect_format(tmp_path / "s") == "dicom"
    assert read_volume(files[0]).shape == (16, 12, 1)


def _write_nan(tmp_path: Path, suffix: str) -> Path:
    volume = image_volume(sagittal_axes())
    volume.array[1, 2, 3] = np.nan
    return WRITERS[suffix](volume, tmp_path / f"nan{suffix}")


def _cut(tmp_path: Path, suffix: str) -> Path:
    path = WRITERS[suffix](image_volume(sagittal_axes()), tmp_path / f"full{suffix}")
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _text(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"text{suffix}"
    path.write_text("not an image at all\n")
    return path


def _four_d(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), dtype=np.float32), np.eye(4)), path)
    return path


def _two_d(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / "2d.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), dtype=np.float32)), str(path))
    return path


def _vector(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5, 6, 3), dtype=np.uint8), isVector=True), str(path))
    return path


def _jpeg(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / "picture.jpg"  # PNG is a supported format now (lss.data.io.png); JPEG is not
    path.write_bytes(b"\xff\xd8\xff\xe0")
    return path


ERROR_CASES = [
    ("missing nifti", lambda tmp_path, s: tmp_path / "none.nii.gz", ErrorCode.NOT_FOUND),
    ("missing mha", lambda tmp_path, s: tmp_path / "none.mha", ErrorCode.NOT_FOUND),
    ("unknown suffix", _jpeg, ErrorCode.UNSUPPORTED_FORMAT),
    ("text named .nii.gz", lambda tmp_path, s: _text(tmp_path, ".nii.gz"), ErrorCode.NOT_AN_IMAGE),
    ("text named .nii", lambda tmp_path, s: _text(tmp_path, ".nii"), ErrorCode.NOT_AN_IMAGE),
    ("text named .mha", lambda tmp_path, s: _text(tmp_path, ".mha"), ErrorCode.NOT_AN_IMAGE),
    ("truncated .nii.gz", lambda tmp_path, s: _cut(tmp_path, ".nii.gz"), ErrorCode.TRUNCATED),
    ("truncated .nii", lambda tmp_path, s: _cut(tmp_path, ".nii"), ErrorCode.TRUNCATED),
    ("truncated .mha", lambda tmp_path, s: _cut(tmp_path, ".mha"), ErrorCode.TRUNCATED),
    ("NaN in nifti", lambda tmp_path, s: _write_nan(tmp_path, ".nii.gz"), ErrorCode.NON_FINITE),
    ("NaN in mha", lambda tmp_path, s: _write_nan(tmp_path, ".mha"), ErrorCode.NON_FINITE),
    ("4D nifti", _four_d, ErrorCode.UNSUPPORTED_FORMAT),
    ("2D mha", _two_d, ErrorCode.UNSUPPORTED_FORMAT),
    ("RGB mha", _vector, ErrorCode.UNSUPPORTED_FORMAT),
]


@pytest.mark.parametrize("name, make, code", ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_errors(tmp_path: Path, name: str, make, code: ErrorCode) -> None:
    path = make(tmp_path, None)
    with pytest.raises(StudyError) as caught:
        read_volume(path)
    assert caught.value.code == code, caught.value
    assert caught.value.path == str(path)


def test_single_volume_4d_nifti_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), dtype=np.float32), np.eye(4)), path)
    assert read_volume(path).shape == (4, 5, 6)


@pytest.mark.parametrize("writer, name", [(write_nifti, "v.mha"), (write_mha, "v.nii.gz"), (write_mha, "v.png")])
def test_writers_reject_wrong_suffix(tmp_path: Path, writer, name: str) -> None:
    with pytest.raises(ValueError, match="writes"):
        writer(image_volume(sagittal_axes()), tmp_path / name)


def test_write_mha_rejects_shear(tmp_path: Path) -> None:
    volume = image_volume(sagittal_axes())
    volume.affine[:3, 2] += volume.affine[:3, 0] * 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        write_mha(volume, tmp_path / "v.mha")


def test_read_series_of_file_records(tmp_path: Path) -> None:
    volume = image_volume(axial_axes(15.0))
    write_nifti(volume, tmp_path / "a.nii.gz")
    record = SeriesRecord(series_id="a", view="axial", path="a.nii.gz", format="nifti")
    np.testing.assert_array_equal(read_series(record, root=tmp_path).array, volume.array)
