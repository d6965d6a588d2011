"""DICOM series: write / read round trips, the tags written, series listing, and every error path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers_io import SHAPE, axial_axes, image_volume, label_volume, quantum, sagittal_axes, write_series
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lss.data.errors import ErrorCode, StudyError
from lss.data.io import (
    dicom_pixel_to_ras,
    list_dicom_series,
    list_dicom_stacks,
    read_dicom_series,
    read_series,
    read_volume,
    split_stack_series_id,
    stack_series_id,
    write_dicom_series,
    write_nifti,
)
from lss.data.manifest import SeriesRecord
from lss.data.volume import Volume

ROUND_TRIPS = [
    # (name, volume factory, expected view)
    ("sagittal image", lambda: image_volume(sagittal_axes()), "sagittal"),
    ("axial image", lambda: image_volume(axial_axes()), "axial"),
    ("oblique axial image (15 deg about LR)", lambda: image_volume(axial_axes(15.0)), "axial"),
    (
        "oblique axial image (-20 deg, fine spacing)",
        lambda: image_volume(axial_axes(-20.0), spacing=(0.3125, 0.3125, 4.4)),
        "axial",
    ),
    ("sagittal label map", lambda: label_volume(sagittal_axes()), "sagittal"),
    ("oblique axial label map", lambda: label_volume(axial_axes(15.0)), "axial"),
]


@pytest.mark.parametrize("name, make, view", ROUND_TRIPS, ids=[case[0] for case in ROUND_TRIPS])
def test_round_trip(tmp_path: Path, name: str, make: Callable[[], Volume], view: str) -> None:
    volume = make()
    files = write_series(volume, tmp_path / "series")
    assert len(files) == SHAPE[2]
    back = read_dicom_series(tmp_path / "series")
    assert back.shape == volume.shape
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    if np.issubdtype(volume.array.dtype, np.integer):
        np.testing.assert_array_equal(back.array, volume.array)  # label maps are exact
    else:
        assert np.abs(back.array - volume.array).max() <= quantum(volume)
    assert back.meta["view"] == view
    assert back.meta["format"] == "dicom"
    assert back.meta["modality"] == "MR"
    assert back.meta["n_slices"] == SHAPE[2]
    assert back.meta["instance_numbers"] == list(range(1, SHAPE[2] + 1))
    # read_volume dispatches a folder to the same reader.
    np.testing.assert_array_equal(read_volume(tmp_path / "series").array, back.array)


def test_round_trip_from_shuffled_file_list(tmp_path: Path) -> None:
    volume = image_volume(axial_axes(15.0))
    files = write_series(volume, tmp_path / "s", file_name="img_{instance}.dcm")
    shuffled = [files[i] for i in (3, 0, 5, 1, 4, 2)]
    back = read_dicom_series(shuffled)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    assert np.abs(back.array - volume.array).max() <= quantum(volume)


def test_left_handed_volume_keeps_its_world_geometry(tmp_path: Path) -> None:
    axes = sagittal_axes()
    axes[2] *= -1.0  # k against row x column: DICOM sorts slices the other way
    volume = image_volume(axes)
    write_series(volume, tmp_path / "s")
    back = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(back.array, volume.array[:, :, ::-1], atol=quantum(volume))
    corners = np.array([[0, 0, 0], [15, 11, 5], [3, 7, 2]])
    np.testing.assert_allclose(back.world(corners), volume.world(corners * [1, 1, -1] + [0, 0, 5]), atol=1e-4)


def test_single_slice_uses_slice_thickness(tmp_path: Path) -> None:
    volume = image_volume(sagittal_axes(), shape=(16, 12, 1), spacing=(0.7, 0.7, 4.0))
    files = write_series(volume, tmp_path / "s")
    back = read_volume(files[0])
    assert back.shape == (16, 12, 1)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    assert back.meta["slice_spacing"] == pytest.approx(4.0)


def test_written_tags(tmp_path: Path) -> None:
    study_uid = generate_uid()
    volume = image_volume(axial_axes(15.0), spacing=(0.8, 0.9, 3.0))
    files = write_dicom_series(
        volume,
        tmp_path / "s",
        study_uid=study_uid,
        series_number=7,
        series_description="Axial T2",
        study_description="LSPINE",
    )
    datasets = [pydicom.dcmread(path) for path in files]
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.file_meta.MediaStorageSOPClassUID == MRImageStorage
    assert first.SOPClassUID == MRImageStorage
    assert first.Modality == "MR"
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([0.9, 0.8])  # [row spacing (j), column spacing (i)]
    assert float(first.SliceThickness) == pytest.approx(3.0)
    assert float(first.SpacingBetweenSlices) == pytest.approx(3.0)
    assert (first.Rows, first.Columns) == (SHAPE[1], SHAPE[0])
    assert first.PhotometricInterpretation == "MONOCHROME2"
    assert (first.BitsAllocated, first.BitsStored, first.HighBit, first.PixelRepresentation) == (16, 16, 15, 0)
    assert first.SeriesNumber == 7 and first.SeriesDescription == "Axial T2"
    assert first.StudyInstanceUID == study_uid
    uids = {first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID}
    assert len(uids) == 3 and all(pydicom.uid.UID(uid).is_valid for uid in uids)
    sop_uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    assert {ds.SeriesInstanceUID for ds in datasets} == {first.SeriesInstanceUID}
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, SHAPE[2] + 1))
    locations = [float(ds.SliceLocation) for ds in datasets]
    np.testing.assert_allclose(np.diff(locations), 3.0, atol=1e-4)
    assert first.pixel_array.shape == (SHAPE[1], SHAPE[0])
    # ImagePositionPatient is LPS: the RAS origin with x and y negated.
    np.testing.assert_allclose(
        [float(v) for v in first.ImagePositionPatient], volume.affine[:3, 3] * [-1, -1, 1], atol=1e-6
    )


def test_instance_uid_prefix_and_file_names(tmp_path: Path) -> None:
    files = write_series(
        image_volume(sagittal_axes()), tmp_path / "s", instance_uid_prefix="1.2.3.4.", file_name="{instance}.dcm"
    )
    assert [p.name for p in files] == [f"{n}.dcm" for n in range(1, SHAPE[2] + 1)]
    assert all(pydicom.dcmread(p).SOPInstanceUID.startswith("1.2.3.4.") for p in files)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"study_uid": "not a uid"}, "study_uid"),
        ({"series_uid": "1.2.abc"}, "series_uid"),
        ({"file_name": "same.dcm"}, "distinct"),
        ({"instance_uid_prefix": "x.y."}, "instance_uid_prefix"),
        ({"first_instance": 0}, "first_instance"),
        ({"first_instance": 2.0}, "first_instance"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    kwargs.setdefault("study_uid", generate_uid())
    with pytest.raises(ValueError, match=match):
        write_dicom_series(image_volume(sagittal_axes()), tmp_path / "s", **kwargs)


def test_writer_rejects_sheared_and_non_finite_volumes(tmp_path: Path) -> None:
    sheared = image_volume(sagittal_axes())
    sheared.affine[:3, 1] += sheared.affine[:3, 0] * 0.3
    with pytest.raises(ValueError, match="orthogonal"):
        write_series(sheared, tmp_path / "a")
    bad = image_volume(sagittal_axes())
    bad.array[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_series(bad, tmp_path / "b")


def test_pixel_to_ras_matches_the_volume_affine(tmp_path: Path) -> None:
    volume = image_volume(axial_axes(15.0))
    files = write_series(volume, tmp_path / "s")
    back = read_dicom_series(tmp_path / "s")
    header = pydicom.dcmread(files[4], stop_before_pixels=True)
    np.testing.assert_allclose(dicom_pixel_to_ras(header, 5.5, 3.25), back.world([5.5, 3.25, 4]), atol=1e-6)


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    study_uid = generate_uid()
    folder = tmp_path / "study"
    sag = image_volume(sagittal_axes())
    ax = image_volume(axial_axes(15.0), shape=(10, 10, 4), seed=3)
    write_dicom_series(
        sag, folder, study_uid=study_uid, series_description="Sagittal T2", series_number=1, file_name="sag_{index}.dcm"
    )
    write_dicom_series(
        ax,
        folder / "nested",
        study_uid=study_uid,
        series_description="Axial T2",
        series_number=2,
        file_name="ax_{index}.dcm",
    )
    (folder / "notes.txt").write_text("not a DICOM file")

    series = list_dicom_series(folder)
    assert [(s.description, s.view, s.n_files, s.modality) for s in series] == [
        ("Sagittal T2", "sagittal", 6, "MR"),
        ("Axial T2", "axial", 4, "MR"),
    ]
    assert series[0].study_uid == series[1].study_uid == study_uid
    assert series[0].series_uid != series[1].series_uid
    assert series[0].files == sorted(series[0].files, key=lambda p: int(p.stem.split("_")[1]))

    with pytest.raises(StudyError) as caught:
        read_volume(folder)
    assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY
    assert "2 DICOM series" in caught.value.message and "series_uid" in caught.value.message

    for info, volume in zip(series, (sag, ax), strict=True):
        back = read_dicom_series(folder, series_uid=info.series_uid)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
        assert read_volume(folder, series_uid=info.series_uid).meta["series_uid"] == info.series_uid
        record = SeriesRecord(series_id=info.series_uid, view=info.view, path=str(folder), format="dicom")
        np.testing.assert_array_equal(read_series(record).array, back.array)

    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, series_uid="1.2.3.999")
    assert caught.value.code == ErrorCode.NOT_FOUND


# ---- series of several stacks (one ImageOrientationPatient each) ------------------------------------------------

# (tilt about LR in degrees, origin z in mm): stack 0 is the most cranial; written in another order below.
STACKS = [(-10.0, 120.0), (5.0, 80.0), (20.0, 40.0)]
STACK_SHAPE = (16, 12, 6)


def write_stacks(folder: Path, order=(1, 2, 0), **kwargs) -> tuple[str, list[Volume]]:
    """The three ``STACKS`` as one series (one SeriesInstanceUID, instance numbers running on); returns the UID and
    the volumes in stack order."""
    uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    volumes = [
        image_volume(axial_axes(tilt), shape=STACK_SHAPE, seed=n, origin=(10.0, -30.0, z))
        for n, (tilt, z) in enumerate(STACKS)
    ]
    for n, index in enumerate(order):
        write_dicom_series(
            volumes[index],
            folder,
            study_uid=study_uid,
            series_uid=uid,
            frame_of_reference_uid=frame_uid,
            series_description="Axial T2",
            file_name="{instance}.dcm",
            first_instance=1 + n * STACK_SHAPE[2],
            **kwargs,
        )
    return uid, volumes


def test_stacks_are_listed_cranial_first_and_read_one_by_one(tmp_path: Path) -> None:
    folder = tmp_path / "axial"
    uid, volumes = write_stacks(folder)
    (info,) = list_dicom_series(folder)
    assert (info.series_uid, info.view, info.n_files, info.n_stacks) == (uid, "axial", 18, 3)
    stacks = list_dicom_stacks(folder)
    assert stacks == info.stacks
    assert [(s.index, s.view, s.n_files) for s in stacks] == [(i, "axial", 6) for i in range(3)]
    # Written in the order stack 1, 2, 0: instances 1-6 are stack 1, 7-12 stack 2, 13-18 stack 0.
    expected = [list(range(13, 19)), list(range(1, 7)), list(range(7, 13))]
    assert [[int(p.stem) for p in s.files] for s in stacks] == expected
    assert [s.centre_ras[2] for s in stacks] == sorted((s.centre_ras[2] for s in stacks), reverse=True)

    for stack, volume in zip(stacks, volumes, strict=True):
        axes_lps = volume.axes[:2] * [-1.0, -1.0, 1.0]
        np.testing.assert_allclose(stack.orientation, axes_lps.ravel(), atol=1e-6)
        np.testing.assert_allclose(stack.centre_ras, volume.world((np.array(STACK_SHAPE) - 1) / 2), atol=1e-3)
        back = read_dicom_series(folder, stack=stack.index)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
        np.testing.assert_allclose(back.array, volume.array, atol=quantum(volume))
        assert (back.meta["stack"], back.meta["n_stacks"], back.meta["n_slices"]) == (stack.index, 3, 6)
        assert back.meta["instance_numbers"] == [int(p.stem) for p in stack.files]
        np.testing.assert_array_equal(read_volume(folder, stack=stack.index).array, back.array)
        np.testing.assert_array_equal(read_dicom_series(folder, uid, stack=stack.index).array, back.array)
        record = SeriesRecord(
            series_id=stack_series_id(uid, stack.index), view="axial", path=str(folder), format="dicom"
        )
        np.testing.assert_array_equal(read_series(record).array, back.array)

    # The numbering does not depend on how the files are given.
    files = sorted(info.files, key=lambda p: -int(p.stem))
    assert [s.files for s in list_dicom_stacks(files)] == [s.files for s in stacks]
    np.testing.assert_array_equal(read_dicom_series(files, stack=2).array, read_dicom_series(folder, stack=2).array)


def test_multi_stack_series_without_stack_names_the_stacks(tmp_path: Path) -> None:
    folder = tmp_path / "axial"
    uid, _ = write_stacks(folder, patient_name="DOE^JANE")
    record = SeriesRecord(series_id=uid, view="axial", path=str(folder), format="dicom")
    for read in (lambda: read_dicom_series(folder), lambda: read_volume(folder), lambda: read_series(record)):
        with pytest.raises(StudyError) as caught:
            read()
        assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY
        message = caught.value.message
        assert "3 stacks" in message and "stack=i" in message and "list_dicom_stacks" in message
        assert "stack 2: 6 slice(s), axial" in message and "DOE" not in message


def test_stack_errors(tmp_path: Path) -> None:
    folder = tmp_path / "axial"
    write_stacks(folder)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, stack=3)
    assert caught.value.code == ErrorCode.NOT_FOUND and "3 stack(s)" in caught.value.message
    for bad in (-1, "1", True, 1.0):
        with pytest.raises(ValueError, match="stack must be an integer"):
            read_dicom_series(folder, stack=bad)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, stack=0, min_slices=7)
    assert caught.value.code == ErrorCode.TOO_FEW_SLICES and "stack 0" in caught.value.message

    # The usual checks apply within a stack: a missing middle slice of stack 1 (instances 1-6).
    (folder / "3.dcm").unlink()
    read_dicom_series(folder, stack=0)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, stack=1)
    assert caught.value.code == ErrorCode.MISSING_SLICES

    # A slice without an orientation belongs to no stack: with ``stack`` the series cannot be split safely.
    _edit(folder / "8.dcm", ImageOrientationPatient=None)
    assert sum(s.n_files for s in list_dicom_stacks(folder)) == 16
    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, stack=0)
    # Named by its number in the series (1-18 less 3.dcm, in natural order), never by its file name.
    assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY and "file 7 of the series" in caught.value.message
    assert "8.dcm" not in caught.value.message

    write_nifti(image_volume(axial_axes()), tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="DICOM series only"):
        read_volume(tmp_path / "x.nii.gz", stack=0)


def test_single_orientation_series_is_stack_zero(tmp_path: Path) -> None:
    volume = image_volume(sagittal_axes())
    write_series(volume, tmp_path / "s")
    (stack,) = list_dicom_stacks(tmp_path / "s")
    assert (stack.index, stack.view, stack.n_files) == (0, "sagittal", SHAPE[2])
    whole, first = read_dicom_series(tmp_path / "s"), read_dicom_series(tmp_path / "s", stack=0)
    np.testing.assert_array_equal(whole.array, first.array)
    assert (whole.meta["stack"], whole.meta["n_stacks"], first.meta["stack"]) == (None, 1, 0)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(tmp_path / "s", stack=1)
    assert caught.value.code == ErrorCode.NOT_FOUND


def test_one_tilted_slice_is_a_second_stack(tmp_path: Path) -> None:
    files = write_series(image_volume(sagittal_axes()), tmp_path / "s")
    _edit(files[1], ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6])
    with pytest.raises(StudyError) as caught:
        read_dicom_series(tmp_path / "s")
    assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY and "2 stacks" in caught.value.message
    assert list_dicom_series(tmp_path / "s")[0].view == "mixed"
    # Orientations closer than STACK_ORIENTATION_TOL are one stack, checked as before (ORIENTATION_TOL).
    _edit(files[1], ImageOrientationPatient=[0, 1, 0, 0, 0, -0.9995])
    assert len(list_dicom_stacks(tmp_path / "s")) == 1
    with pytest.raises(StudyError) as caught:
        read_dicom_series(tmp_path / "s")
    assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY and "mixes orientations" in caught.value.message


def test_stack_series_ids() -> None:
    assert stack_series_id("1.2.840.3", 2) == "1.2.840.3#stack2"
    assert split_stack_series_id("1.2.840.3#stack2") == ("1.2.840.3", 2)
    assert split_stack_series_id("1.2.840.3") == ("1.2.840.3", None)
    assert split_stack_series_id("12#stack") == ("12#stack", None)
    assert split_stack_series_id("12#stack01") == ("12#stack01", None)
    for series_id, stack in (("", 0), ("1.2#stack0", 1), ("1.2", -1), ("1.2", "0")):
        with pytest.raises(ValueError):
            stack_series_id(series_id, stack)


# ---- error paths --------------------------------------------------------------------------------------------------


def _edit(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def _truncate_half(files: list[Path]) -> Path:
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])
    return files[0].parent


def _truncate_pixels(files: list[Path]) -> Path:
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-100])
    return files[0].parent


def _truncate_before_pixels(files: list[Path]) -> Path:
    data = files[2].read_bytes()
    files[2].write_bytes(data[: data.rfind(b"\xe0\x7f\x10\x00")])  # cut at the PixelData tag
    return files[0].parent


def _delete_middle(files: list[Path]) -> Path:
    files[3].unlink()
    return files[0].parent


def _text_file_only(files: list[Path]) -> Path:
    folder = files[0].parent.parent / "text_only"
    folder.mkdir()
    (folder / "image.dcm").write_text("this is not DICOM, just text named .dcm\n")
    return folder


def _text_file_given(files: list[Path]) -> list[Path]:
    path = files[0].parent.parent / "lonely.dcm"
    path.write_text("plain text")
    return [path]


def _tilt_one(files: list[Path]) -> Path:
    _edit(files[1], ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6])
    return files[0].parent


def _respace_one(files: list[Path]) -> Path:
    _edit(files[1], PixelSpacing=[0.5, 0.5])
    return files[0].parent


def _duplicate_position(files: list[Path]) -> Path:
    shutil.copy(files[2], files[0].parent / "copy.dcm")
    _edit(files[0].parent / "copy.dcm", SOPInstanceUID=generate_uid())
    return files[0].parent


def _no_position(files: list[Path]) -> Path:
    _edit(files[1], ImagePositionPatient=None)
    return files[0].parent


def _zero_spacing(files: list[Path]) -> Path:
    for path in files:
        _edit(path, PixelSpacing=[0.0, 0.0])
    return files[0].parent


def _infinite_slope(files: list[Path]) -> Path:
    _edit(files[1], RescaleSlope="1e400")
    return files[0].parent


def _multi_frame(files: list[Path]) -> Path:
    _edit(files[1], NumberOfFrames=2)
    return files[0].parent


def _missing_folder(files: list[Path]) -> Path:
    return files[0].parent / "does_not_exist"


ERROR_CASES = [
    # (name, corrupt the written series and return what to read, read kwargs, expected code)
    ("truncated header (half the bytes)", _truncate_half, {}, ErrorCode.TRUNCATED),
    ("truncated pixel data", _truncate_pixels, {}, ErrorCode.TRUNCATED),
    ("truncated at the pixel data tag", _truncate_before_pixels, {}, ErrorCode.TRUNCATED),
    ("missing middle slice", _delete_middle, {}, ErrorCode.MISSING_SLICES),
    ("text file named .dcm alone in a folder", _text_file_only, {}, ErrorCode.NO_IMAGE),
    ("text file given as a DICOM file", _text_file_given, {}, ErrorCode.NOT_AN_IMAGE),
    ("one slice tilted", _tilt_one, {}, ErrorCode.INCONSISTENT_GEOMETRY),
    ("one slice with another PixelSpacing", _respace_one, {}, ErrorCode.INCONSISTENT_GEOMETRY),
    ("two slices at one position", _duplicate_position, {}, ErrorCode.INCONSISTENT_GEOMETRY),
    ("a slice without ImagePositionPatient", _no_position, {}, ErrorCode.INCONSISTENT_GEOMETRY),
    ("zero PixelSpacing", _zero_spacing, {}, ErrorCode.ABSURD_SPACING),
    ("infinite RescaleSlope", _infinite_slope, {}, ErrorCode.NON_FINITE),
    ("multi-frame file", _multi_frame, {}, ErrorCode.UNSUPPORTED_FORMAT),
    ("too few slices", lambda files: files[0].parent, {"min_slices": 10}, ErrorCode.TOO_FEW_SLICES),
    ("missing folder", _missing_folder, {}, ErrorCode.NOT_FOUND),
]


@pytest.mark.parametrize("name, corrupt, kwargs, code", ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_errors(tmp_path: Path, name: str, corrupt, kwargs: dict, code: ErrorCode) -> None:
    files = write_series(
        image_volume(sagittal_axes()), tmp_path / "series", patient_name="DOE^JANE", patient_id="DOE-0042"
    )
    target = corrupt(files)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(target, **kwargs)
    assert caught.value.code == code, caught.value
    # Never a patient identifier in what is raised.
    assert "DOE" not in str(caught.value) and "DOE" not in caught.value.message


def test_wrong_modality(tmp_path: Path) -> None:
    write_series(image_volume(axial_axes()), tmp_path / "ct", modality="CT", patient_name="DOE^JANE")
    with pytest.raises(StudyError) as caught:
        read_volume(tmp_path / "ct")
    assert caught.value.code == ErrorCode.WRONG_MODALITY
    assert "CT" in caught.value.message and "DOE" not in str(caught.value)


def test_min_slices_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_slices"):
        read_dicom_series(tmp_path, min_slices=0)


def test_no_patient_identifiers_in_meta(tmp_path: Path) -> None:
    files = write_series(
        image_volume(sagittal_axes()),
        tmp_path / "s",
        patient_name="DOE^JANE",
        patient_id="DOE-0042",
        series_description="Sag T2",
    )
    assert str(pydicom.dcmread(files[0]).PatientName) == "DOE^JANE"  # the identifier is in the files ...
    back = read_volume(tmp_path / "s")
    assert "DOE" not in str(back.meta)  # ... and nowhere in what the reader returns
    assert "DOE" not in repr(list_dicom_series(tmp_path / "s"))
    assert back.meta["series_description"] == "Sag T2"
