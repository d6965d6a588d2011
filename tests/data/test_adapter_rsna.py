"""RSNA 2024 adapter on tiny studies written in the competition's exact layout and CSV columns."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers_io import axial_axes, image_volume, sagittal_axes
from pydicom.uid import generate_uid

from lss.anatomy import LEVELS, Severity, level_key
from lss.data.adapters import build_manifest, detect_kind
from lss.data.adapters.rsna import discover
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import read_dicom_series, read_series, write_dicom_series

CONDITIONS = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
TRAIN_COLUMNS = ["study_id", *(f"{c}_{level_key(lv)}" for c in CONDITIONS for lv in LEVELS)]
DESCRIPTION_COLUMNS = ["study_id", "series_id", "series_description"]
COORDINATE_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]

# (study_id, series_id, description, volume); listed T1 first so the adapter has to reorder.
SERIES = [
    ("1001", "11", "Sagittal T1", lambda: image_volume(sagittal_axes(), seed=1, origin=(30.0, 10.0, 60.0))),
    ("1001", "12", "Axial T2", lambda: image_volume(axial_axes(15.0), seed=2)),
    ("1001", "13", "Sagittal T2/STIR", lambda: image_volume(sagittal_axes(), seed=3, spacing=(0.7, 0.75, 3.5))),
    ("1002", "21", "Sagittal T2/STIR", lambda: image_volume(sagittal_axes(), seed=4)),
    ("1002", "22", "Axial T2", lambda: image_volume(axial_axes(-5.0), seed=5)),
    ("1003", "31", "Axial T2", lambda: image_volume(axial_axes(), seed=6)),  # no sagittal series
]
SEVERITIES_1001 = {"L1/L2": "Normal/Mild", "L2/L3": "Moderate", "L3/L4": "Severe", "L4/L5": "", "L5/S1": "Normal/Mild"}
COORDINATES = [
    # study, series, instance, condition, level, x, y
    ("1001", "13", 3, "Spinal Canal Stenosis", "L4/L5", 7.5, 5.25),
    ("1001", "11", 2, "Spinal Canal Stenosis", "L3/L4", 1.0, 1.0),  # on T1: the T2/STIR point below wins
    ("1001", "13", 5, "Spinal Canal Stenosis", "L3/L4", 9.0, 4.0),
    ("1001", "13", 4, "Left Neural Foraminal Narrowing", "L5/S1", 2.0, 2.0),  # another condition: ignored
    ("1002", "21", 2, "Spinal Canal Stenosis", "L5/S1", 3.0, 8.5),
]


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def make_rsna(root: Path) -> dict[tuple[str, str], object]:
    """Writes the three studies and CSVs; returns the written volumes by (study, series)."""
    volumes = {}
    study_uids = {study: generate_uid() for study, *_ in SERIES}
    for number, (study, series, description, make) in enumerate(SERIES, start=1):
        volume = make()
        write_dicom_series(
            volume,
            root / "train_images" / study / series,
            study_uid=study_uids[study],
            series_description=description,
            series_number=number,
            file_name="{instance}.dcm",
        )
        volumes[(study, series)] = volume
    _write_csv(
        root / "train_series_descriptions.csv",
        DESCRIPTION_COLUMNS,
        [{"study_id": s, "series_id": r, "series_description": d} for s, r, d, _ in SERIES],
    )
    row = {column: "Normal/Mild" for column in TRAIN_COLUMNS}  # other conditions filled, as in the real table
    row["study_id"] = "1001"
    row.update({f"spinal_canal_stenosis_{level_key(lv)}": value for lv, value in SEVERITIES_1001.items()})
    other = dict(row, study_id="1003")
    _write_csv(root / "train.csv", TRAIN_COLUMNS, [row, other])  # 1002 is not in train.csv
    _write_csv(
        root / "train_label_coordinates.csv",
        COORDINATE_COLUMNS,
        [dict(zip(COORDINATE_COLUMNS, values, strict=True)) for values in COORDINATES],
    )
    return volumes


@pytest.fixture
def rsna_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "rsna"
    return root, make_rsna(root)


def test_records(rsna_root) -> None:
    root, volumes = rsna_root
    records, errors = discover(root)
    assert [r.study_id for r in records] == ["rsna_1001", "rsna_1002"]
    assert all(r.source == "rsna2024" for r in records)
    first, second = records

    # Series: Sagittal T2/STIR first, then Sagittal T1, then Axial T2; folders are absolute.
    assert [(s.series_id, s.view, s.description) for s in first.series] == [
        ("13", "sagittal", "Sagittal T2/STIR"),
        ("11", "sagittal", "Sagittal T1"),
        ("12", "axial", "Axial T2"),
    ]
    assert first.sagittal().series_id == "13"
    assert [s.series_id for s in first.axials()] == ["12"]
    for series in first.series:
        assert series.format == "dicom" and series.level is None
        assert Path(series.path) == (root / "train_images" / "1001" / series.series_id).resolve()
        assert read_series(series).meta["view"] == series.view

    # Severities from train.csv; an empty cell and a study missing from train.csv give None.
    assert [lv.level for lv in first.levels] == list(LEVELS)
    expected = {lv: (Severity(value) if value else None) for lv, value in SEVERITIES_1001.items()}
    assert {lv.level: lv.severity for lv in first.levels} == expected
    assert [(lv.level, lv.severity) for lv in second.levels] == [("L5/S1", None)]

    # Points: the world position of the annotated pixel, computed here from the series' Volume affine.
    t2 = read_dicom_series(first.sagittal().path)
    np.testing.assert_allclose(t2.affine, volumes[("1001", "13")].affine, atol=1e-4)
    for level, instance, x, y in (("L4/L5", 3, 7.5, 5.25), ("L3/L4", 5, 9.0, 4.0)):
        k = t2.meta["instance_numbers"].index(instance)
        np.testing.assert_allclose(first.level(level).point_ras, t2.world([x, y, k]), atol=1e-4)
        # ... and, independently of the reader, from the written volume (instance n is slice n - 1).
        np.testing.assert_allclose(
            first.level(level).point_ras, volumes[("1001", "13")].world([x, y, instance - 1]), atol=1e-4
        )
    assert first.level("L1/L2").point_ras is None
    assert first.level("L5/S1").point_ras is None  # only a foraminal coordinate there
    sag = read_dicom_series(second.sagittal().path)
    np.testing.assert_allclose(second.level("L5/S1").point_ras, sag.world([3.0, 8.5, 1]), atol=1e-4)

    # The study without a sagittal series is an error entry, not a record.
    assert errors == [
        {
            "study_id": "rsna_1003",
            "code": ErrorCode.MISSING_SAGITTAL.value,
            "message": errors[0]["message"],
            "path": str((root / "train_images" / "1003").resolve()),
        }
    ]
    assert "sagittal" in errors[0]["message"]


def test_dispatch(rsna_root) -> None:
    root, _ = rsna_root
    assert detect_kind(root) == "rsna2024"
    assert build_manifest(root, kind="rsna2024") == build_manifest(root)


def test_missing_folder_and_instance_give_error_entries(rsna_root) -> None:
    root, _ = rsna_root
    for path in (root / "train_images" / "1001" / "12").iterdir():
        path.unlink()
    (root / "train_images" / "1001" / "12").rmdir()
    (root / "train_images" / "1001" / "13" / "3.dcm").unlink()
    records, errors = discover(root)
    first = records[0]
    assert [s.series_id for s in first.series] == ["13", "11"]
    assert first.level("L4/L5").point_ras is None and first.level("L3/L4").point_ras is not None
    codes = sorted((e["study_id"], e["code"]) for e in errors)
    assert codes == [("rsna_1001", "not_found"), ("rsna_1001", "not_found"), ("rsna_1003", "missing_sagittal")]


def test_bad_severity_is_an_error_entry(rsna_root) -> None:
    root, _ = rsna_root
    text = (root / "train.csv").read_text().replace("Severe", "Terrible", 1)
    (root / "train.csv").write_text(text)
    records, errors = discover(root)
    assert records[0].level("L3/L4").severity is None
    assert ("rsna_1001", "bad_labels") in {(e["study_id"], e["code"]) for e in errors}


def test_test_split_without_labels(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    write_dicom_series(
        image_volume(sagittal_axes()),
        root / "test_images" / "2001" / "7",
        study_uid=generate_uid(),
        file_name="{instance}.dcm",
    )
    _write_csv(
        root / "test_series_descriptions.csv",
        DESCRIPTION_COLUMNS,
        [{"study_id": "2001", "series_id": "7", "series_description": "Sagittal T2/STIR"}],
    )
    assert detect_kind(root) == "rsna2024"
    records, errors = discover(root)
    assert errors == []
    assert [(r.study_id, r.levels, r.sagittal().series_id) for r in records] == [("rsna_2001", [], "7")]


def test_images_without_descriptions_use_headers(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    uid = generate_uid()
    write_dicom_series(
        image_volume(axial_axes(10.0)), root / "train_images" / "5" / "1", study_uid=uid, series_description="AX T2"
    )
    write_dicom_series(
        image_volume(sagittal_axes()), root / "train_images" / "5" / "2", study_uid=uid, series_description="SAG T2"
    )
    records, errors = discover(root)
    assert errors == []
    assert [(s.series_id, s.view, s.description) for s in records[0].series] == [
        ("2", "sagittal", "SAG T2"),
        ("1", "axial", "AX T2"),
    ]


def test_dataset_level_errors(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as caught:
        discover(tmp_path / "nowhere")
    assert caught.value.code == ErrorCode.NOT_FOUND
    root = tmp_path / "rsna"
    root.mkdir()
    (root / "train_series_descriptions.csv").write_text("study,series\n1,2\n")
    with pytest.raises(StudyError) as caught:
        discover(root)
    assert caught.value.code == ErrorCode.BAD_LABELS


def test_axial_series_of_several_stacks_gives_one_record_per_stack(tmp_path: Path) -> None:
    """RSNA axial T2 series usually hold one angled stack per disc in ONE series: one record per stack."""
    root = tmp_path / "rsna"
    uid, frame = generate_uid(), generate_uid()
    images = root / "train_images" / "3001"
    write_dicom_series(
        image_volume(sagittal_axes()), images / "1", study_uid=uid, series_description="Sagittal T2/STIR",
        file_name="{instance}.dcm",
    )
    # Axial "2": three stacks written caudal first (stack 0 is the most cranial, origin z 120).
    stacks = [image_volume(axial_axes(tilt), seed=n, origin=(0.0, -20.0, z)) for n, (tilt, z) in
              enumerate(((-8.0, 120.0), (4.0, 80.0), (18.0, 40.0)))]
    axial_uid = generate_uid()
    for n, volume in enumerate(reversed(stacks)):
        write_dicom_series(
            volume, images / "2", study_uid=uid, series_uid=axial_uid, frame_of_reference_uid=frame,
            series_description="Axial T2", file_name="{instance}.dcm", first_instance=1 + 6 * n,
        )
    # Axial "3": one axial stack and one coronal stack (a stray localiser) in one series.
    coronal_uid = generate_uid()
    for n, axes in enumerate((axial_axes(), np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))):
        write_dicom_series(
            image_volume(axes, seed=9 + n), images / "3", study_uid=uid, series_uid=coronal_uid,
            file_name="{instance}.dcm", first_instance=1 + 6 * n,
        )
    # Axial "4": a folder holding no DICOM image.
    (images / "4").mkdir(parents=True)
    (images / "4" / "1.dcm").write_text("not DICOM")
    _write_csv(
        root / "train_series_descriptions.csv",
        DESCRIPTION_COLUMNS,
        [
            {"study_id": "3001", "series_id": series, "series_description": description}
            for series, description in (
                ("2", "Axial T2"), ("1", "Sagittal T2/STIR"), ("3", "Axial T2"), ("4", "Axial T2")
            )
        ],
    )
    (record,), errors = discover(root)
    assert [(s.series_id, s.view, s.level, s.description) for s in record.series] == [
        ("1", "sagittal", None, "Sagittal T2/STIR"),
        ("2#stack0", "axial", None, "Axial T2"),
        ("2#stack1", "axial", None, "Axial T2"),
        ("2#stack2", "axial", None, "Axial T2"),
        ("3#stack0", "axial", None, "Axial T2"),
    ]
    assert {Path(s.path) for s in record.axials()[:3]} == {(images / "2").resolve()}
    for series, volume in zip(record.axials(), stacks, strict=False):
        back = read_series(series)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
        assert back.meta["n_slices"] == volume.shape[2]
    assert read_series(record.axials()[3]).meta["view"] == "axial"
    assert sorted((e["code"], Path(e["path"]).name) for e in errors) == [
        ("no_image", "4"),
        ("unsupported_format", "3"),
    ]
    assert "coronal" in next(e["message"] for e in errors if e["code"] == "unsupported_format")
