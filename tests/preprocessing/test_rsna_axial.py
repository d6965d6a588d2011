"""RSNA 2024 axial T2 as ONE DICOM series of five angled stacks (one per disc), from a synthetic phantom, end to end.

The study is written in the competition's exact layout (``train_images/{study}/{series}/{instance}.dcm``, the three
CSV tables); the axial stacks share one SeriesInstanceUID with instance numbers running on across stacks, written
caudal stack first so that stack numbering cannot come from file order. Then: the reader lists and reads each stack,
the adapter gives one record per stack, and preprocessing picks, for every level, the stack planned through it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from scipy.ndimage import map_coordinates

from lss.anatomy import CANAL_LABEL, LEVELS, RSNA_CONDITION, Severity, disc_label_for_level, level_key
from lss.config import PreprocessConfig
from lss.data.adapters import build_manifest, detect_kind
from lss.data.cases import load_case, read_jsonl
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import (
    list_dicom_series,
    list_dicom_stacks,
    read_dicom_series,
    read_series,
    stack_series_id,
    write_dicom_series,
)
from lss.data.manifest import LevelRecord, SeriesRecord, StudyRecord
from lss.data.synth.phantom import SpinePhantom, sample_phantom
from lss.data.synth.render import sample_contrast
from lss.data.synth.views import axial_grid, render_view, sagittal_grid
from lss.data.volume import LPS_TO_RAS, Volume, affine_from_axes
from lss.preprocessing.pipeline import run_preprocessing
from lss.preprocessing.transforms import _axial

STUDY, SAG_ID, AX_ID = "4003253", "702807833", "2448190387"
SEVERITIES = {
    "L1/L2": Severity.NORMAL_MILD,
    "L2/L3": Severity.NORMAL_MILD,
    "L3/L4": Severity.MODERATE,
    "L4/L5": Severity.SEVERE,
    "L5/S1": Severity.NORMAL_MILD,
}
AXIAL_SLICES = 5
CONDITIONS = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
TRAIN_COLUMNS = ["study_id", *(f"{c}_{level_key(lv)}" for c in CONDITIONS for lv in LEVELS)]
COORDINATE_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]


@dataclass
class RsnaStudy:
    root: Path
    phantom: SpinePhantom
    sagittal: Volume
    stacks: dict[str, Volume]  # by level: the axial stack as written
    first_instance: dict[str, int]  # by level: InstanceNumber of the stack's slice 0
    points: dict[str, np.ndarray]  # by level: the dural-sac point (world RAS) the annotation was made from

    @property
    def axial_folder(self) -> Path:
        return self.root / "train_images" / STUDY / AX_ID


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _sac_point(phantom: SpinePhantom, level: str) -> np.ndarray:
    """The level's point inside the dural sac on the disc mid-plane (as ``generate._level_records``)."""
    u, v = phantom.levels[level].sac_centre_uv
    point, lateral, _, _ = phantom.frame_at(w=float(phantom.disc_mid[phantom.disc_index(level)]), v=v)
    return point + u * lateral


def _integers(volume: Volume) -> Volume:
    return Volume(np.clip(np.rint(volume.array), 0, 32767).astype(np.int16), volume.affine, volume.meta)


@pytest.fixture(scope="module")
def rsna_study(tmp_path_factory) -> RsnaStudy:
    root = tmp_path_factory.mktemp("rsna_axial")
    phantom = sample_phantom(np.random.default_rng(11), severities=SEVERITIES)
    rng = np.random.default_rng(12)
    contrast = sample_contrast(rng)
    study_uid, frame_uid = generate_uid(), generate_uid()
    images = root / "train_images" / STUDY

    grid = sagittal_grid(phantom, 0.9, 3.5, (260.0, 200.0), 56.0)
    sagittal = _integers(render_view(phantom, grid, contrast, rng, 1)[0])
    common = {"study_uid": study_uid, "frame_of_reference_uid": frame_uid, "file_name": "{instance}.dcm"}
    write_dicom_series(sagittal, images / SAG_ID, series_number=1, series_description="Sagittal T2/STIR", **common)

    # All five axial stacks in one series: the caudal stack first, instance numbers running on.
    axial_uid = generate_uid()
    stacks, first_instance = {}, {}
    for n, level in enumerate(reversed(LEVELS)):
        grid = axial_grid(phantom, level, 0.9, 4.0, 160.0, AXIAL_SLICES)
        stacks[level] = _integers(render_view(phantom, grid, contrast, rng, 1)[0])
        first_instance[level] = 1 + n * AXIAL_SLICES
        write_dicom_series(
            stacks[level],
            images / AX_ID,
            series_uid=axial_uid,
            series_number=2,
            series_description="Axial T2",
            first_instance=first_instance[level],
            **common,
        )

    # Tables. The canal coordinate of each level: the sagittal pixel nearest the level's dural-sac point.
    row = {column: "Normal/Mild" for column in TRAIN_COLUMNS}
    row["study_id"] = STUDY
    row.update({f"spinal_canal_stenosis_{level_key(lv)}": s.value for lv, s in SEVERITIES.items()})
    _write_csv(root / "train.csv", TRAIN_COLUMNS, [row])
    _write_csv(
        root / "train_series_descriptions.csv",
        ["study_id", "series_id", "series_description"],
        [
            {"study_id": STUDY, "series_id": SAG_ID, "series_description": "Sagittal T2/STIR"},
            {"study_id": STUDY, "series_id": AX_ID, "series_description": "Axial T2"},
        ],
    )
    points, coordinates = {}, []
    for level in LEVELS:
        points[level] = _sac_point(phantom, level)
        i, j, k = np.rint(sagittal.index(points[level])).astype(int)
        assert 0 <= k < sagittal.shape[2] and 0 <= i < sagittal.shape[0] and 0 <= j < sagittal.shape[1]
        coordinates.append([STUDY, SAG_ID, k + 1, RSNA_CONDITION, level, float(i), float(j)])
    coordinates.append([STUDY, AX_ID, 3, "Left Subarticular Stenosis", "L4/L5", 80.0, 90.0])  # another condition
    _write_csv(
        root / "train_label_coordinates.csv",
        COORDINATE_COLUMNS,
        [dict(zip(COORDINATE_COLUMNS, values, strict=True)) for values in coordinates],
    )
    return RsnaStudy(root, phantom, sagittal, stacks, first_instance, points)


def _lps_orientation(volume: Volume) -> np.ndarray:
    """ImageOrientationPatient of a written volume: its i and j axes in LPS."""
    axes = volume.axes @ LPS_TO_RAS[:3, :3]
    return np.concatenate([axes[0], axes[1]])


def test_multi_stack_series_is_listed_and_read_stack_by_stack(rsna_study: RsnaStudy) -> None:
    folder = rsna_study.axial_folder
    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder)
    assert caught.value.code == ErrorCode.INCONSISTENT_GEOMETRY
    assert "5 stacks" in caught.value.message and "stack=" in caught.value.message

    (info,) = list_dicom_series(folder)
    assert (info.view, info.n_files, info.n_stacks) == ("axial", 25, 5)
    stacks = list_dicom_stacks(folder)
    assert [s.index for s in stacks] == list(range(5))
    for stack, level in zip(stacks, LEVELS, strict=True):  # stack 0 is the most cranial: L1/L2
        written = rsna_study.stacks[level]
        first = rsna_study.first_instance[level]
        assert (stack.view, stack.n_files) == ("axial", AXIAL_SLICES)
        assert [int(p.stem) for p in stack.files] == list(range(first, first + AXIAL_SLICES))
        np.testing.assert_allclose(stack.orientation, _lps_orientation(written), atol=1e-5)
        np.testing.assert_allclose(stack.centre_ras, written.world((np.array(written.shape) - 1) / 2), atol=1e-3)

        volume = read_dicom_series(folder, stack=stack.index)
        assert volume.shape == written.shape
        np.testing.assert_allclose(volume.affine, written.affine, atol=1e-3)
        np.testing.assert_array_equal(volume.array, written.array)
        assert volume.meta["instance_numbers"] == list(range(first, first + AXIAL_SLICES))
        assert (volume.meta["stack"], volume.meta["n_stacks"], volume.meta["view"]) == (stack.index, 5, "axial")
        record = SeriesRecord(
            series_id=stack_series_id(AX_ID, stack.index), view="axial", path=str(folder), format="dicom"
        )
        np.testing.assert_array_equal(read_series(record).array, written.array)

    with pytest.raises(StudyError) as caught:
        read_dicom_series(folder, stack=5)
    assert caught.value.code == ErrorCode.NOT_FOUND and "5 stack(s)" in caught.value.message
    with pytest.raises(ValueError, match="stack"):
        read_dicom_series(folder, stack=-1)


def test_rsna_adapter_gives_one_axial_record_per_stack(rsna_study: RsnaStudy) -> None:
    assert detect_kind(rsna_study.root) == "rsna2024"
    (record,), errors = build_manifest(rsna_study.root)
    assert errors == []
    assert record.sagittal().series_id == SAG_ID
    assert [(s.series_id, s.level, s.description) for s in record.axials()] == [
        (f"{AX_ID}#stack{i}", None, "Axial T2") for i in range(5)
    ]
    assert {Path(s.path) for s in record.axials()} == {rsna_study.axial_folder.resolve()}
    for level in LEVELS:
        assert record.level(level).severity == SEVERITIES[level]
        # The annotated pixel is within half a voxel of the sac point.
        assert np.linalg.norm(np.subtract(record.level(level).point_ras, rsna_study.points[level])) < 2.0


def test_preprocessing_picks_the_stack_planned_through_each_level(rsna_study: RsnaStudy, tmp_path: Path) -> None:
    config = PreprocessConfig()
    out = tmp_path / "pre"
    summary = run_preprocessing(rsna_study.root, out, config, engine="serial")
    assert (summary.ok, summary.failed) == (1, 0), summary.errors
    (row,) = read_jsonl(out / "preprocessed.jsonl")
    assert row["status"] == "ok" and row["axial_present"] == [True] * len(LEVELS)
    case = load_case(out / row["path"])
    assert case["severity"].tolist() == [SEVERITIES[lv].index for lv in LEVELS]
    record_levels = {lv["level"]: lv for lv in row["record"]["levels"]}
    centre = config.axial_slices // 2

    for li, level in enumerate(LEVELS):
        point = np.asarray(record_levels[level]["point_ras"])
        # Independently of the pipeline: the stack whose centre plane is nearest the level's point.
        distances = []
        for other in LEVELS:
            stack = rsna_study.stacks[other]
            middle = stack.world((np.array(stack.shape) - 1) / 2)
            distances.append(abs(float(np.dot(point - middle, stack.slice_normal()))))
        assert LEVELS[int(np.argmin(distances))] == level
        assert row["info"]["axial"][level] == {
            "series": f"{AX_ID}#stack{li}",  # stack order is cranial first, the order of LEVELS
            "centre_slice": AXIAL_SLICES // 2,  # the stack's slice on the disc mid-plane
        }

        # The preprocessed centre slice is the written stack's data at the crop's voxels ...
        image = case["axial_image"][li, centre].astype(np.float64)  # (H, W)
        affine = case["axial_affines"][li]
        h, w = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
        voxels = np.stack([h, w, np.full_like(h, centre)], axis=-1).astype(float)
        world = voxels @ affine[:3, :3].T + affine[:3, 3]
        stack = rsna_study.stacks[level]
        index = stack.index(world)
        inside = np.all((index > -0.01) & (index < np.array(stack.shape) - 0.99), axis=-1)
        assert inside.mean() > 0.9, level
        direct = map_coordinates(stack.array.astype(np.float64), index[inside].T, order=1)
        assert np.corrcoef(direct, image[inside])[0, 1] > 0.95, level
        # ... and it cuts the level's own disc and the dural sac (the phantom's labels at those points).
        _, labels = rsna_study.phantom.labels_world(world)
        discs = labels[(labels > 200) & (labels < 300)]
        assert np.bincount(discs).argmax() == disc_label_for_level(level), level
        assert (labels == CANAL_LABEL).sum() * np.prod(config.axial_spacing_mm) > 20.0, level


def test_overlapping_stacks_pick_the_stack_planned_through_the_point(tmp_path: Path) -> None:
    """Stacks of neighbouring discs may overlap: the level's point lies 0.2 mm from the edge slice of the cranial
    stack but 1.5 mm from the middle slice of its own stack; the own stack (no repeated edge slice) is chosen."""
    point = np.array([3.0, 20.0, 40.0])
    shape, spacing = (40, 40, 5), np.array([1.0, 1.0, 4.0])

    def stack(tilt_degrees: float, slice_index: int, offset_mm: float, value: float) -> Volume:
        t = np.deg2rad(tilt_degrees)
        axes = np.array([[-1.0, 0.0, 0.0], [0.0, -np.cos(t), -np.sin(t)], [0.0, -np.sin(t), np.cos(t)]])
        # Slice ``slice_index`` passes ``offset_mm`` from the point along the normal, centred on it in-plane.
        centre = point - offset_mm * axes[2]
        origin = centre - ((np.array(shape[:2]) - 1) / 2 * spacing[:2]) @ axes[:2] - slice_index * spacing[2] * axes[2]
        array = np.full(shape, value, dtype=np.float32) + np.arange(shape[0], dtype=np.float32)[:, None, None]
        return Volume(array, affine_from_axes(origin, axes, spacing))

    folder = tmp_path / "axial"
    uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    own = stack(0.0, 2, 1.5, 100.0)  # the point 1.5 mm above its middle slice
    cranial = stack(15.0, 0, -0.2, 1000.0)  # the point 0.2 mm below its most caudal slice
    for n, volume in enumerate((own, cranial)):
        write_dicom_series(
            volume, folder, study_uid=study_uid, series_uid=uid, frame_of_reference_uid=frame_uid,
            file_name="{instance}.dcm", first_instance=1 + 5 * n,
        )
    stacks = list_dicom_stacks(folder)
    assert [s.n_files for s in stacks] == [5, 5] and stacks[0].centre_ras[2] > stacks[1].centre_ras[2]
    np.testing.assert_array_equal(read_dicom_series(folder, stack=0).array, cranial.array)

    record = StudyRecord(
        study_id="overlap",
        source="dicom",
        series=[
            SeriesRecord(series_id=stack_series_id(uid, i), view="axial", path=str(folder), format="dicom")
            for i in range(2)
        ],
        levels=[LevelRecord(level="L4/L5", point_ras=tuple(point))],
    )
    _, _, _, present, info = _axial(record, PreprocessConfig(), {})
    assert present.tolist() == [lv == "L4/L5" for lv in LEVELS]
    assert info == {"L4/L5": {"series": f"{uid}#stack1", "centre_slice": 2}}
