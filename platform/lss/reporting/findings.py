"""Findings: per level, whether it can be assessed at all, the model's grade with its (calibrated) probabilities, the
rule grade of the measurements, and whether a reader should look again.

Three outcomes per level (``LevelFinding.status``):

- "not_assessable": the plausibility gate (``lss.reporting.plausibility``) found a reason the masks or the image
  cannot carry a grade (the disc is not in the field of view, the anatomy is not an adult lumbar spine's, no canal
  behind the disc, ...). No grade is stated; the reasons are.
- "withheld": assessable, but the evidence does not carry one grade: the model's calibrated confidence is below the
  threshold chosen on validation (``SeverityCalibration.abstain_threshold``), or the model's grade and the rule grade
  of the measurements disagree (``measurement_conflict``). The model abstains rather than guess.
- "graded": the model's grade is stated, and the measurements (when any were taken) grade the level the same.

The rule grade is a second, independent reading: ``lss.anatomy.grade_from_measurements`` on the dural sac area and
AP diameter of the predicted axial mask, or, without an axial area, ``grade_from_sagittal_ap`` on the canal AP
diameter of the mid-sagittal slice. Where model and rule disagree, on either path, neither is stated: the grade is
withheld and the level flagged for review with both readings, because one of them is wrong and the report cannot
tell which (a confident wrong grade is the worst output). On the sagittal path the AP diameter only separates
stenosis (Moderate or Severe) from none, so only that is compared. A level without axial data is marked
lower-confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lss.anatomy import (
    LEVELS,
    SEVERITIES,
    Severity,
    format_area_mm2,
    format_diameter_mm,
    grade_from_measurements,
    grade_from_sagittal_ap,
)
from lss.reporting.measurements import LevelMeasurements, measure_study
from lss.reporting.plausibility import assess_study

__all__ = ["LevelFinding", "StudyFindings", "build_findings"]


@dataclass
class LevelFinding:
    """One level's central canal finding.

    Attributes:
        level: e.g. "L4/L5".
        severity: the model's grade (the argmax of ``probabilities``).
        probabilities: severity name -> probability.
        rule_severity: the grade of the measurements by the documented cut-offs, or None when nothing was measured.
        measurements: what was measured and where (``LevelMeasurements``).
        review: True when a reader should check this level (model and rule grades disagree, the canal looks
            interrupted, or no sac was found on an axial slice).
        review_reason: why, in words ("" when ``review`` is False).
        lower_confidence: True when the level had no axial data (graded from the sagittal view only).
        evidence: ids of the evidence images that show this finding (filled in by the evidence writer).
        assessable: False when the plausibility gate found a reason the level cannot be graded.
        not_assessable_reasons: those reasons, in words (empty when assessable).
        abstained: True when the level is assessable but the model's confidence is below ``abstain_threshold``.
        abstain_threshold: the calibrated confidence a grade needs to be stated.
        rule_source: what the rule grade was measured on: "axial_area", "sagittal_ap" or None.
        measurement_conflict: True when the level is assessable and the rule grade of its measurements is not the
            model's grade: the grade is withheld (``review_reason`` gives both readings).
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
    assessable: bool = True
    not_assessable_reasons: list[str] = field(default_factory=list)
    abstained: bool = False
    abstain_threshold: float = 0.0
    rule_source: str | None = None
    measurement_conflict: bool = False

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.severity.value])

    @property
    def withheld(self) -> bool:
        """True when the level is assessable but no grade is stated (low confidence or a measurement conflict)."""
        return self.assessable and (self.abstained or self.measurement_conflict)

    @property
    def stated_severity(self) -> Severity | None:
        """The grade the report may state: None when the level is not assessable or its grade is withheld."""
        return self.severity if self.assessable and not self.withheld else None

    @property
    def withheld_reason(self) -> str:
        """Why the grade is withheld, in words ("" when it is not)."""
        reasons = []
        if self.withheld and self.abstained:
            reasons.append(f"the model's confidence {self.confidence:.2f} is below the {self.abstain_threshold:.2f} "
                           "needed to state a grade")
        if self.withheld and self.measurement_conflict:
            reasons.append(self.review_reason)
        return "; ".join(reasons)

    @property
    def status(self) -> str:
        """"graded", "withheld" (low confidence or a measurement conflict) or "not_assessable"."""
        if not self.assessable:
            return "not_assessable"
        return "withheld" if self.withheld else "graded"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form. "severity" is the stated grade (null when not assessable or withheld); the model's own
        grade ("model_severity"), its probabilities and confidence are given only for an assessable level, so no
        grade of a level that cannot be read leaves the system."""
        out = asdict(self)
        stated = self.stated_severity
        out["severity"] = out["stated_severity"] = None if stated is None else stated.value
        out["model_severity"] = self.severity.value if self.assessable else None
        out["rule_severity"] = (None if self.rule_severity is None or not self.assessable
                                else self.rule_severity.value)
        out["measurements"] = self.measurements.as_dict()
        out["confidence"] = round(self.confidence, 4) if self.assessable else None
        if not self.assessable:
            out["probabilities"] = None
        out["status"] = self.status
        out["withheld_reason"] = self.withheld_reason
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
        not_assessable_reasons: problems of the whole study (then no level is assessable).
        level_naming: how the levels were named (``LevelNaming.summary()``: method, status per level, the chain).
    """

    study_id: str
    levels: list[LevelFinding]
    has_axial: bool
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    not_assessable_reasons: list[str] = field(default_factory=list)
    level_naming: dict[str, Any] = field(default_factory=dict)

    @property
    def assessable(self) -> bool:
        """True when at least one level is assessable."""
        return any(f.assessable for f in self.levels)

    def level(self, name: str) -> LevelFinding:
        for finding in self.levels:
            if finding.level == name:
                return finding
        raise KeyError(f"no finding for level {name!r}; levels: {[f.level for f in self.levels]}.")

    def as_dict(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "has_axial": self.has_axial, "series": self.series,
                "notes": list(self.notes), "assessable": self.assessable,
                "not_assessable_reasons": list(self.not_assessable_reasons), "level_naming": self.level_naming,
                "levels": [f.as_dict() for f in self.levels]}


def _rule(measured: LevelMeasurements) -> tuple[Severity | None, str | None]:
    if measured.area_mm2 is not None and measured.ap_mm is not None:
        return grade_from_measurements(measured.area_mm2, measured.ap_mm), "axial_area"
    if measured.sagittal_ap_mm is not None:
        return grade_from_sagittal_ap(measured.sagittal_ap_mm), "sagittal_ap"
    return None, None


def _contradicts(rule: Severity | None, source: str | None, model: Severity) -> bool:
    """Whether the rule grade contradicts the model's grade. The sagittal AP alone does not separate Moderate from
    Severe (``grade_from_sagittal_ap`` says "Moderate" for both), so there it only tells stenosis from none."""
    if rule is None:
        return False
    if source == "sagittal_ap":
        return (rule is Severity.NORMAL_MILD) != (model is Severity.NORMAL_MILD)
    return rule is not model


def build_findings(prediction) -> StudyFindings:
    """Measures one ``lss.inference.StudyPrediction``, runs the plausibility gate and grades each level two ways.

    Returns:
        The study's findings; deterministic for the same prediction.
    """
    measurements = measure_study(prediction)
    assessment = assess_study(prediction, measurements)
    probs = np.asarray(prediction.severity_probs, dtype=np.float64)
    if probs.shape != (len(LEVELS), len(SEVERITIES)):
        raise ValueError(f"severity_probs must be ({len(LEVELS)}, {len(SEVERITIES)}), got {probs.shape}.")
    threshold = float(getattr(prediction, "abstain_threshold", 0.0) or 0.0)
    levels = []
    for li, (level, measured) in enumerate(zip(LEVELS, measurements, strict=True)):
        severity = Severity.from_index(int(np.argmax(probs[li])))
        rule, source = _rule(measured)
        reasons = assessment.reasons(level)
        finding = LevelFinding(
            level=level,
            severity=severity,
            probabilities={s.value: round(float(p), 4) for s, p in zip(SEVERITIES, probs[li], strict=True)},
            rule_severity=rule,
            measurements=measured,
            lower_confidence=not bool(prediction.axial_present[li]),
            assessable=not reasons,
            not_assessable_reasons=reasons,
            abstain_threshold=round(threshold, 4),
            rule_source=source,
        )
        finding.abstained = finding.assessable and float(probs[li].max()) < threshold
        if _contradicts(rule, source, severity):
            finding.review = finding.measurement_conflict = True
            # Written as the report writes the same values (5 mm2 / 0.5 mm), so one line never shows two numbers.
            where = (f"the measured dural sac ({format_area_mm2(measured.area_mm2)}, AP "
                     f"{format_diameter_mm(measured.ap_mm)})" if source == "axial_area" else
                     f"the sagittal canal AP diameter ({format_diameter_mm(measured.sagittal_ap_mm)})")
            finding.review_reason = f"the model grades {severity.value} but {where} grades {rule.value}"
        elif level in assessment.canal_interrupted:
            finding.review = True
            finding.review_reason = ("the segmented canal is interrupted behind the disc on the sagittal view "
                                     "(possible compression)")
        elif level in assessment.extreme_narrowing:
            finding.review = True
            finding.review_reason = ("the dural sac measures narrower than a sac is expected to be on both views "
                                     "(extreme compression, or a gap in the masks)")
        elif rule is None and prediction.axial_present[li]:
            finding.review = True
            finding.review_reason = "no dural sac was segmented on the axial slice, so the grade is not measured"
        if not finding.assessable:
            # nothing is stated, so nothing to review or to withhold
            finding.review, finding.review_reason, finding.measurement_conflict = False, "", False
        levels.append(finding)
    info = prediction.info or {}
    series = {"sagittal": info.get("sagittal_series"),
              "axial": {lv: v.get("series") for lv, v in info.get("axial", {}).items()}}
    notes = []
    has_axial = bool(np.any(prediction.axial_present))
    if any(f.assessable for f in levels):  # with nothing assessable, there is no reading path to caveat
        if not has_axial:
            notes.append("No axial series could be matched to the disc levels: every level is read from the "
                         "sagittal view only and is lower-confidence; dural sac areas were not measured.")
        elif not np.all(prediction.axial_present):
            missing = [lv for lv, p in zip(LEVELS, prediction.axial_present, strict=True) if not p]
            notes.append(f"No axial images at {', '.join(missing)}: read from the sagittal view only "
                         "(lower-confidence).")
    return StudyFindings(study_id=prediction.study_id, levels=levels, has_axial=has_axial, series=series,
                         notes=notes, not_assessable_reasons=list(assessment.study_reasons),
                         level_naming=assessment.naming)
