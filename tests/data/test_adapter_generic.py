"""Generic adapter (folders of DICOM / NIfTI / MHA), the native manifest adapter, and the dispatcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_io import axial_axes, image_volume, label_volume, sagittal_axes, write_series
from pydicom.uid import generate_uid

from lss.data.adapters import KINDS, build_manifest, detect_kind, error_entry, generic, native
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import read_series, read_volume, write_mha, write_nifti
from lss.data.manifest import LevelRecord, SeriesRecord, StudyRecord, write_manifest
from lss.data.volume import Volume, affine_from_axes

REAL_SCAN = Path(__file__).resolve().parents[2] / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"


def coronal_volume() -> Volume:
    axes = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # k along y: coronal slices
    return Volume(np.ones((8, 8, 4), dtype=np.float32), affine_from_axes(np.zeros(3), axes, np.array([1.0, 1.0, 3.0])))


def make_studies(root: Path) -> Path:
    """A folder of studies, one per subfolder, each exercising one case."""
    # A: DICOM, sagittal T2 + a 3-slice sagittal localiser + axial + coronal, in nested series folders.
    uid = generate_uid()
    write_series(
        image_volume(sagittal_axes(), shape=(16, 12, 3)),
        root / "A" / "s1",
        study_uid=uid,
        series_description="Localizer",
        series_number=1,
    )
    write_series(
        image_volume(sagittal_axes()),
        root / "A" / "s2",
        study_uid=uid,
        series_description="Sag T2 TSE",
        series_number=2,
    )
    write_series(
        image_volume(axial_axes(15.0)), root / "A" / "s3", study_uid=uid, series_description="Ax T2", series_number=3
    )
    write_series(coronal_volume(), root / "A" / "s4", study_uid=uid, series_description="Cor STIR", series_number=4)
    # B: NIfTI sagittal with its mask, an axial MHA, a text file.
    write_nifti(image_volume(sagittal_axes(), spacing=(0.6, 0.6, 3.3)), root / "B" / "t2_sag.nii.gz")
    write_nifti(label_volume(sagittal_axes(), spacing=(0.6, 0.6, 3.3)), root / "B" / "t2_sag_seg.nii.gz")
    write_mha(image_volume(axial_axes(10.0)), root / "B" / "axial.mha")
    (root / "B" / "README.txt").write_text("notes")
    # C: only an axial series.
    write_series(image_volume(axial_axes()), root / "C", series_description="Ax T2")
    # D: a truncated DICOM file.
    files = write_series(image_volume(sagittal_axes()), root / "D", patient_name="DOE^JANE")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])
    # E: a CT series only.
    write_series(image_volume(sagittal_axes()), root / "E", modality="CT", series_description="CT sag")
    # F: a text file named .dcm.
    (root / "F").mkdir()
    (root / "F" / "x.dcm").write_text("text")
    # G: an unreadable NIfTI next to a good DICOM series.
    write_series(image_volume(sagittal_axes()), root / "G" / "dicom", series_description="sag")
    (root / "G" / "broken.nii.gz").write_text("not gzip")
    # No images at all: not a study.
    (root / "empty").mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("x")
    return root


def test_folder_of_studies(tmp_path: Path) -> None:
    root = make_studies(tmp_path / "studies")
    assert detect_kind(root) == "generic"
    records, errors = generic.discover(root)
    by_id = {r.study_id: r for r in records}
    assert sorted(by_id) == ["A", "B", "G"]

    a = by_id["A"]
    assert a.source == "dicom"
    assert [(s.view, s.description) for s in a.series] == [
        ("sagittal", "Sag T2 TSE"),
        ("sagittal", "Localizer"),
        ("axial", "Ax T2"),
    ]
    assert Path(a.sagittal().path) == (root / "A" / "s2").resolve()
    assert all(s.level is None for s in a.axials())
    for series in a.series:
        assert read_series(series).meta["series_uid"] == series.series_id

    b = by_id["B"]
    assert b.source == "nifti"
    assert [(s.series_id, s.view, s.format) for s in b.series] == [
        ("t2_sag", "sagittal", "nifti"),
        ("axial", "axial", "mha"),
    ]
    assert b.sagittal().mask_path == str((root / "B" / "t2_sag_seg.nii.gz").resolve())
    assert read_volume(b.sagittal().mask_path).array.dtype.kind == "i"

    assert [s.view for s in by_id["G"].series] == ["sagittal"]

    codes = sorted((e["study_id"], e["code"]) for e in errors)
    assert codes == [
        ("C", "missing_sagittal"),
        ("D", "truncated"),
        ("E", "missing_sagittal"),
        ("E", "wrong_modality"),
        ("F", "no_image"),
        ("G", "not_an_image"),
    ]
    assert all(set(e) == {"study_id", "code", "message", "path"} for e in errors)
    assert not any("DOE" in str(e) for e in errors)


def test_root_is_one_dicom_series(tmp_path: Path) -> None:
    volume = image_volume(sagittal_axes())
    write_series(volume, tmp_path / "scan", series_description="Sag T2")
    records, errors = generic.discover(tmp_path / "scan")
    assert errors == []
    (record,) = records
    assert record.study_id == "scan"
    np.testing.assert_allclose(read_series(record.sagittal()).affine, volume.affine, atol=1e-4)


def test_series_folders_of_one_study_are_merged(tmp_path: Path) -> None:
    uid = generate_uid()
    write_series(
        image_volume(axial_axes(5.0)), tmp_path / "exam" / "series_1", study_uid=uid, series_description="Ax T2"
    )
    write_series(
        image_volume(sagittal_axes()), tmp_path / "exam" / "series_2", study_uid=uid, series_description="Sag T2"
    )
    records, errors = build_manifest(tmp_path / "exam", kind="generic")
    assert errors == []
    assert [(r.study_id, [s.view for s in r.series]) for r in records] == [("exam", ["sagittal", "axial"])]


def test_a_mask_beside_a_dicom_series_folder_is_its_mask_not_an_image(tmp_path: Path) -> None:
    """The layout ``lss synth --format dicom`` writes: ``sagittal_t2/`` (DICOM) + ``sagittal_t2_mask.nii.gz``. Read as
    an image series of its own, a label map was graded as if it were an axial image."""
    uid = generate_uid()
    study = tmp_path / "study"
    write_series(image_volume(sagittal_axes()), study / "sagittal_t2", study_uid=uid, series_description="Sag T2")
    write_series(image_volume(axial_axes(5.0)), study / "axial_t2_l4_l5", study_uid=uid, series_description="Ax T2")
    write_nifti(label_volume(sagittal_axes()), study / "sagittal_t2_mask.nii.gz")
    write_nifti(label_volume(axial_axes(5.0)), study / "axial_t2_l4_l5_mask.nii.gz")
    (record,), errors = generic.discover(study)
    assert errors == [] and [s.format for s in record.series] == ["dicom", "dicom"]
    assert [Path(s.mask_path).name for s in record.series] == ["sagittal_t2_mask.nii.gz", "axial_t2_l4_l5_mask.nii.gz"]


def test_flat_folder_with_two_series(tmp_path: Path) -> None:
    uid = generate_uid()
    write_series(image_volume(axial_axes(5.0)), tmp_path / "flat", study_uid=uid, file_name="ax{index}.dcm")
    write_series(image_volume(sagittal_axes()), tmp_path / "flat", study_uid=uid, file_name="sag{index}.dcm")
    (record,), errors = generic.discover(tmp_path / "flat")
    assert errors == [] and [s.view for s in record.series] == ["sagittal", "axial"]
    assert record.series[0].path == record.series[1].path  # one folder, told apart by series_id (the UID)
    assert read_series(record.series[0]).meta["view"] == "sagittal"
    assert read_series(record.series[1]).meta["view"] == "axial"


def test_root_is_the_real_nifti_scan() -> None:
    if not REAL_SCAN.exists():
        pytest.skip(f"{REAL_SCAN} is not in this checkout")
    records, errors = build_manifest(REAL_SCAN)
    assert errors == []
    (record,) = records
    assert (record.study_id, record.source) == ("t2_lumbar", "nifti")
    assert (record.sagittal().view, record.sagittal().format) == ("sagittal", "nifti")


def test_single_axial_file_is_missing_sagittal(tmp_path: Path) -> None:
    path = write_mha(image_volume(axial_axes()), tmp_path / "ax.mha")
    records, errors = generic.discover(path)
    assert records == []
    assert [(e["study_id"], e["code"]) for e in errors] == [("ax", "missing_sagittal")]


def test_generic_dataset_level_errors(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as caught:
        generic.discover(tmp_path / "nowhere")
    assert caught.value.code == ErrorCode.NOT_FOUND
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "a.txt").write_text("x")
    with pytest.raises(StudyError) as caught:
        generic.discover(tmp_path / "nothing")
    assert caught.value.code == ErrorCode.NO_IMAGE


# ---- native --------------------------------------------------------------------------------------------------------


def make_native(root: Path) -> Path:
    write_nifti(image_volume(sagittal_axes()), root / "s1" / "sag.nii.gz")
    write_nifti(label_volume(sagittal_axes()), root / "s1" / "sag_mask.nii.gz")
    write_nifti(image_volume(axial_axes()), root / "s2" / "sag.nii.gz")
    records = [
        StudyRecord(
            study_id="s1",
            source="synthetic",
            series=[
                SeriesRecord(
                    series_id="sag",
                    view="sagittal",
                    path="s1/sag.nii.gz",
                    format="nifti",
                    mask_path="s1/sag_mask.nii.gz",
                ),
                SeriesRecord(series_id="ax", view="axial", path="s1/ax_missing.nii.gz", format="nifti", level="L4/L5"),
            ],
            levels=[LevelRecord(level="L4/L5", severity="Severe", area_mm2=60.0)],
            reports={"plain": "Severe stenosis at L4/L5."},
        ),
        StudyRecord(
            study_id="s2",
            source="synthetic",
            series=[
                SeriesRecord(
                    series_id="sag", view="sagittal", path="s2/sag.nii.gz", format="nifti", mask_path="s2/none.nii.gz"
                )
            ],
        ),
        StudyRecord(
            study_id="s3",
            source="synthetic",
            series=[SeriesRecord(series_id="sag", view="sagittal", path="s3/gone.nii.gz", format="nifti")],
        ),
    ]
    write_manifest(records, root / "manifest.jsonl")
    return root


def test_native(tmp_path: Path) -> None:
    root = make_native(tmp_path / "synth")
    assert detect_kind(root) == "native"
    assert detect_kind(root / "manifest.jsonl") == "native"
    records, errors = build_manifest(root)
    assert [r.study_id for r in records] == ["s1", "s2"]
    s1, s2 = records
    assert s1.sagittal().path == str((root / "s1" / "sag.nii.gz").resolve())
    assert s1.sagittal().mask_path == str((root / "s1" / "sag_mask.nii.gz").resolve())
    assert s1.axials() == []  # its file is missing
    assert s1.level("L4/L5").severity.value == "Severe" and s1.reports == {"plain": "Severe stenosis at L4/L5."}
    assert s2.sagittal().mask_path is None
    assert sorted((e["study_id"], e["code"]) for e in errors) == [
        ("s1", "not_found"),
        ("s2", "not_found"),
        ("s3", "missing_sagittal"),
        ("s3", "not_found"),
    ]
    assert build_manifest(root / "manifest.jsonl") == (records, errors)


def test_native_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as caught:
        native.discover(tmp_path)
    assert caught.value.code == ErrorCode.NOT_FOUND


# ---- dispatcher ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, kind",
    [
        (["manifest.jsonl"], "native"),
        (["images/1_t2.mha", "masks/1_t2.mha"], "spider"),
        (["images/1_t2.mha", "radiological_gradings.csv"], "spider"),
        (["images/1_t2.mha"], "generic"),
        (["train_series_descriptions.csv"], "rsna2024"),
        (["train_images/1/2/3.dcm"], "rsna2024"),
        (["test_series_descriptions.csv"], "rsna2024"),
        (["a/b.nii.gz"], "generic"),
    ],
)
def test_detect_kind(tmp_path: Path, files: list[str], kind: str) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert detect_kind(tmp_path) == kind


def test_build_manifest_rejects_unknown_kind(tmp_path: Path) -> None:
    assert KINDS == ("card", "native", "spider", "rsna2024", "generic")
    with pytest.raises(ValueError, match="'kaggle'"):
        build_manifest(tmp_path, kind="kaggle")
    with pytest.raises(StudyError) as caught:
        build_manifest(tmp_path / "nowhere")
    assert caught.value.code == ErrorCode.NOT_FOUND


def test_error_entry() -> None:
    error = StudyError(ErrorCode.TRUNCATED, "file 3.dcm ends early.", "/data/3.dcm")
    assert error_entry("s1", error) == {
        "study_id": "s1",
        "code": "truncated",
        "message": "file 3.dcm ends early.",
        "path": "/data/3.dcm",
    }
    assert error_entry("s2", "missing_sagittal", "no sagittal", Path("/x")) == {
        "study_id": "s2",
        "code": "missing_sagittal",
        "message": "no sagittal",
        "path": "/x",
    }
    with pytest.raises(ValueError, match="message"):
        error_entry("s3", ErrorCode.NO_IMAGE)
    with pytest.raises(ValueError):
        error_entry("s3", "no_such_code", "text")


def test_axial_series_of_several_stacks_gives_one_record_per_stack(tmp_path: Path) -> None:
    uid, frame = generate_uid(), generate_uid()
    exam = tmp_path / "exam"
    write_series(image_volume(sagittal_axes()), exam / "sag", study_uid=uid, series_description="Sag T2")
    stacks = [
        image_volume(axial_axes(tilt), seed=n, origin=(0.0, -20.0, z))
        for n, (tilt, z) in enumerate(((-8.0, 120.0), (4.0, 80.0), (18.0, 40.0)))
    ]
    axial_uid = generate_uid()
    for n, volume in enumerate(reversed(stacks)):  # caudal stack first: numbering follows position, not files
        write_series(
            volume, exam / "ax", study_uid=uid, series_uid=axial_uid, frame_of_reference_uid=frame,
            series_description="Ax T2", file_name="{instance}.dcm", first_instance=1 + 6 * n,
        )
    # A 3-plane localiser (mixed views) in one series is still not listed.
    loc_uid = generate_uid()
    for n, axes in enumerate((sagittal_axes(), axial_axes(), coronal_volume().axes)):
        write_series(
            image_volume(axes, shape=(16, 12, 1), seed=20 + n), exam / "loc", study_uid=uid, series_uid=loc_uid,
            series_description="3-plane loc", file_name="{instance}.dcm", first_instance=1 + n,
        )
    (record,), errors = generic.discover(exam)
    assert errors == []
    assert [(s.series_id, s.view, s.level) for s in record.series] == [
        (record.series[0].series_id, "sagittal", None),
        *((f"{axial_uid}#stack{i}", "axial", None) for i in range(3)),
    ]
    for series, volume in zip(record.axials(), stacks, strict=True):
        assert Path(series.path) == (exam / "ax").resolve()
        back = read_series(series)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
        assert (back.meta["series_uid"], back.meta["n_slices"]) == (axial_uid, volume.shape[2])
