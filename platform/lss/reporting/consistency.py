"""Consistency of a report with the findings: the learned report generator writes from the level features, not from
the findings, so its text is read back and checked before anyone sees it.

    generated text -> (level, severity) statements (``lss.reporting.clinical.extract_statements``)
                   +  every level name the text mentions
    -> contradictions with the ``StudyFindings``:
         "grade":          a level stated with a severity other than the finding's stated grade
         "withheld":       a grade stated at a level whose grade is withheld
         "not_assessable": a grade stated at a level the plausibility gate found not assessable
         "unknown_level":  a level that is not among the findings ("L5/L6", "T12/L1", a level the findings lack)
    -> no contradiction: the text is kept as written
       contradictions:   the whole text is replaced by the grounded writer's report of the same findings, and the
                         replacement and its reasons are recorded (``CheckedText``)

Replacing the whole report is the robust choice: dropping the offending sentences would leave a report whose
Findings and Impression no longer agree, or one that silently says nothing about a level. A level the text says
nothing about is not a contradiction (clinical accuracy counts it as a miss).

The check is only as good as the statement reader: a grade worded in a way ``extract_statements`` does not read is
not seen, so it cannot be contradicted either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lss.anatomy import Severity
from lss.reporting.clinical import extract_statements, mentioned_levels
from lss.reporting.findings import LevelFinding, StudyFindings
from lss.reporting.grounded import GroundedReportWriter, Report, ReportSentence

__all__ = [
    "CONTRADICTION_KINDS",
    "CheckedText",
    "Contradiction",
    "contradiction_rates",
    "enforce_consistency",
    "find_contradictions",
]

CONTRADICTION_KINDS: tuple[str, ...] = ("grade", "withheld", "not_assessable", "unknown_level")


class ReportWriter(Protocol):
    """Anything that writes a ``Report`` from ``StudyFindings`` (``GroundedReportWriter``)."""

    def write(self, findings: StudyFindings) -> Report: ...


@dataclass(frozen=True)
class Contradiction:
    """One statement of a report that the findings contradict.

    Attributes:
        level: the level as the findings name it ("L4/L5"), or as the text names it when it is no level of the
            findings ("L5/L6").
        kind: one of ``CONTRADICTION_KINDS``.
        stated: the severity the text states at the level (None for a level named without a readable grade).
        finding: the finding's stated grade (None when withheld, not assessable or not among the findings).
    """

    level: str
    kind: str
    stated: Severity | None = None
    finding: Severity | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONTRADICTION_KINDS:
            raise ValueError(f"unknown contradiction kind {self.kind!r}; expected one of {CONTRADICTION_KINDS}.")

    @property
    def message(self) -> str:
        """The contradiction in words."""
        stated = "no readable grade" if self.stated is None else self.stated.value
        if self.kind == "grade":
            return f"{self.level}: the text states {stated}, the finding is {self.finding.value}"
        if self.kind == "withheld":
            return f"{self.level}: the text states {stated}, the finding's grade is withheld"
        if self.kind == "not_assessable":
            return f"{self.level}: the text states {stated}, the level is not assessable"
        return f"{self.level}: the text names a level that is not among the findings ({stated})"

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "kind": self.kind,
                "stated": None if self.stated is None else self.stated.value,
                "finding": None if self.finding is None else self.finding.value, "message": self.message}


@dataclass
class CheckedText:
    """A generated report after the consistency check.

    Attributes:
        text: the text to show: the generated one when it agrees with the findings, else the fallback writer's.
        original: the text as generated.
        contradictions: what the findings contradict in ``original`` (empty when it was kept).
        fallback: the fallback writer's report when ``original`` was replaced (its sentences carry the evidence),
            else None.
    """

    text: str
    original: str
    contradictions: list[Contradiction] = field(default_factory=list)
    fallback: Report | None = None

    @property
    def rewritten(self) -> bool:
        """True when the generated text was replaced."""
        return self.fallback is not None

    def report(self, study_id: str, writer: str = "learned") -> Report:
        """The ``Report`` to return: the fallback's sentences when rewritten, else the text as one sentence.

        Args:
            study_id: the study.
            writer: the writer the report is credited to (the configured one; ``as_dict`` says whether it was
                replaced).
        """
        if self.fallback is not None:
            return Report(study_id=study_id, writer=writer, text=self.text, sentences=list(self.fallback.sentences))
        return Report(study_id=study_id, writer=writer, text=self.text,
                      sentences=[ReportSentence("report", self.text, [], {})])

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: whether the text was rewritten, why, and the text as generated."""
        return {"rewritten": self.rewritten, "fallback_writer": None if self.fallback is None else self.fallback.writer,
                "contradictions": [c.as_dict() for c in self.contradictions], "original": self.original}


def _check_inputs(text: str, findings: StudyFindings) -> dict[str, LevelFinding]:
    if not isinstance(text, str):
        raise TypeError(f"a report must be a string, got {type(text).__name__}.")
    if not isinstance(findings, StudyFindings):
        raise TypeError(f"findings must be StudyFindings, got {type(findings).__name__}.")
    by_level = {}
    for finding in findings.levels:
        if finding.level in by_level:
            raise ValueError(f"study {findings.study_id!r} has two findings for level {finding.level!r}.")
        by_level[finding.level] = finding
    return by_level


def find_contradictions(text: str, findings: StudyFindings) -> list[Contradiction]:
    """The statements of a report that the findings contradict.

    The text's (level, severity) statements are read with ``extract_statements`` (so summaries such as "no stenosis
    at any lumbar level" state a grade at every level) and compared with each level's finding:

    - a level whose finding is graded must be stated with the finding's ``stated_severity`` ("grade" otherwise);
    - a withheld level must not be stated with any grade ("withheld");
    - a not-assessable level must not be stated with any grade ("not_assessable");
    - every level the text names, graded or not, must be one of the findings' levels ("unknown_level").

    A level the text does not state is not a contradiction.

    Args:
        text: the report.
        findings: the study's findings (``lss.reporting.build_findings``).

    Returns:
        The contradictions, one per level at most: first the findings' levels in their order, then the unknown
        levels in the order the text names them. Empty when the text agrees with the findings.

    Raises:
        TypeError: when ``text`` is not a string or ``findings`` not ``StudyFindings``.
        ValueError: when the findings hold a level twice.
    """
    by_level = _check_inputs(text, findings)
    stated = extract_statements(text)
    found = []
    for level, finding in by_level.items():
        severity = stated.get(level)
        if severity is None:
            continue
        if finding.status == "not_assessable":
            found.append(Contradiction(level, "not_assessable", severity, None))
        elif finding.status == "withheld":
            found.append(Contradiction(level, "withheld", severity, None))
        elif severity is not finding.stated_severity:
            found.append(Contradiction(level, "grade", severity, finding.stated_severity))
    unknown = [level for level in stated if level not in by_level]
    unknown += [level for level in mentioned_levels(text) if level not in by_level and level not in unknown]
    found += [Contradiction(level, "unknown_level", stated.get(level), None) for level in unknown]
    return found


def enforce_consistency(
    text: str, findings: StudyFindings, fallback_writer: ReportWriter | None = None
) -> CheckedText:
    """Keeps a generated report that agrees with the findings; replaces one that does not.

    Args:
        text: the generated report.
        findings: the study's findings.
        fallback_writer: writes the replacement from the findings; default ``GroundedReportWriter()``.

    Returns:
        ``CheckedText``: the text to show (never one the findings contradict), the text as generated, its
        contradictions and, when it was replaced, the fallback writer's report.

    Raises:
        TypeError: when ``text`` is not a string, ``findings`` not ``StudyFindings`` or ``fallback_writer`` has no
            ``write`` method.
        ValueError: when the findings hold a level twice, or the fallback writer's report contradicts the findings
            too (so no consistent text can be returned).
    """
    if fallback_writer is None:
        fallback_writer = GroundedReportWriter()
    elif not callable(getattr(fallback_writer, "write", None)):
        raise TypeError(f"fallback_writer must have a write(findings) method, got {type(fallback_writer).__name__}.")
    contradictions = find_contradictions(text, findings)
    if not contradictions:
        return CheckedText(text=text, original=text)
    fallback = fallback_writer.write(findings)
    left = find_contradictions(fallback.text, findings)
    if left:
        raise ValueError(f"the fallback writer's report of study {findings.study_id!r} contradicts the findings too: "
                         + "; ".join(c.message for c in left) + ".")
    return CheckedText(text=fallback.text, original=text, contradictions=contradictions, fallback=fallback)


def contradiction_rates(texts: Mapping[str, str], findings: Mapping[str, StudyFindings]) -> dict[str, Any]:
    """How often reports state what their findings contradict.

    Args:
        texts: report text per study id.
        findings: findings per study id; the same ids as ``texts``.

    Returns:
        "contradiction_rate": share of studies whose report contradicts its findings at least once.
        "statement_contradiction_rate": share of the reports' statements that are contradicted, a statement being a
            level the text states a grade for or names while it is not among the findings (None without any).
        "studies", "studies_contradicted", "statements", "statements_contradicted": the counts.
        "kinds": contradictions per kind (``CONTRADICTION_KINDS``).

    Raises:
        ValueError: when the ids differ (the message lists them) or there is no study.
        TypeError: as ``find_contradictions``.
    """
    without_findings = sorted(map(str, set(texts) - set(findings)))
    without_text = sorted(map(str, set(findings) - set(texts)))
    if without_findings or without_text:
        raise ValueError("texts and findings must have the same study ids; "
                         f"without findings: {without_findings}, without a text: {without_text}.")
    if not texts:
        raise ValueError("no report to check.")
    studies_contradicted, statements, contradicted = 0, 0, 0
    kinds = dict.fromkeys(CONTRADICTION_KINDS, 0)
    for study_id, text in texts.items():
        found = find_contradictions(text, findings[study_id])
        studies_contradicted += int(bool(found))
        statements += len(set(extract_statements(text)) | {c.level for c in found})
        contradicted += len(found)
        for contradiction in found:
            kinds[contradiction.kind] += 1
    return {
        "contradiction_rate": studies_contradicted / len(texts),
        "statement_contradiction_rate": contradicted / statements if statements else None,
        "studies": len(texts),
        "studies_contradicted": studies_contradicted,
        "statements": statements,
        "statements_contradicted": contradicted,
        "kinds": kinds,
    }
