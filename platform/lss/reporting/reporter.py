"""Stage 4 of the diagnosis chain: findings -> the report of the configured writer, checked against the findings.

    findings (+ the prediction's per-level features) -> grounded writer                     (report.writer=grounded)
                                                     -> learned generator -> consistency check (report.writer=learned)

The learned text is never returned unchecked: one that states a level or grade the findings contradict is replaced
by the grounded writer's report (``lss.reporting.consistency``). No Ray here: ``lss diagnose`` and the Serve
``Reporter`` deployment both hold a ``StudyReporter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lss.config import ReportConfig, grounded_style
from lss.reporting.consistency import CheckedText, enforce_consistency
from lss.reporting.findings import StudyFindings
from lss.reporting.grounded import GroundedReportWriter, Report

__all__ = ["StudyReporter"]


class StudyReporter:
    """Writes a study's report with the configured writer.

    Args:
        config: the ``report`` settings (default ``ReportConfig()``: the grounded writer).

    Raises:
        ValueError: when the learned writer is chosen without ``generator_path``, or the grounded writer with a style
            it does not write.
        FileNotFoundError: when the generator folder does not exist.
    """

    def __init__(self, config: ReportConfig | None = None) -> None:
        self.config = config or ReportConfig()
        self.config.check_writer_style()
        # The learned generator's fallback writes "structured" where it was asked for a style the grounded writer
        # does not write.
        self.grounded = GroundedReportWriter(grounded_style(self.config.style))
        self.generator = None
        self.generator_version: str | None = None
        if self.config.writer == "learned":
            from lss.data.cases import file_sha256
            from lss.reporting.generator import load_generator

            if not self.config.generator_path:
                raise ValueError("report.writer=learned needs report.generator_path (a folder saved by "
                                 "`lss train-reporter`).")
            self.generator = load_generator(self.config.generator_path)
            self.generator_version = file_sha256(Path(self.config.generator_path) / "generator.json")[:12]

    def write(self, findings: StudyFindings, prediction: Any) -> tuple[Report, CheckedText | None]:
        """The report and, for the learned writer, its consistency check (None for the grounded writer).

        Args:
            findings: the study's findings.
            prediction: its ``StudyPrediction`` (the learned generator reads ``level_features``: (L, D)).

        Returns:
            The report, credited to the configured writer, and the check.
        """
        if self.generator is None:
            return self.grounded.write(findings), None
        features = torch.as_tensor(prediction.level_features, dtype=torch.float32)[None]
        text = self.generator.generate(features, self.config.style)[0]
        checked = enforce_consistency(text, findings, self.grounded)
        # A kept learned text is not built from the findings: the evidence stays in the findings of the JSON.
        return checked.report(findings.study_id, writer="learned"), checked

    def describe(self) -> dict[str, Any]:
        return {"writer": self.config.writer, "style": self.config.style, "generator_version": self.generator_version}
