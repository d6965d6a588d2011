"""``lss diagnose DIR --out OUT`` on a folder of real study files: three synthetic studies (a NIfTI folder, a zip, and
one whose sagittal file is broken) under folder names that could be patient names. The model is small and
untrained: these tests check the batch (every study tried, the failure recorded, the CSVs, the logs), not the grades.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import FAST_SYNTH
from lss.anatomy import LEVELS, RSNA_CLASS_BALANCE
from lss.cli import main
from lss.data.errors import ErrorCode
from lss.data.privacy import anonymous_id
from lss.inference.batch import (
    SUBMISSION_COLUMNS,
    fallback_probabilities,
    find_studies,
    submission_probabilities,
)

# Folder names as a clinical export may write them: they must reach the CSVs, never the logs.
GOOD, ZIPPED, BROKEN = "DOE^JANE 1970-01-01", "Roe, Richard", "SMITH^JOHN broken"
LEVEL_KEYS = ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]


def _images_of(study_dir: Path, target: Path) -> Path:
    """A synthetic study's image files only (no masks, reports or truth), as a user's study folder holds them."""
    target.mkdir(parents=True)
    for path in sorted(study_dir.glob("*.nii.gz")):
        if not path.name.endswith("_mask.nii.gz"):
            shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """DIR with three studies written by the project's generator: a folder, a zip and a broken folder."""
    from lss.config import SynthConfig
    from lss.data.synth.generate import generate_dataset

    synth = tmp_path_factory.mktemp("batch_synth")
    records = generate_dataset(SynthConfig(cases=3, seed=300, format="nifti", **FAST_SYNTH), synth)
    folders = [synth / "studies" / r.study_id for r in records]
    root = tmp_path_factory.mktemp("batch_in") / "incoming"
    _images_of(folders[0], root / GOOD)
    zipped = _images_of(folders[1], tmp_path_factory.mktemp("zip_src") / ZIPPED)
    with zipfile.ZipFile(root / f"{ZIPPED}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(zipped.iterdir()):
            zf.write(path, Path(ZIPPED) / path.name)
    broken = _images_of(folders[2], root / BROKEN)
    (broken / "sagittal_t2.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI file")
    (root / "notes.txt").write_text("not a study")
    return root


@pytest.fixture(scope="module")
def batch(studies, tiny_model_file, tmp_path_factory):
    """One ``lss diagnose DIR`` run, with everything logged at DEBUG captured."""
    out = tmp_path_factory.mktemp("batch_out")
    handler = _Capture()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        code = main(["diagnose", str(studies), "--checkpoint", str(tiny_model_file), "--out", str(out)])
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    return code, out, "\n".join(handler.lines)


class _Capture(logging.Handler):
    """Every log record's formatted text (caplog is function-scoped; this run is shared by the module's tests)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {self.format(record)}")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_study_is_found_and_the_zip_counts_as_one(studies):
    found = find_studies(studies)
    assert [s.study_id for s in found] == sorted([GOOD, ZIPPED, BROKEN])
    assert {s.study_id: s.path.name for s in found}[ZIPPED] == f"{ZIPPED}.zip"
    # A folder that is itself one study (image files directly inside) stays one study; so does a file.
    assert [(s.study_id, s.path) for s in find_studies(studies / GOOD)] == [(GOOD, studies / GOOD)]
    sagittal = studies / GOOD / "sagittal_t2.nii.gz"
    assert [s.study_id for s in find_studies(sagittal)] == ["sagittal_t2"]


def test_the_broken_study_is_recorded_and_the_others_are_diagnosed(batch):
    code, out, _ = batch
    assert code == 0  # some studies were diagnosed; the failure is in the summary, not an exit
    rows = {row["study"]: row for row in _csv(out / "summary.csv")}
    assert set(rows) == {GOOD, ZIPPED, BROKEN}
    assert list(_csv(out / "summary.csv")[0]) == ["study", "folder", "status", "error_code", "error_message",
                                                  *LEVEL_KEYS, "review_flags", "seconds"]
    failed = rows[BROKEN]
    assert failed["status"] == "failed" and failed["error_code"] in {c.value for c in ErrorCode}
    assert failed["error_message"] and all(failed[key] == "" for key in LEVEL_KEYS)
    for sid in (GOOD, ZIPPED):
        row = rows[sid]
        assert row["status"] == "ok" and row["error_code"] == "" and float(row["seconds"]) > 0
        assert "/" not in row["folder"] and " " not in row["folder"] and "^" not in row["folder"]
        document = json.loads((out / row["folder"] / "report.json").read_text())
        assert (out / row["folder"] / "report.txt").read_text().startswith("TECHNIQUE:")
        findings = {f["level"]: f for f in document["findings"]["levels"]}
        for level, key in zip(LEVELS, LEVEL_KEYS, strict=True):
            assert row[key] == (findings[level]["severity"] or findings[level]["status"])
        assert int(row["review_flags"]) == sum(bool(f["review"]) for f in findings.values())
    assert not (out / rows[BROKEN]["folder"] / "report.json").exists()


def test_the_submission_has_every_level_of_every_study_in_the_rsna_format(batch):
    code, out, _ = batch
    text = (out / "submission.csv").read_text()
    assert text.splitlines()[0] == "row_id,normal_mild,moderate,severe"
    rows = {row["row_id"]: row for row in _csv(out / "submission.csv")}
    assert len(rows) == 3 * len(LEVELS)
    summary = {row["study"]: row for row in _csv(out / "summary.csv")}
    for sid in (GOOD, ZIPPED, BROKEN):
        findings = {}
        if summary[sid]["status"] == "ok":
            document = json.loads((out / summary[sid]["folder"] / "report.json").read_text())
            findings = {f["level"]: f for f in document["findings"]["levels"]}
        for level, key in zip(LEVELS, LEVEL_KEYS, strict=True):
            row = rows[f"{sid}_spinal_canal_stenosis_{key}"]
            values = [float(row[c]) for c in SUBMISSION_COLUMNS[1:]]
            assert sum(values) == pytest.approx(1.0, abs=1e-5)
            finding = findings.get(level)
            if finding is None or not finding["assessable"]:  # failed study or not assessable: the RSNA prior
                assert values == pytest.approx(fallback_probabilities(level), abs=1e-6)
                assert values == pytest.approx(RSNA_CLASS_BALANCE[level], abs=2e-3)
            else:  # graded or withheld: the model's probabilities
                assert values == pytest.approx([finding["probabilities"][s] for s in ("Normal/Mild", "Moderate",
                                                                                      "Severe")], abs=1e-5)


def test_no_raw_study_id_is_logged(batch):
    _, _, logged = batch
    assert anonymous_id(BROKEN) in logged and "failed [" in logged  # the failure is logged, by its hash
    for sid in (GOOD, ZIPPED, BROKEN):
        for secret in (sid, sid.split()[0], sid.split(",")[0]):
            assert secret not in logged, secret


def test_fallback_probabilities_are_the_prior_or_uniform():
    assert submission_probabilities(None)["L4/L5"] == pytest.approx(RSNA_CLASS_BALANCE["L4/L5"], abs=2e-3)
    assert sum(fallback_probabilities("L4/L5")) == pytest.approx(1.0)
    assert submission_probabilities(None, "uniform")["L1/L2"] == pytest.approx((1 / 3,) * 3)
    with pytest.raises(ValueError, match="fallback must be one of"):
        fallback_probabilities("L1/L2", "flat")
