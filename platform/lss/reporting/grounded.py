"""The grounded report writer (the default): Technique, Findings (one line per level, in anatomical order) and
Impression, where every sentence is built from one finding and carries its evidence.

Two styles (``report.style``): "structured" (the default: the sections above, area and AP diameter per level) and
"concise" (one line from L5/S1 up, "L4/L5 moderate stenosis, 95 mm2", then the Impression), as radiologists dictate
a short report; both are built from the same findings, with the same notes, and read back the same way
(``lss.reporting.clinical``).

It states nothing the findings do not hold: a level's sentence names the model's grade, the measured dural sac area
and AP diameter (when measured), and, in square brackets, whether the level is lower-confidence or flagged for
review. A level that is not assessable says so and why; a level whose grade is withheld (the model's confidence is
too low, or the model and the measurements grade it differently) says so with both readings; neither states a grade,
and the Impression speaks only about the levels that were graded. The same findings always give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lss.anatomy import CUTOFFS, LEVELS, Severity, format_area_mm2, format_diameter_mm
from lss.config import GROUNDED_STYLES
from lss.reporting.findings import LevelFinding, StudyFindings

__all__ = ["Report", "ReportSentence", "GroundedReportWriter", "GROUNDED_STYLES"]


@dataclass
class ReportSentence:
    """One sentence of a report and what it rests on.

    Attributes:
        section: "technique", "findings" or "impression".
        text: the sentence.
        levels: the levels it speaks about.
        evidence: per level, the measurements and evidence image ids behind it.
    """

    section: str
    text: str
    levels: list[str] = field(default_factory=list)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Report:
    """A written report: the text and its sentences with their evidence."""

    study_id: str
    writer: str
    text: str
    sentences: list[ReportSentence]

    def as_dict(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "writer": self.writer, "text": self.text,
                "sentences": [vars(s) for s in self.sentences]}


def _severity_phrase(finding: LevelFinding, concise: bool = False) -> str:
    if finding.severity is Severity.SEVERE:
        return "severe stenosis" if concise else "severe central canal stenosis"
    if finding.severity is Severity.MODERATE:
        return "moderate stenosis" if concise else "moderate central canal stenosis"
    area = finding.measurements.area_mm2
    if area is not None and area < CUTOFFS.relative_area_mm2:
        return "mild stenosis" if concise else "mild narrowing of the central canal"
    return "no stenosis" if concise else "no significant central canal stenosis"


def _evidence(finding: LevelFinding) -> dict[str, Any]:
    m = finding.measurements
    return {
        "status": finding.status,
        "severity": None if finding.stated_severity is None else finding.stated_severity.value,
        "model_severity": finding.severity.value if finding.assessable else None,
        "not_assessable_reasons": list(finding.not_assessable_reasons),
        "probability": round(finding.confidence, 3) if finding.assessable else None,
        "rule_severity": (None if finding.rule_severity is None or not finding.assessable
                          else finding.rule_severity.value),
        "area_mm2": m.area_mm2,
        "ap_mm": m.ap_mm,
        "axial_slice": m.axial_slice,
        "sagittal_ap_mm": m.sagittal_ap_mm,
        "disc_height_mm": m.disc_height_mm,
        "sagittal_slice": m.sagittal_slice,
        "images": list(finding.evidence),
    }


class GroundedReportWriter:
    """Writes a radiologist-style report from ``StudyFindings``; see the module docstring.

    Args:
        style: "structured" or "concise" (``GROUNDED_STYLES``).

    Raises:
        ValueError: for another style.
    """

    name = "grounded"

    def __init__(self, style: str = "structured") -> None:
        if style not in GROUNDED_STYLES:
            raise ValueError(f"the grounded writer writes the styles {list(GROUNDED_STYLES)}, not {style!r}.")
        self.style = style

    def _level_sentence(self, finding: LevelFinding) -> str:
        """The level's line: "L4/L5: Moderate central canal stenosis (dural sac area 95 mm2, AP diameter 6.5 mm)."
        (structured) or "L4/L5 moderate stenosis, 95 mm2" (concise: a clause of the one Findings line)."""
        m = finding.measurements
        concise = self.style == "concise"
        head, end = (f"{finding.level} ", "") if concise else (f"{finding.level}: ", ".")
        if not finding.assessable:
            # Square brackets: the reasons may name the canal, and must not read as a statement about it.
            return f"{head}not assessable [{'; '.join(finding.not_assessable_reasons)}]{end}"
        if finding.withheld:
            # The reason names grades (the model's and the measurements'): in brackets, so it is not a statement.
            sagittal = (f"; sagittal canal AP {format_diameter_mm(m.sagittal_ap_mm)}"
                        if m.sagittal_ap_mm is not None
                        and not (finding.measurement_conflict and finding.rule_source == "sagittal_ap") else "")
            return f"{head}grade withheld [{finding.withheld_reason}{sagittal}]{end}"
        if concise:  # the area alone, as a dictated short report gives it; the AP diameter stays in the evidence
            text = head + _severity_phrase(finding, concise=True)
            if m.area_mm2 is not None:
                text += f", {format_area_mm2(m.area_mm2)}"
        else:
            text = head + _severity_phrase(finding).capitalize()
            measured = []
            if m.area_mm2 is not None:
                measured.append(f"dural sac area {format_area_mm2(m.area_mm2)}")
            if m.ap_mm is not None:
                measured.append(f"AP diameter {format_diameter_mm(m.ap_mm)}")
            if measured:
                text += f" ({', '.join(measured)})"
        notes = []
        if finding.lower_confidence:
            sagittal = (f", sagittal canal AP {format_diameter_mm(m.sagittal_ap_mm)}"
                        if m.sagittal_ap_mm is not None else "")
            notes.append(f"lower confidence: no axial image at this level, graded on the sagittal view{sagittal}")
        if finding.review:
            notes.append(f"review: {finding.review_reason}")
        if notes:
            text += " [" + "; ".join(notes) + "]"
        return text + end

    def _technique(self, findings: StudyFindings) -> str:
        if not findings.assessable:
            return "Images submitted as a lumbar spine MRI; no level of a lumbar spine could be read on them."
        if findings.has_axial:
            return "Sagittal and axial T2-weighted images of the lumbar spine."
        return "Sagittal T2-weighted images of the lumbar spine; no axial images were matched to the disc levels."

    def _impression(self, findings: StudyFindings) -> tuple[str, list[str]]:
        graded = [f for f in findings.levels if f.stated_severity is not None]
        abnormal = [f for f in graded if f.stated_severity in (Severity.MODERATE, Severity.SEVERE)]
        if not graded:
            return "[No level could be graded: see the findings for why.]", []
        if not abnormal:
            if {f.level for f in graded} >= set(LEVELS):  # "any lumbar level" covers every level
                return "No significant central canal stenosis at any lumbar level.", []
            names = [f.level for f in graded]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            return f"No significant central canal stenosis at {listed}.", names
        abnormal.sort(key=lambda f: (-f.severity.index, LEVELS.index(f.level)))
        text = "; ".join(f"{f.severity.value.lower()} central canal stenosis at {f.level}" for f in abnormal)
        return text[0].upper() + text[1:] + ".", [f.level for f in abnormal]

    def write(self, findings: StudyFindings) -> Report:
        """The report of one study.

        Args:
            findings: from ``lss.reporting.build_findings``.
        """
        ordered = sorted(findings.levels, key=lambda f: LEVELS.index(f.level))
        concise = self.style == "concise"
        sentences = [] if concise else [ReportSentence("technique", self._technique(findings))]
        for finding in reversed(ordered) if concise else ordered:  # a short report is dictated from L5/S1 up
            sentences.append(ReportSentence("findings", self._level_sentence(finding), [finding.level],
                                            {finding.level: _evidence(finding)}))
        impression, levels = self._impression(findings)
        by_level = {f.level: f for f in ordered}
        sentences.append(ReportSentence("impression", impression, levels,
                                        {lv: _evidence(by_level[lv]) for lv in levels}))
        conflicts = [f.level for f in ordered if f.withheld and f.measurement_conflict]
        flagged = [f.level for f in ordered if f.review and f.level not in conflicts]
        unassessed = [f.level for f in ordered if not f.assessable]
        if unassessed:
            sentences.append(ReportSentence(
                "impression", f"[Not assessable: {', '.join(unassessed)}; no grade is stated there.]", unassessed,
                {lv: _evidence(by_level[lv]) for lv in unassessed}))
        low_confidence = [f.level for f in ordered if f.withheld and f.abstained and f.level not in conflicts]
        for levels, sentence in ((low_confidence, "[Grade withheld for low model confidence: {}.]"),
                                 (conflicts, "[Grade withheld where the model and the measurements disagree: {}; "
                                             "please review.]")):
            if levels:
                sentences.append(ReportSentence("impression", sentence.format(", ".join(levels)), levels,
                                                {lv: _evidence(by_level[lv]) for lv in levels}))
        if findings.not_assessable_reasons:
            sentences.append(ReportSentence(
                "impression", f"[{'; '.join(findings.not_assessable_reasons).capitalize()}.]"))
        if flagged:
            sentences.append(ReportSentence(
                "impression", f"[Please review {', '.join(flagged)}: see the findings for why.]", flagged,
                {lv: _evidence(by_level[lv]) for lv in flagged}))
        for note in findings.notes:
            sentences.append(ReportSentence("impression", f"[{note}]"))
        if concise:
            clauses = [s.text for s in sentences if s.section == "findings"]
            text = " ".join(([f"Central canal: {'; '.join(clauses)}."] if clauses else [])
                            + [s.text for s in sentences if s.section == "impression"])
            return Report(study_id=findings.study_id, writer=self.name, text=text, sentences=sentences)
        lines = ["TECHNIQUE: " + sentences[0].text, "", "FINDINGS:"]
        lines += [s.text for s in sentences if s.section == "findings"]
        lines += ["", "IMPRESSION:"] + [s.text for s in sentences if s.section == "impression"]
        return Report(study_id=findings.study_id, writer=self.name, text="\n".join(lines), sentences=sentences)
