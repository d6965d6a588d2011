"""``lss diagnose DIR --out OUT``: every study of a folder, one after another, with a summary and an RSNA 2024-style
submission file.

    DIR/                                  OUT/
      <study a>/  (DICOM or NIfTI)          <study a>/report.txt, report.json, images/   (as ``lss diagnose``)
      <study b>.zip                         <study b>/...
      <study c>/  (unreadable)              summary.csv      one row per study: status, error, grade per level
                                            submission.csv   row_id,normal_mild,moderate,severe

What a study is comes from the generic adapter (``lss.data.adapters.generic.discover``), as for one study: a folder
that is itself one study (DICOM series, or image files directly inside it) stays one study; otherwise each subfolder
holding images is a study, and so is each ``.zip`` beside them (``find_studies``). Each study goes through
``Diagnoser.diagnose_path``, the code path of ``lss diagnose STUDY``. A study that fails is recorded with its error
code and message and the next one runs; nothing is raised.

Log lines name a study by ``lss.data.privacy.anonymous_id`` only (folder names of clinical exports can be patient
names), and a failure is logged by its code, not its message (messages can quote file names). The CSV files are the
user's own output next to the data: they hold the study ids.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from lss.anatomy import LEVELS, RSNA_CLASS_BALANCE, SEVERITIES, level_key, rsna_column
from lss.data.adapters.generic import discover
from lss.data.errors import ErrorCode, StudyError
from lss.data.privacy import anonymous_id
from lss.reporting.findings import StudyFindings

__all__ = ["StudyInput", "StudyOutcome", "BatchSummary", "find_studies", "diagnose_folder",
           "submission_probabilities", "fallback_probabilities", "SUBMISSION_COLUMNS", "SUMMARY_NAME",
           "SUBMISSION_NAME", "FALLBACKS"]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
SUBMISSION_NAME = "submission.csv"
# The RSNA 2024 submission header; the probability columns follow SEVERITIES (Normal/Mild, Moderate, Severe).
SUBMISSION_COLUMNS: tuple[str, ...] = ("row_id", "normal_mild", "moderate", "severe")
FALLBACKS: tuple[str, ...] = ("prior", "uniform")
INTERNAL_ERROR = "internal_error"  # the error code of a failure that is not a StudyError

Fallback = Literal["prior", "uniform"]


@dataclass(frozen=True)
class StudyInput:
    """One study of a folder: its id (a folder name or a zip's name without suffix) and where it is."""

    study_id: str
    path: Path


@dataclass
class StudyOutcome:
    """What became of one study.

    Attributes:
        study_id: the study's id (as ``StudyInput``).
        folder: its output folder's name under the batch's ``out_dir``.
        status: "ok" or "failed".
        error_code: a ``lss.data.errors.ErrorCode`` value, or "internal_error" ("" when ok).
        error_message: the error in words ("" when ok).
        levels: level -> the stated grade ("Moderate"), or the level's status when none is stated ("withheld",
            "not_assessable"); empty for a failed study.
        probabilities: level -> (Normal/Mild, Moderate, Severe) as written to the submission file.
        review_flags: levels flagged for a reader's review.
        seconds: wall time of the study.
    """

    study_id: str
    folder: str
    status: Literal["ok", "failed"]
    error_code: str = ""
    error_message: str = ""
    levels: dict[str, str] = field(default_factory=dict)
    probabilities: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    review_flags: int = 0
    seconds: float = 0.0


@dataclass
class BatchSummary:
    """The outcome of ``diagnose_folder``: one ``StudyOutcome`` per study, in the order they ran."""

    out_dir: Path
    studies: list[StudyOutcome]
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return sum(s.status == "ok" for s in self.studies)

    @property
    def failed(self) -> int:
        return sum(s.status == "failed" for s in self.studies)

    @property
    def summary_path(self) -> Path:
        return self.out_dir / SUMMARY_NAME

    @property
    def submission_path(self) -> Path:
        return self.out_dir / SUBMISSION_NAME

    def __str__(self) -> str:
        return (f"diagnose: {self.ok} ok, {self.failed} failed of {len(self.studies)} studies in {self.seconds:.1f}s\n"
                f"  per study:  {self.out_dir}/<study>/report.txt, report.json, images/\n"
                f"  summary:    {self.summary_path}\n  submission: {self.submission_path}")


# ------------------------------------------------------------------------------------------------ which studies
def find_studies(folder: str | Path) -> list[StudyInput]:
    """The studies at ``folder``, as the generic adapter sees them, plus the zips beside them.

    - a file (NIfTI/MHA, a DICOM file or a ``.zip``) is one study;
    - a folder that the adapter reads as one study (image files directly inside it, or DICOM series folders of one
      StudyInstanceUID) is one study;
    - otherwise each subfolder the adapter names (a study, or a study it could not read) is a study, and so is each
      ``.zip`` directly inside ``folder`` (a zip is taken to hold one study).

    The adapter reads the headers of every image once to decide; the studies are read again when diagnosed.

    Returns:
        The studies sorted by id.

    Raises:
        StudyError: NOT_FOUND when ``folder`` does not exist; NO_IMAGE when it holds no image and no zip.
    """
    folder = Path(folder)
    if not folder.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the study path does not exist.", str(folder))
    if folder.is_file():
        name = folder.name[: -len(".nii.gz")] if folder.name.lower().endswith(".nii.gz") else folder.stem
        return [StudyInput(name or folder.name, folder)]
    zips = [StudyInput(p.stem, p) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() == ".zip" and not p.name.startswith(".")]
    try:
        found = discover(folder)
    except StudyError:
        if zips:
            return zips
        raise
    ids = [r.study_id for r in found.records] + [str(e["study_id"]) for e in found.errors if e.get("study_id")]
    if folder.name in ids and not (folder / folder.name).is_dir():
        return [StudyInput(folder.name, folder)]  # the folder itself is one study
    studies = {sid: StudyInput(sid, folder / sid) for sid in ids if (folder / sid).exists()}
    for item in zips:
        studies.setdefault(item.study_id, item)
    return [studies[sid] for sid in sorted(studies)]


# ------------------------------------------------------------------------------------------------ probabilities
def fallback_probabilities(level: str, fallback: Fallback = "prior") -> tuple[float, float, float]:
    """What the submission says for a level the model cannot speak for (not assessable, or a failed study).

    "prior" (the default) writes the RSNA 2024 class balance of that level (``lss.anatomy.RSNA_CLASS_BALANCE``, the
    prior the project's phantoms are drawn from): knowing nothing of the image, the population's frequencies are the
    calibrated guess, the constant with the lowest expected log loss, and far better than uniform on a level like
    L1/L2 that is Normal/Mild 96% of the time. (RSNA's metric weights the classes 1/2/4; the best constant under
    that weighting tilts the prior towards Severe, but this file states probabilities, not a bet on the metric.)
    "uniform" writes (1/3, 1/3, 1/3): the choice when the studies come from a population unlike RSNA's, e.g. a
    stenosis-enriched referral clinic or phantoms drawn with ``synth.class_balance=uniform``.

    Raises:
        ValueError: for an unknown ``fallback``.
    """
    if fallback == "prior":
        prior = [float(p) for p in RSNA_CLASS_BALANCE[level]]  # rounded to 3 digits: sums to 1 +- 0.001
        return tuple(p / sum(prior) for p in prior)  # type: ignore[return-value]
    if fallback == "uniform":
        return (1 / 3, 1 / 3, 1 / 3)
    raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}.")


def submission_probabilities(findings: StudyFindings | None,
                             fallback: Fallback = "prior") -> dict[str, tuple[float, float, float]]:
    """Per level, the (Normal/Mild, Moderate, Severe) probabilities of the submission file.

    An assessable level gives the model's calibrated probabilities, withheld ones included (the model abstains from
    stating a grade, but its probabilities are still its best estimate); a level that is not assessable, or every
    level of a failed study (``findings`` None), gives ``fallback_probabilities``.
    """
    by_level = {f.level: f for f in findings.levels} if findings is not None else {}
    out = {}
    for level in LEVELS:
        finding = by_level.get(level)
        if finding is None or not finding.assessable:
            out[level] = fallback_probabilities(level, fallback)
            continue
        values = [max(float(finding.probabilities[s.value]), 0.0) for s in SEVERITIES]
        total = sum(values)
        out[level] = (tuple(v / total for v in values) if total > 0  # type: ignore[assignment]
                      else fallback_probabilities(level, fallback))
    return out


# ------------------------------------------------------------------------------------------------ the batch
def _safe_folder(study_id: str, taken: set[str]) -> str:
    """A folder name for a study's outputs: letters, digits, ``.``, ``_`` and ``-`` only; unique in ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", study_id).strip("._-")[:80] or "study"
    if base in (SUMMARY_NAME, SUBMISSION_NAME):
        base = f"study_{base}"
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name.lower())
    return name


def _summary_rows(outcomes: list[StudyOutcome]) -> list[dict[str, object]]:
    rows = []
    for s in outcomes:
        rows.append({"study": s.study_id, "folder": s.folder, "status": s.status, "error_code": s.error_code,
                     "error_message": s.error_message,
                     **{level_key(level): s.levels.get(level, "") for level in LEVELS},
                     "review_flags": s.review_flags if s.status == "ok" else "", "seconds": f"{s.seconds:.2f}"})
    return rows


def _write_csvs(summary: BatchSummary) -> None:
    """Writes summary.csv and submission.csv (again after every study: an interrupted batch leaves what it did)."""
    columns = ["study", "folder", "status", "error_code", "error_message", *(level_key(lv) for lv in LEVELS),
               "review_flags", "seconds"]
    for path, header, rows in (
        (summary.summary_path, columns, _summary_rows(summary.studies)),
        (summary.submission_path, list(SUBMISSION_COLUMNS),
         [{"row_id": f"{s.study_id}_{rsna_column(level)}",
           **dict(zip(SUBMISSION_COLUMNS[1:], (f"{p:.6f}" for p in s.probabilities[level]), strict=True))}
          for s in summary.studies for level in LEVELS]),
    ):
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)


def diagnose_folder(diagnoser, folder: str | Path, out_dir: str | Path, *, max_unpacked_bytes: int = 1 << 30,
                    dicom_out: str | Path | None = None, fallback: Fallback = "prior",
                    studies: list[StudyInput] | None = None) -> BatchSummary:
    """Diagnoses every study at ``folder`` (``find_studies``) into ``out_dir``; a failure does not stop the rest.

    Args:
        diagnoser: a ``lss.inference.Diagnoser`` (the model is loaded once for every study).
        folder: a folder of studies (or one study: it is then the batch's only study).
        out_dir: gets one folder per study (``report.txt``, ``report.json``, ``images/``), named after the study id
            with anything but letters, digits, ``.``, ``_`` and ``-`` replaced; and ``summary.csv`` and
            ``submission.csv``.
        max_unpacked_bytes: limit on a zip's unpacked size.
        dicom_out: when given, the DICOM SEG and SR of each DICOM study go to ``dicom_out/<study folder>``; a study
            that is not DICOM is diagnosed without them.
        fallback: the submission's probabilities for a level that is not assessable and for every level of a failed
            study: "prior" (the RSNA 2024 class balance of the level) or "uniform"; see ``fallback_probabilities``.
        studies: the studies, when the caller already has ``find_studies(folder)`` (default: found here).

    Returns:
        The ``BatchSummary``; ``summary.csv`` and ``submission.csv`` are written.

    Raises:
        ValueError: for an unknown ``fallback``.
        StudyError: NOT_FOUND / NO_IMAGE when ``folder`` holds no study at all (see ``find_studies``).
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}.")
    started = time.perf_counter()
    studies = find_studies(folder) if studies is None else studies
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(out_dir, [])
    taken: set[str] = set()
    logger.info("diagnose: %d studies", len(studies))
    bar = tqdm(studies, desc="diagnose", unit="study", disable=None)
    for number, study in enumerate(bar, start=1):
        anonymous = anonymous_id(study.study_id)
        bar.set_postfix_str(anonymous)
        outcome = _diagnose_one(diagnoser, study, out_dir, _safe_folder(study.study_id, taken), max_unpacked_bytes,
                                dicom_out, fallback)
        summary.studies.append(outcome)
        if outcome.status == "ok":
            logger.info("diagnose %d/%d %s: ok (%.1fs)", number, len(studies), anonymous, outcome.seconds)
        else:
            logger.warning("diagnose %d/%d %s: failed [%s] (the message is in %s)", number, len(studies),
                           anonymous, outcome.error_code, SUMMARY_NAME)
        summary.seconds = time.perf_counter() - started
        _write_csvs(summary)
    if not studies:
        _write_csvs(summary)
    summary.seconds = time.perf_counter() - started
    logger.info("diagnose: %d ok, %d failed of %d studies in %.1fs", summary.ok, summary.failed, len(studies),
                summary.seconds)
    return summary


def _diagnose_one(diagnoser, study: StudyInput, out_dir: Path, folder: str, max_unpacked_bytes: int,
                  dicom_out: str | Path | None, fallback: Fallback) -> StudyOutcome:
    started = time.perf_counter()
    dicom_dir = None if dicom_out is None else Path(dicom_out) / folder
    try:
        try:
            diagnosis = diagnoser.diagnose_path(study.path, out_dir / folder, max_unpacked_bytes=max_unpacked_bytes,
                                                dicom_out=dicom_dir)
        except ValueError as error:
            from lss.export.sources import NotDicomError

            if dicom_dir is None or not isinstance(error, NotDicomError):
                raise
            # Raised before the model runs: diagnose the (NIfTI) study without its DICOM outputs.
            diagnosis = diagnoser.diagnose_path(study.path, out_dir / folder, max_unpacked_bytes=max_unpacked_bytes)
    except StudyError as error:
        return StudyOutcome(study.study_id, folder, "failed", error.code.value, error.message,
                            probabilities=submission_probabilities(None, fallback),
                            seconds=time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - one study's failure must not stop the batch
        return StudyOutcome(study.study_id, folder, "failed", INTERNAL_ERROR, f"{type(error).__name__}: {error}",
                            probabilities=submission_probabilities(None, fallback),
                            seconds=time.perf_counter() - started)
    findings = diagnosis.findings
    levels = {f.level: (f.stated_severity.value if f.stated_severity is not None else f.status)
              for f in findings.levels}
    return StudyOutcome(study.study_id, folder, "ok", levels=levels,
                        probabilities=submission_probabilities(findings, fallback),
                        review_flags=sum(bool(f.review) for f in findings.levels),
                        seconds=time.perf_counter() - started)
