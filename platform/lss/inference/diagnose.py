"""``lss diagnose``: one study in, a report with its evidence out.

    study (DICOM folder / zip, NIfTI)  -> open_study (generic adapter)
        -> StudyPreparer   (lss.inference.prepare: the MONAI transforms of training; a sagittal pass gives
                            unlabelled axial series their levels)
        -> StudySegmenter  (lss.inference.segment: masks, severity, attention)
        -> build_findings  (lss.reporting.findings: measurements, rule grade, review flags)
        -> StudyReporter   (lss.reporting.reporter: grounded | learned, checked against the findings)
        -> evidence images + JSON  [+ DICOM SEG + SR of the masks and measurements, for a DICOM study (lss.export)]

The same four stages, with no Ray in them, run inside the Serve deployments (``lss.serve.deployments``): the CLI and
the API cannot drift apart.

Axial series of an arbitrary study carry no level. When the study has axial images but none could be matched to a
level, a first pass on the sagittal view finds each level's disc (the disc region under the level prompt's
attention) and its position in scanner space; the axial slices nearest that point (within one slice thickness)
become the level's axial input. Levels left without axial images are graded from the sagittal view and the report
says they are lower-confidence.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lss.config import LSSConfig
from lss.data.manifest import StudyRecord
from lss.data.privacy import anonymous_id
from lss.inference.predict import StudyPrediction
from lss.inference.prepare import (
    PreparedStudy,
    StudyPreparer,
    match_axial_levels,
    needs_axial_matching,
    without_labels,
)
from lss.inference.segment import StudySegmenter
from lss.inference.study_input import open_study
from lss.jsonable import to_jsonable
from lss.reporting.evidence import write_evidence_images
from lss.reporting.findings import StudyFindings, build_findings
from lss.reporting.grounded import Report
from lss.reporting.reporter import StudyReporter

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


class Diagnoser:
    """The diagnosis chain in one process: loads the model (and the learned report generator, when configured) once
    and diagnoses studies through the stages the Serve deployments also run.

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
        self.config = config or LSSConfig()
        self.segmenter = StudySegmenter(model_path, device)
        # Without a mask, a first pass of this model over the whole field of view places the sagittal crop.
        self.preparer = StudyPreparer(self.config.preprocess, find_discs=self.segmenter.disc_centres_one,
                                      locate=self.segmenter.locator(self.config.preprocess))
        self.reporter = StudyReporter(self.config.report)

    @property
    def model(self):
        return self.segmenter.model

    @property
    def grounded(self):
        return self.reporter.grounded

    # ------------------------------------------------------------------------------------------------ stages
    def prepare(self, record: StudyRecord) -> PreparedStudy:
        """Stage 1: preprocessing, with the sagittal pass that matches unlabelled axials (labels dropped first)."""
        return self.preparer(record)

    def predict(self, prepared: PreparedStudy) -> StudyPrediction:
        """Stage 2: the model's masks, severity probabilities and attention."""
        return self.segmenter.predict_one(prepared)

    def write_report(self, findings: StudyFindings, prediction: StudyPrediction) -> Report:
        """Stage 4: the configured writer's report (see ``StudyReporter.write``)."""
        return self.reporter.write(findings, prediction)[0]

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
        prepared = self.prepare(record)
        prediction = self.predict(prepared)
        findings = build_findings(prediction)
        images: dict[str, str] = {}
        if out_dir is not None:
            images = write_evidence_images(prediction, findings, Path(out_dir) / "images")
        report, checked = self.reporter.write(findings, prediction)
        info = {**prepared.summary(), "model_version": self.segmenter.version, "writer": report.writer,
                "preprocessing": to_jsonable(prepared.info)}
        if checked is not None:
            info["report_check"] = checked.as_dict()
        diagnosis = Diagnosis(study_id=record.study_id, findings=findings, report=report, prediction=prediction,
                              images=images, info=info)
        if sources is not None:
            from lss.export import OutputIdentity, write_dicom_outputs

            written = write_dicom_outputs(prediction, findings, sources, dicom_out,
                                          axial_slices=int(prepared.case.axial_image.shape[1]),
                                          identity=OutputIdentity(model_version=self.segmenter.version))
            diagnosis.dicom = {name: str(path) for name, path in written.items()}
        if out_dir is not None:
            out_dir = Path(out_dir)
            (out_dir / "report.txt").write_text(report.text + "\n")
            (out_dir / "report.json").write_text(json.dumps(to_jsonable(diagnosis.as_dict()), indent=2) + "\n")
            diagnosis.files = {"report_txt": str(out_dir / "report.txt"), "report_json": str(out_dir / "report.json")}
        logger.info("diagnose %s: %s", anonymous_id(record.study_id),
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
            record = open_study(path, workdir, max_unpacked_bytes, limits=self.config.preprocess.limits)
            return self.diagnose_record(record, out_dir, dicom_out=dicom_out)
