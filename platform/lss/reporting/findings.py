"""Findings: per level, the model's grade with its probabilities, the rule grade of the measurements, and whether a
reader should look again.

The model grade is what the report states. The rule grade (``lss.anatomy.grade_from_measurements`` on the dural sac
area and AP diameter measured on the predicted axial mask) is a second, independent reading; where the two
disagree the finding is flagged for review instead of being silently resolved. A level without axial data is
graded from the sagittal view only and marked lower-confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lss.anatomy import LEVELS, SEVERITIES, Severity, grade_from_measurements
from lss.reporting.measurements import LevelMeasurements, measure_study

__all__ = ["LevelFinding", "StudyFindings", "build_findings"]


@dataclass
class LevelFinding:
    """One level's central canal finding.

    Attributes:
        level: e.g. "L4/L5".
        severity: the model's grade (the argmax of ``probabilities``).
        probabilities: severity name -> probability.
        rule_severity: the grade of the measurements by the documented cut-offs, or None when the axial area could
            not be measured.
        measurements: what was measured and where (``LevelMeasurements``).
        review: True when a reader should check this level (model and rule grades disagree).
        review_reason: why, in words ("" when ``review`` is False).
        lower_confidence: True when the level had no axial data (graded from the sagittal view only).
        evidence: ids of the evidence images that show this finding (filled in by the evidence writer).
    """

    level: str
    severity: Severity
    probabilities: dict[str, float]
    rule_severity: Severity | None
    measurements: LevelMeasurements
    review: bool = False
    review_reason: str = ""
    lower_confidence: bool = False
    evidence: list[str] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.severity.value])

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["severity"] = self.severity.value
        out["rule_severity"] = None if self.rule_severity is None else self.rule_severity.value
        out["measurements"] = self.measurements.as_dict()
        out["confidence"] = round(self.confidence, 4)
        return out


@dataclass
class StudyFindings:
    """All findings of one study, in anatomical order (``LEVELS``).

    Attributes:
        study_id: the study.
        levels: one finding per level.
        has_axial: True when at least one level had axial data.
        series: the series the findings were read from (sagittal id, axial ids by level).
        notes: caveats that apply to the whole study.
    """

    study_id: str
    levels: list[LevelFinding]
    has_axial: bool
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def level(self, name: str) -> LevelFinding:
        for finding in self.levels:
            if finding.level == name:
                return finding
        raise KeyError(f"no finding for level {name!r}; levels: {[f.level for f in self.levels]}.")

    def as_dict(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "has_axial": self.has_axial, "series": self.series,
                "notes": list(self.notes), "levels": [f.as_dict() for f in self.levels]}


def build_findings(prediction) -> StudyFindings:
    """Measures one ``lss.inference.StudyPrediction`` and grades each level two ways.

    Returns:
        The study's findings; deterministic for the same prediction.
    """
    measurements = measure_study(prediction)
    probs = np.asarray(prediction.severity_probs, dtype=np.float64)
    if probs.shape != (len(LEVELS), len(SEVERITIES)):
        raise ValueError(f"severity_probs must be ({len(LEVELS)}, {len(SEVERITIES)}), got {probs.shape}.")
    levels = []
    for li, (level, measured) in enumerate(zip(LEVELS, measurements, strict=True)):
        severity = Severity.from_index(int(np.argmax(probs[li])))
        rule = None
        if measured.area_mm2 is not None and measured.ap_mm is not None:
            rule = grade_from_measurements(measured.area_mm2, measured.ap_mm)
        finding = LevelFinding(
            level=level,
            severity=severity,
            probabilities={s.value: round(float(p), 4) for s, p in zip(SEVERITIES, probs[li], strict=True)},
            rule_severity=rule,
            measurements=measured,
            lower_confidence=not bool(prediction.axial_present[li]),
        )
        if rule is not None and rule is not severity:
            finding.review = True
            finding.review_reason = (f"the model grades {severity.value} but the measured dural sac "
                                     f"({measured.area_mm2:.0f} mm2, AP {measured.ap_mm:.1f} mm) grades "
                                     f"{rule.value}")
        elif rule is None and prediction.axial_present[li]:
            finding.review = True
            finding.review_reason = "no dural sac was segmented on the axial slice, so the grade is not measured"
        levels.append(finding)
    info = prediction.info or {}
    series = {"sagittal": info.get("sagittal_series"),
              "axial": {lv: v.get("series") for lv, v in info.get("axial", {}).items()}}
    notes = []
    has_axial = bool(np.any(prediction.axial_present))
    if not has_axial:
        notes.append("No axial series could be matched to the disc levels: every level is graded from the sagittal "
                     "view only and is lower-confidence; dural sac areas were not measured.")
    elif not np.all(prediction.axial_present):
        missing = [lv for lv, p in zip(LEVELS, prediction.axial_present, strict=True) if not p]
        notes.append(f"No axial images at {', '.join(missing)}: graded from the sagittal view only "
                     "(lower-confidence).")
    return StudyFindings(study_id=prediction.study_id, levels=levels, has_axial=has_axial, series=series,
                         notes=notes)
