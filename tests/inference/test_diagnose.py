"""``lss diagnose`` end to end on real files: synthetic DICOM folders and zips, the real NIfTI scan, and every way an
input can be bad. The model is small and untrained: these tests check the pipeline, not the grades."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REAL_SCAN, copy_dicom_study
from lss.anatomy import LEVELS
from lss.cli import main
from lss.config import PreprocessConfig
from lss.data.errors import ErrorCode, StudyError
from lss.inference import Diagnoser, match_axial_levels, open_study, unpack_zip
from lss.preprocessing.transforms import preprocess_study

PATIENT_NAME, PATIENT_ID = "DOE^JANE^Q", "MRN-8675309"


@pytest.fixture(scope="module")
def dicom_study(synth_dicom, tmp_path_factory) -> Path:
    """One synthetic DICOM study (images only, no masks) whose headers carry a patient name and id."""
    _, records = synth_dicom
    study = copy_dicom_study(records, tmp_path_factory.mktemp("dicom_study") / "study_a",
                             {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID})
    assert len(list(study.rglob("*"))) > 20
    return study


@pytest.fixture(scope="module")
def diagnoser(tiny_model_file) -> Diagnoser:
    return Diagnoser(tiny_model_file)


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    return archive


def test_a_dicom_folder_gives_a_report_findings_json_and_images(diagnoser, dicom_study, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    diagnosis = diagnoser.diagnose_path(dicom_study, tmp_path / "out")
    text = (tmp_path / "out" / "report.txt").read_text()
    assert text.startswith("TECHNIQUE:") and all(f"{level}:" in text for level in LEVELS)
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert document["report"]["text"] + "\n" == text
    assert [f["level"] for f in document["findings"]["levels"]] == list(LEVELS)
    for finding, present in zip(document["findings"]["levels"], diagnosis.prediction.axial_present, strict=True):
        assert finding["lower_confidence"] == (not present)
        # A graded level states one of its probabilities' grades; any other states none, with its reasons.
        if finding["status"] == "graded":
            assert finding["severity"] in finding["probabilities"]
        else:
            assert finding["severity"] is None
            assert finding["assessable"] or finding["not_assessable_reasons"]
        for image in finding["evidence"]:
            assert (tmp_path / "out" / "images" / document["images"][image]).is_file()
    with Image.open(diagnosis.images["montage"]) as montage:
        assert montage.format == "PNG"
    # No patient identifier in anything written or logged.
    written = "".join(p.read_text(errors="ignore") for p in (tmp_path / "out").glob("*.*"))
    for secret in (PATIENT_NAME, PATIENT_ID, "DOE", "8675309"):
        assert secret not in written and secret not in caplog.text


def test_a_zip_gives_the_same_diagnosis(diagnoser, dicom_study, tmp_path):
    archive = _zip(dicom_study, tmp_path / "upload.zip")
    from_zip = diagnoser.diagnose_path(archive)
    from_folder = diagnoser.diagnose_path(dicom_study)
    assert [f.severity for f in from_zip.findings.levels] == [f.severity for f in from_folder.findings.levels]
    np.testing.assert_allclose(from_zip.prediction.severity_probs, from_folder.prediction.severity_probs, atol=1e-6)


def test_the_real_sagittal_only_scan_is_lower_confidence_not_an_error(tmp_path, tiny_model_file, capsys):
    assert main(["diagnose", str(REAL_SCAN), "--checkpoint", str(tiny_model_file), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    document = json.loads((tmp_path / "report.json").read_text())
    assert not document["findings"]["has_axial"]
    levels = document["findings"]["levels"]
    assert all(f["lower_confidence"] for f in levels)
    # The untrained model reads no spine here: every level says why it is not assessable, and grades nothing.
    # Where a level is assessable, the report says it is graded on the sagittal view only.
    if any(f["assessable"] for f in levels):
        assert "lower confidence" in out and "no axial images" in out.lower()
    else:
        assert "not assessable" in out and all(f["severity"] is None and f["rule_severity"] is None for f in levels)


def test_axial_series_without_levels_are_matched_by_disc_positions(synth_nifti):
    """The sagittal pass's disc positions pick each level's axial slices from unlabelled axial series."""
    root, records = synth_nifti
    truth = records[0]
    study = open_study(truth.resolve(truth.sagittal().path).parent)  # generic adapter: axial series have no level
    assert all(a.level is None for a in study.axials()) and len(study.axials()) == len(LEVELS)
    unmatched = preprocess_study(study, PreprocessConfig())
    assert not unmatched.axial_present.any()

    # the disc centres a sagittal pass would find: here the synthetic truth
    matched, levels = match_axial_levels(study, {lv.level: lv.point_ras for lv in truth.levels})
    assert levels == list(LEVELS) and study.levels == []  # a copy: the input record is untouched
    case = preprocess_study(matched, PreprocessConfig())
    assert case.axial_present.all()
    assert [case.info["axial"][lv]["series"] for lv in LEVELS] == [f"axial_t2_{lv.lower().replace('/', '_')}"
                                                                  for lv in LEVELS]
    # The chain's second pass reads the axial series only, reusing the first pass's sagittal arrays: the same case.
    again = preprocess_study(matched, PreprocessConfig(), sagittal_from=unmatched)
    assert again.info == case.info and again.label_groups == case.label_groups
    for name in ("sagittal_image", "sagittal_affine", "axial_image", "axial_affines", "axial_present", "severity"):
        np.testing.assert_array_equal(getattr(again, name), getattr(case, name), err_msg=name)
    assert again.sagittal_image is unmatched.sagittal_image  # not read again


def test_masks_and_labels_next_to_the_images_are_not_used(diagnoser, synth_nifti):
    root, records = synth_nifti
    with_masks = open_study(records[0].resolve(records[0].sagittal().path).parent)
    assert with_masks.sagittal().mask_path is not None and records[0].levels
    a = diagnoser.diagnose_record(with_masks)
    b = diagnoser.diagnose_record(records[0])
    assert records[0].levels and records[0].sagittal().mask_path is not None  # the caller's record is untouched
    np.testing.assert_allclose(a.prediction.sagittal_image, b.prediction.sagittal_image)
    assert "sagittal_labels" not in a.info.get("preprocessing", {})


# ---------------------------------------------------------------------------------------------------------- bad input
def test_bad_zips_are_refused_with_a_reason(tmp_path, dicom_study):
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(StudyError) as error:
        unpack_zip(not_zip, tmp_path / "a")
    assert error.value.code is ErrorCode.BAD_ARCHIVE

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(StudyError, match="outside"):
        unpack_zip(slip, tmp_path / "b")
    assert not (tmp_path / "escape.txt").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (3 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(StudyError, match="limit"):
        unpack_zip(bomb, tmp_path / "c", max_unpacked_bytes=1 << 20)


def test_unusable_inputs_are_coded_errors(tmp_path, dicom_study, synth_nifti):
    with pytest.raises(StudyError) as error:
        open_study(tmp_path / "missing")
    assert error.value.code is ErrorCode.NOT_FOUND
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(StudyError) as error:
        open_study(tmp_path / "empty")
    assert error.value.code is ErrorCode.NO_IMAGE
    root, _ = synth_nifti
    with pytest.raises(StudyError) as error:
        open_study(root / "studies")
    assert error.value.code is ErrorCode.MULTIPLE_STUDIES
    axial_only = tmp_path / "axial_only"
    axial_only.mkdir()
    source = next((root / "studies").glob("*/axial_t2_l4_l5.nii.gz"))
    (axial_only / source.name).write_bytes(source.read_bytes())
    with pytest.raises(StudyError) as error:
        open_study(axial_only)
    assert error.value.code is ErrorCode.MISSING_SAGITTAL


def test_the_cli_reports_errors_with_exit_code_1(tmp_path, tiny_model_file, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    assert main(["diagnose", str(bad), "--checkpoint", str(tiny_model_file), "--out", str(tmp_path / "o")]) == 1
    assert "not a zip archive" in capsys.readouterr().err
    assert main(["diagnose", str(REAL_SCAN), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
