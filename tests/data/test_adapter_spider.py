"""SPIDER adapter on a tiny dataset written in SPIDER's exact layout (images/, masks/, radiological_gradings.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_io import image_volume, label_volume, sagittal_axes

from lss.anatomy import LEVELS
from lss.data.adapters import build_manifest, detect_kind
from lss.data.adapters.spider import discover
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import read_volume, write_mha
from lss.data.manifest import read_manifest, write_manifest

# The header line of SPIDER's radiological_gradings.csv (shared/data/spider_metadata).
HEADER = (
    "Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,"
    "Disc herniation,Disc narrowing,Disc bulging,Pfirrman grade"
)
# The real table, copied with its attribution (tests/data/fixtures/spider/SOURCE.md, CC BY 4.0).
REAL_GRADINGS = Path(__file__).parent / "fixtures" / "spider" / "radiological_gradings.csv"

ROWS = [
    # Patient, IVD, Modic, UP, LOW, Spondylolisthesis, Herniation, Narrowing, Bulging, Pfirrmann
    "1,1,2,1,0,0,1,1,1,4",  # L5/S1
    "1,2,0,0,0,0,0,1,1,3",  # L4/L5
    "1,3,0,0,1,0,0,0,0,2",
    "1,4,0,0,0,0,0,0,0,1",
    "1,5,1,0,0,1,0,0,1,5",  # L1/L2
    "1,6,0,0,0,0,0,0,0,1",  # T12/L1: not graded here
    "1,7,0,0,0,0,0,0,0,1",  # above: not a level of ours
    "2,0,0,0,0,0,0,0,0,2",  # IVD label 0 occurs in the real table: skipped
    "2,2,3,1,1,0,0,1,0,4",  # L4/L5
    "2,1,0,0,0,0,0,0,1,3",  # L5/S1 (rows need not be ordered)
    "9,1,0,0,0,0,0,0,0,3",  # a patient without images
]


def make_spider(root: Path, rows: list[str] = ROWS, header: str = HEADER) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, seed in (("1_t1", 0), ("1_t2", 1), ("2_t2_SPACE", 2), ("10_t2", 3)):
        write_mha(image_volume(sagittal_axes(), seed=seed, spacing=(0.6, 0.6, 3.3)), root / "images" / f"{name}.mha")
    for name in ("1_t2", "2_t2_SPACE"):
        write_mha(label_volume(sagittal_axes(), spacing=(0.6, 0.6, 3.3)), root / "masks" / f"{name}.mha")
    (root / "radiological_gradings.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_header_is_spiders() -> None:
    assert REAL_GRADINGS.read_text().splitlines()[0].strip() == HEADER


def test_records(tmp_path: Path) -> None:
    root = make_spider(tmp_path / "spider")
    records, errors = discover(root)
    assert errors == []
    assert [r.study_id for r in records] == ["spider_1_t1", "spider_1_t2", "spider_2_t2_SPACE", "spider_10_t2"]
    by_id = {r.study_id: r for r in records}
    for record in records:
        assert record.source == "spider"
        (series,) = record.series
        assert series.view == "sagittal" and series.format == "mha"
        assert Path(series.path).is_absolute() and Path(series.path).exists()
        assert record.sagittal() is series
        assert all(level.severity is None for level in record.levels)
    assert by_id["spider_1_t1"].series[0].mask_path is None
    assert by_id["spider_1_t2"].series[0].mask_path == str((root / "masks" / "1_t2.mha").resolve())
    assert by_id["spider_1_t2"].series[0].description == "Sagittal T2"
    assert by_id["spider_2_t2_SPACE"].series[0].description == "Sagittal T2 SPACE"

    # Patient 1: the five graded levels, in anatomical order; T12/L1 and above are not kept.
    levels = by_id["spider_1_t2"].levels
    assert [lv.level for lv in levels] == list(LEVELS)
    assert by_id["spider_1_t1"].levels == levels  # the gradings are per patient
    l5s1 = by_id["spider_1_t2"].level("L5/S1")
    assert l5s1.findings == {
        "pfirrmann": 4,
        "modic": 2,
        "upper_endplate": 1,
        "lower_endplate": 0,
        "spondylolisthesis": 0,
        "disc_herniation": 1,
        "disc_narrowing": 1,
        "disc_bulging": 1,
    }
    assert by_id["spider_1_t2"].level("L1/L2").findings["spondylolisthesis"] == 1
    assert all(isinstance(v, int) for lv in levels for v in lv.findings.values())
    # Patient 2: only L4/L5 and L5/S1 are graded; IVD label 0 is skipped.
    assert [lv.level for lv in by_id["spider_2_t2_SPACE"].levels] == ["L4/L5", "L5/S1"]
    assert by_id["spider_2_t2_SPACE"].level("L4/L5").findings["modic"] == 3
    # Patient 10 has no gradings.
    assert by_id["spider_10_t2"].levels == []

    # The paths read, and the mask holds SPIDER labels on the image grid.
    image = read_volume(by_id["spider_1_t2"].series[0].path)
    mask = read_volume(by_id["spider_1_t2"].series[0].mask_path)
    assert image.meta["view"] == "sagittal"
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-6)
    assert set(np.unique(mask.array)) <= {0, 1, 2, 3, 100, 201, 202, 206}


def test_dispatch_and_manifest_round_trip(tmp_path: Path) -> None:
    root = make_spider(tmp_path / "spider")
    assert detect_kind(root) == "spider"
    result = build_manifest(root)
    assert result == discover(root)
    write_manifest(result.records, tmp_path / "out" / "manifest.jsonl")
    again = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r.model_dump() for r in again] == [r.model_dump() for r in result.records]


def test_without_gradings_or_masks(tmp_path: Path) -> None:
    root = make_spider(tmp_path / "spider")
    (root / "radiological_gradings.csv").unlink()
    for mask in (root / "masks").iterdir():
        mask.unlink()
    records, errors = discover(root)
    assert errors == [] and len(records) == 4
    assert all(r.levels == [] and r.series[0].mask_path is None for r in records)


def test_bad_file_name_and_bad_value_give_error_entries(tmp_path: Path) -> None:
    root = make_spider(tmp_path / "spider", rows=[*ROWS, "2,3,x,0,0,0,0,0,0,2", "2,2,0,0,0,0,0,0,0,1"])
    write_mha(image_volume(sagittal_axes()), root / "images" / "scout.mha")
    records, errors = discover(root)
    assert len(records) == 4
    codes = sorted((e["study_id"], e["code"]) for e in errors)
    assert codes == [("scout", "unsupported_format"), ("spider_2", "bad_labels"), ("spider_2", "bad_labels")]
    assert all(set(e) == {"study_id", "code", "message", "path"} for e in errors)
    # The row with a bad value is left out, the duplicate keeps the first row.
    record = next(r for r in records if r.study_id == "spider_2_t2_SPACE")
    assert [lv.level for lv in record.levels] == ["L4/L5", "L5/S1"]
    assert record.level("L4/L5").findings["modic"] == 3


def test_dataset_level_errors(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as caught:
        discover(tmp_path / "nowhere")
    assert caught.value.code == ErrorCode.NOT_FOUND
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError) as caught:
        discover(tmp_path / "empty")
    assert caught.value.code == ErrorCode.NOT_FOUND
    root = make_spider(tmp_path / "spider", header="patient_id,disc,pfirrmann")
    with pytest.raises(StudyError) as caught:
        discover(root)
    assert caught.value.code == ErrorCode.BAD_LABELS


def test_real_gradings_table(tmp_path: Path) -> None:
    """The adapter reads SPIDER's real gradings table: every graded level of a patient, with its Pfirrmann grade."""
    import csv

    root = tmp_path / "spider"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    write_mha(image_volume(sagittal_axes(), seed=0, spacing=(0.6, 0.6, 3.3)), root / "images" / "1_t2.mha")
    (root / "radiological_gradings.csv").write_bytes(REAL_GRADINGS.read_bytes())
    records, errors = discover(root)
    assert errors == [] and len(records) == 1
    rows = [r for r in csv.DictReader(REAL_GRADINGS.open()) if r["Patient"] == "1"]
    expected = {}
    for row in rows:
        ivd = int(row["IVD label"])
        if 1 <= ivd <= 5:  # L5/S1 .. L1/L2
            expected[("L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2")[ivd - 1]] = int(row["Pfirrman grade"])
    got = {lv.level: lv.findings["pfirrmann"] for lv in records[0].levels}
    assert got == expected and len(got) == 5
