"""``lss diagnose``: one study in, a report with its evidence out.

    study (DICOM folder / zip, NIfTI)  -> open_study (generic adapter)
        -> preprocess_study                         (the same MONAI transforms as training)
        -> [sagittal pass: find each level's disc; give the axial series their levels] -> preprocess again
        -> predict_cases                             (masks, severity, attention)
        -> build_findings                            (measurements, rule grade, review flags)
        -> report writer (grounded | learned, checked against the findings)  +  evidence images  +  JSON
        -> [DICOM SEG + SR of the masks and measurements, for a DICOM study]  (lss.export)

Axial series of an arbitrary study carry no level. When the study has axial images but none could be matched to a
level, a first pass on the sagittal view finds each level's disc (the disc region under the level prompt's
attention) and its position in scanner space; the axial slices nearest that point (within one slice thickness)
become the level's axial input. Levels left without axial images are graded from the sagittal view and the report
says they are lower-confidence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lss.anatomy import LEVELS
from lss.config import LSSConfig
from lss.data.manifest import LevelRecord, StudyRecord
from lss.inference.locate import SpineLocator
from lss.inference.predict import StudyPrediction, predict_cases
from lss.inference.study_input import open_study
from lss.jsonable import to_jsonable
from lss.reporting.evidence import write_evidence_images
from lss.reporting.findings import StudyFindings, build_findings
from lss.reporting.consistency import CheckedText, enforce_consistency
from lss.reporting.grounded import GroundedReportWriter, Report

__all__ = ["Diagnosis", "Diagnoser", "match_axial_levels", "needs_axial_matching", "without_labels"]

logger = logging.getLogger(__name__)


@dataclass
class Diagnosis:
    """The outcome of one study.

    Attributes:
        study_id: the study (from its folder or file name).
        findings: per-level findings with measurements.
        report: the written report (text and sentences with evidence).
        prediction: the model's output on the preprocessed grid.
        images: evidence image id -> PNG path (empty when no output folder was given).
        files: other files written (report text, JSON).
        dicom: DICOM output name -> path ("seg_sagittal", "seg_axial_<level>", "sr"; empty unless asked for).
        info: what was done (axial matching, model file, preprocessing record).
    """

    study_id: str
    findings: StudyFindings
    report: Report
    prediction: StudyPrediction
    images: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    dicom: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON document: report, findings with measurements and evidence image ids, and the images."""
        return {"study_id": self.study_id, "report": self.report.as_dict(), "findings": self.findings.as_dict(),
                "images": {key: Path(path).name for key, path in self.images.items()}, "info": self.info}


def match_axial_levels(record: StudyRecord, findings: StudyFindings) -> tuple[StudyRecord, list[str]]:
    """Gives each level the disc position found on the sagittal view, so that unlabelled axial slices can be matched.

    Levels that already have a point or a level-specific axial series are left alone.

    Returns:
        A copy of the record with ``point_ras`` set where a disc was found, and the levels that got one.
    """
    record = record.model_copy(deep=True)
    given = {a.level for a in record.axials() if a.level is not None}
    changed = []
    for finding in findings.levels:
        point = finding.measurements.disc_centre_ras
        if point is None or finding.level in given:
            continue
        existing = record.level(finding.level)
        if existing is not None and existing.point_ras is not None:
            continue
        if existing is None:
            record.levels.append(LevelRecord(level=finding.level, point_ras=tuple(point)))
        else:
            existing.point_ras = tuple(point)
        changed.append(finding.level)
    return record, changed


def needs_axial_matching(record: StudyRecord, case) -> bool:
    """True when the study has axial series but some level got no axial input (a sagittal pass can match them)."""
    return bool(record.axials()) and not bool(np.all(case.axial_present))


class Diagnoser:
    """Loads a model (and the learned report generator, when configured) once and diagnoses studies.

    Args:
        model_path: a model file of ``lss.model.save_model``.
        config: settings (``preprocess`` and ``report`` sections); default ``LSSConfig()``.
        device: where the model runs.

    Raises:
        FileNotFoundError: when the model file or the configured generator folder does not exist.
        ValueError: when the learned writer is chosen without ``report.generator_path``.
    """

    def __init__(self, model_path: str | Path, config: LSSConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        from lss.model import load_model
        from lss.preprocessing.pipeline import file_sha256

        self.config = config or LSSConfig()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file {self.model_path} does not exist.")
        self.device = torch.device(device)
        self.model = load_model(self.model_path, map_location=self.device).eval()
        self.model_sha256 = file_sha256(self.model_path)
        # Without a mask, a coarse pass of this model over the whole field of view places the sagittal crop.
        self.locator = SpineLocator(self.model, tuple(self.config.preprocess.sagittal_shape[1:]), self.device)
        self.generator = None
        report = self.config.report
        if report.writer == "learned":
            if not report.generator_path:
                raise ValueError("report.writer=learned needs report.generator_path (a folder saved by "
                                 "`lss train-reporter`).")
            from lss.reporting.generator import load_generator

            self.generator = load_generator(report.generator_path)
        self.grounded = GroundedReportWriter()

    # ------------------------------------------------------------------------------------------------ stages
    def preprocess(self, record: StudyRecord):
        """(PreprocessedStudy, info): preprocessing, with the sagittal pass that matches unlabelled axials."""
        from lss.preprocessing.transforms import preprocess_study

        case = preprocess_study(record, self.config.preprocess, self.locator)
        info: dict[str, Any] = {"axial_series": len(record.axials()), "axial_matched_by_sagittal_pass": []}
        if needs_axial_matching(record, case):
            first = self.predict(record.study_id, case)
            matched, levels = match_axial_levels(record, build_findings(first))
            if levels:
                case = preprocess_study(matched, self.config.preprocess, self.locator)
                info["axial_matched_by_sagittal_pass"] = [lv for lv in levels
                                                          if case.axial_present[LEVELS.index(lv)]]
        return case, info

    def predict(self, study_id: str, case) -> StudyPrediction:
        return predict_cases(self.model, [case.arrays()], [study_id], [case.info], self.device)[0]

    def write_report(self, findings: StudyFindings, prediction: StudyPrediction) -> Report:
        """The configured writer's report (the grounded writer's unless ``report.writer`` is "learned"); see
        ``write_checked_report``."""
        return self.write_checked_report(findings, prediction)[0]

    def write_checked_report(self, findings: StudyFindings,
                             prediction: StudyPrediction) -> tuple[Report, CheckedText | None]:
        """The configured writer's report and, for the learned writer, its consistency check.

        The learned text is checked against the findings before it is returned (``lss.reporting.consistency``): one
        that states a level or grade the findings contradict is replaced by the grounded writer's report, and the
        ``CheckedText`` says so and why.

        Returns:
            The report (credited to the configured writer) and the check (None for the grounded writer).
        """
        if self.generator is None:
            return self.grounded.write(findings), None
        features = torch.as_tensor(prediction.level_features, dtype=torch.float32)[None]
        text = self.generator.generate(features, self.config.report.style)[0]
        checked = enforce_consistency(text, findings, self.grounded)
        # A kept learned text is not built from the findings: the evidence stays in the findings of the JSON.
        return checked.report(findings.study_id, writer="learned"), checked

    # ------------------------------------------------------------------------------------------------ all of it
    def diagnose_record(self, record: StudyRecord, out_dir: str | Path | None = None,
                        dicom_out: str | Path | None = None) -> Diagnosis:
        """Diagnoses one study record; with ``out_dir``, writes ``report.txt``, ``report.json`` and the images; with
        ``dicom_out``, writes the DICOM SEG and SR files there (``lss.export.write_dicom_outputs``).

        Masks, grades, annotated level points and reports in the record are dropped first (masks would steer the
        crops): a diagnosis sees only what a new patient's study holds.

        Raises:
            NotDicomError: (a ValueError) when ``dicom_out`` is given for a study that is not DICOM; raised before
                the model runs.
        """
        record = without_labels(record)
        sources = None
        if dicom_out is not None:
            from lss.export.sources import collect_dicom_sources

            sources = collect_dicom_sources(record)  # de-identified headers, read while the files exist
        case, info = self.preprocess(record)
        prediction = self.predict(record.study_id, case)
        findings = build_findings(prediction)
        images: dict[str, str] = {}
        if out_dir is not None:
            images = write_evidence_images(prediction, findings, Path(out_dir) / "images")
        report, checked = self.write_checked_report(findings, prediction)
        info.update({"model_sha256": self.model_sha256, "writer": report.writer,
                     "preprocessing": to_jsonable(case.info)})
        if checked is not None:
            info["report_check"] = checked.as_dict()
        diagnosis = Diagnosis(study_id=record.study_id, findings=findings, report=report, prediction=prediction,
                              images=images, info=info)
        if sources is not None:
            from lss.export import OutputIdentity, write_dicom_outputs

            written = write_dicom_outputs(prediction, findings, sources, dicom_out,
                                          axial_slices=int(case.axial_image.shape[1]),
                                          identity=OutputIdentity(model_version=self.model_sha256[:12]))
            diagnosis.dicom = {name: str(path) for name, path in written.items()}
        if out_dir is not None:
            out_dir = Path(out_dir)
            (out_dir / "report.txt").write_text(report.text + "\n")
            (out_dir / "report.json").write_text(json.dumps(to_jsonable(diagnosis.as_dict()), indent=2) + "\n")
            diagnosis.files = {"report_txt": str(out_dir / "report.txt"), "report_json": str(out_dir / "report.json")}
        logger.info("diagnose %s: %s", _anonymous(record.study_id),
                    ", ".join(f"{f.level} {f.stated_severity.value if f.stated_severity else f.status}"
                              for f in findings.levels))
        return diagnosis

    def diagnose_path(self, path: str | Path, out_dir: str | Path | None = None,
                      max_unpacked_bytes: int = 1 << 30, dicom_out: str | Path | None = None) -> Diagnosis:
        """Diagnoses the one study at ``path`` (DICOM folder or zip, NIfTI/MHA file or folder).

        Raises:
            StudyError: when the input is not a usable study (see ``open_study`` and ``preprocess_study``).
            NotDicomError: when ``dicom_out`` is given for a study that is not DICOM.
        """
        with tempfile.TemporaryDirectory(prefix="lss_diagnose_") as workdir:
            record = open_study(path, workdir, max_unpacked_bytes)
            return self.diagnose_record(record, out_dir, dicom_out=dicom_out)


def without_labels(record: StudyRecord) -> StudyRecord:
    """A copy of the record with no masks, grades, annotated points or reports: only what a new study holds."""
    record = record.model_copy(deep=True)
    for series in record.series:
        series.mask_path = None
    record.levels = []  # grades, measurements and annotated points are all labels
    record.reports = {}
    return record


def _anonymous(study_id: str) -> str:
    """A short hash of the study id for logs: folder names of clinical exports can hold patient names."""
    return "study-" + hashlib.sha256(study_id.encode()).hexdigest()[:10]
