"""Explainable reports: measurements from masks, findings with two grades, the grounded writer, the learned report
generator and the check that keeps its text consistent with the findings, evidence images, and the metrics that
judge reports (NLG scores and clinical accuracy)."""

from lss.reporting.consistency import (
    CheckedText,
    Contradiction,
    contradiction_rates,
    enforce_consistency,
    find_contradictions,
)
from lss.reporting.findings import LevelFinding, StudyFindings, build_findings
from lss.reporting.grounded import GroundedReportWriter, Report, ReportSentence
from lss.reporting.measurements import (
    LevelMeasurements,
    ap_diameter_mm,
    disc_height_mm,
    dural_sac_mm,
    largest_component,
    level_discs_of,
    measure_study,
    principal_axes,
    ray_run_mm,
    region_area_mm2,
)
from lss.reporting.reporter import StudyReporter

__all__ = [
    "CheckedText", "Contradiction", "contradiction_rates", "enforce_consistency", "find_contradictions",
    "LevelFinding", "StudyFindings", "build_findings", "GroundedReportWriter", "Report", "ReportSentence",
    "LevelMeasurements", "ap_diameter_mm", "disc_height_mm", "dural_sac_mm", "largest_component", "level_discs_of",
    "measure_study", "principal_axes", "ray_run_mm", "region_area_mm2", "StudyReporter",
]
