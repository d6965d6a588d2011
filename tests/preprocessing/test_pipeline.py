"""Ray Data preprocessing on a real local Ray: shards, checksums, a no-op re-run, listed failures, the real scan,
and log lines that never name a study."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import REAL_SCAN, REPO_ROOT
from lss.anatomy import CANAL_LABEL, LEVELS
from lss.config import PreprocessConfig
from lss.data.cases import load_case, read_jsonl
from lss.data.privacy import anonymous_id
from lss.preprocessing.pipeline import plan_preprocessing, run_plans, run_preprocessing

CONFIG = PreprocessConfig()


def _rows(out):
    return read_jsonl(out / "preprocessed.jsonl"), read_jsonl(out / "errors.jsonl")


def test_ray_preprocessing_writes_checked_shards_and_reruns_as_a_noop(ray_session, synth_dicom, tmp_path):
    root, records = synth_dicom
    out = tmp_path / "pre"
    summary = run_preprocessing(root, out, CONFIG)
    assert (summary.ok, summary.failed, summary.processed) == (len(records), 0, len(records))
    ok, errors = _rows(out)
    assert errors == [] and [r["study_id"] for r in ok] == sorted(r.study_id for r in records)
    by_id = {r.study_id: r for r in records}
    for row in ok:
        case = load_case(out / row["path"])
        assert case["sagittal_image"].shape == CONFIG.sagittal_shape
        assert case["axial_image"].shape == (len(LEVELS), CONFIG.axial_slices, *CONFIG.axial_shape)
        assert 0.0 <= float(case["sagittal_image"].min()) and float(case["sagittal_image"].max()) <= 1.0
        assert case["axial_present"].all()
        assert (case["sagittal_labels"] == CANAL_LABEL).any()
        record = by_id[row["study_id"]]
        assert case["severity"].tolist() == [record.level(lv).severity.index for lv in LEVELS]
        # The geometry survives resampling: the canal area on each level's centre slice is the recorded one.
        pixel = float(np.prod(CONFIG.axial_spacing_mm))
        centre = CONFIG.axial_slices // 2
        for li, level in enumerate(LEVELS):
            area = (case["axial_labels"][li, centre] == CANAL_LABEL).sum() * pixel
            assert area == pytest.approx(record.level(level).area_mm2, rel=0.15, abs=10.0), level
        assert row["record"]["study_id"] == row["study_id"]
    # The serial engine (no Ray) writes byte-identical shards.
    run_preprocessing(root, tmp_path / "serial", CONFIG, engine="serial")
    assert [r["sha256"] for r in ok] == [r["sha256"] for r in _rows(tmp_path / "serial")[0]]

    before = (out / "preprocessed.jsonl").read_bytes()
    again = run_preprocessing(root, out, CONFIG)
    assert (again.processed, again.reused, again.ok) == (0, len(records), len(records))
    assert (out / "preprocessed.jsonl").read_bytes() == before

    # A changed input is processed again, and only that study (which studies to redo is decided before the engine
    # runs; the serial engine saves a second actor-pool start here).
    first_mask = records[0].resolve(records[0].sagittal().mask_path)
    first_mask.touch()
    third = run_preprocessing(root, out, CONFIG, engine="serial")
    assert (third.processed, third.reused) == (1, len(records) - 1)


def _copy_series(src, dst):
    shutil.copytree(src, dst)
    return sorted(dst.glob("*.dcm"))


def _nifti(path, shape, zooms, fill=None):
    data = np.random.default_rng(0).random(shape).astype(np.float32) * 100
    if fill is not None:
        data[0, 0, 0] = fill
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)


def test_corrupt_inputs_are_listed_and_the_run_goes_on(ray_session, synth_dicom, tmp_path):
    root, records = synth_dicom
    sagittal = records[0].resolve(records[0].sagittal().path)
    data = tmp_path / "data"
    _copy_series(sagittal, data / "good")
    files = _copy_series(sagittal, data / "truncated")
    files[3].write_bytes(files[3].read_bytes()[: files[3].stat().st_size // 2])
    for path in _copy_series(sagittal, data / "wrong_modality"):
        ds = pydicom.dcmread(path)
        ds.Modality = "CT"
        ds.save_as(path)
    files = _copy_series(sagittal, data / "missing_slices")
    files[len(files) // 2].unlink()
    (data / "not_an_image").mkdir()
    (data / "not_an_image" / "notes.dcm").write_text("this is not a DICOM file")
    _nifti(data / "nan" / "sag.nii.gz", (6, 64, 64), (4.0, 0.8, 0.8), fill=np.nan)
    _nifti(data / "absurd_spacing" / "sag.nii.gz", (6, 64, 64), (40.0, 0.8, 0.8))
    _nifti(data / "too_few_slices" / "sag.nii.gz", (2, 64, 64), (4.0, 0.8, 0.8))

    # A second dataset in the same Ray Data run (one actor pool), with a study id the first one also has.
    other = tmp_path / "other"
    _copy_series(sagittal, other / "good")
    out = tmp_path / "pre"
    summary, other_summary = run_plans([plan_preprocessing(data, out, CONFIG),
                                        plan_preprocessing(other, tmp_path / "pre_other", CONFIG)], CONFIG)
    assert (other_summary.ok, other_summary.failed, other_summary.processed) == (1, 0, 1)
    assert [r["study_id"] for r in _rows(tmp_path / "pre_other")[0]] == ["good"]
    assert _rows(tmp_path / "pre_other")[1] == []
    ok, errors = _rows(out)
    assert [r["study_id"] for r in ok] == ["good"]
    codes: dict[str, set[str]] = {}
    for row in errors:
        codes.setdefault(row["study_id"], set()).add(row["code"])
    expected = {
        "truncated": "truncated",
        "wrong_modality": "wrong_modality",
        "missing_slices": "missing_slices",
        "not_an_image": "no_image",
        "nan": "non_finite",
        "absurd_spacing": "absurd_spacing",
        "too_few_slices": "too_few_slices",
    }
    assert set(codes) == set(expected)
    for study_id, code in expected.items():
        assert code in codes[study_id], (study_id, codes[study_id])
    assert summary.ok == 1 and summary.failed == len(errors)
    for row in errors:
        assert row["message"] and "PHANTOM" not in json.dumps(row)  # no patient names in error rows
    # Failures are remembered: the same input is not retried until it changes.
    again = run_preprocessing(data, out, CONFIG)
    assert again.processed == 0 and again.failed == len(errors)


def test_log_lines_name_studies_by_a_hash_only(synth_dicom, tmp_path, caplog):
    # Folder names of clinical exports can be patient names: the log says "study-<hash>", the files keep the ids.
    root, records = synth_dicom
    data = tmp_path / "data"
    _copy_series(records[0].resolve(records[0].sagittal().path), data / "DOE_JANE")
    _nifti(data / "SMITH_JOHN" / "sag.nii.gz", (6, 64, 64), (4.0, 0.8, 0.8), fill=np.nan)
    with caplog.at_level(logging.INFO, logger="lss.preprocessing.pipeline"):
        summary = run_preprocessing(data, tmp_path / "pre", CONFIG, engine="serial")
    assert (summary.ok, summary.failed) == (1, 1)
    assert "DOE_JANE" not in caplog.text and "SMITH_JOHN" not in caplog.text
    assert anonymous_id("DOE_JANE") in caplog.text and anonymous_id("SMITH_JOHN") in caplog.text
    ok, errors = _rows(tmp_path / "pre")
    assert [r["study_id"] for r in ok] == ["DOE_JANE"] and [r["study_id"] for r in errors] == ["SMITH_JOHN"]
    assert anonymous_id("DOE_JANE") == "study-" + hashlib.sha256(b"DOE_JANE").hexdigest()[:10]


def test_missing_sagittal_is_an_error(synth_dicom, tmp_path):
    root, records = synth_dicom
    axial = records[0].resolve(records[0].axials()[0].path)
    data = tmp_path / "data"
    shutil.copytree(axial, data / "axial_only")
    summary = run_preprocessing(data, tmp_path / "pre", CONFIG, engine="serial")
    assert summary.ok == 0 and [e["code"] for e in summary.errors] == ["missing_sagittal"]


def test_real_scan_goes_through_reader_and_preprocessing(tmp_path):
    # The serial engine runs the same reader and transforms as a Ray Data worker (the shards are byte-identical).
    summary = run_preprocessing(REAL_SCAN, tmp_path / "pre", CONFIG, engine="serial")
    assert (summary.ok, summary.failed) == (1, 0)
    row = read_jsonl(tmp_path / "pre" / "preprocessed.jsonl")[0]
    case = load_case(tmp_path / "pre" / row["path"])
    assert case["sagittal_image"].shape == CONFIG.sagittal_shape
    assert "sagittal_labels" not in case and not case["axial_present"].any()
    assert (case["severity"] == -1).all() and np.isnan(case["area_mm2"]).all()
    # The crop holds the spine: the image is not mostly padding.
    assert (case["sagittal_image"] > 0.05).mean() > 0.5


@pytest.mark.ray
def test_preprocess_job_runs_as_a_script(synth_nifti, tmp_path):
    root, records = synth_nifti
    out = tmp_path / "job"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / "preprocess.py"), "--in", str(root), "--out", str(out),
         "--set", "ray.num_cpus=2", "--set", "ray.object_store_mb=200"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(records)} ok, 0 failed" in result.stdout
    assert len(read_jsonl(out / "preprocessed.jsonl")) == len(records)


def test_unknown_engine_and_missing_input(tmp_path):
    from lss.data.errors import StudyError

    with pytest.raises(ValueError, match="engine"):
        run_preprocessing(tmp_path, tmp_path / "o", CONFIG, engine="spark")
    with pytest.raises(StudyError, match="not_found|does not exist"):
        run_preprocessing(tmp_path / "nope", tmp_path / "o", CONFIG)


def test_plans_run_only_with_the_settings_they_were_made_with(synth_dicom, tmp_path):
    # A shard's content and fingerprint come from the settings: a run with others would mislabel every shard.
    root, _ = synth_dicom
    plan = plan_preprocessing(root, tmp_path / "pre", CONFIG)
    other = CONFIG.model_copy(update={"axial_slices": CONFIG.axial_slices + 2})
    with pytest.raises(ValueError, match="other preprocessing settings"):
        run_plans([plan], other, engine="serial")
    assert not (tmp_path / "pre" / "preprocessed.jsonl").exists()  # refused before anything was written
    # The actor pool's size is not a shard setting.
    pool = CONFIG.model_copy(update={"workers": CONFIG.workers + 1})
    assert run_plans([], pool) == [] and run_plans([plan], pool, engine="serial")[0].failed == 0
