"""What an answer to a scan with no lumbar spine may look like: a coded refusal, or every level "not assessable"
with its reasons and no stated grade, in the findings and in the report text. Shared by the CLI and HTTP tests."""

from __future__ import annotations

import re
from typing import Any

from lss.anatomy import LEVELS, Severity
from lss.data.errors import ErrorCode
from lss.reporting.clinical import extract_statements

__all__ = ["GRADE_FIELDS", "assert_every_level_not_assessable", "error_code_in", "level_findings"]

GRADE_FIELDS: tuple[str, ...] = ("severity", "stated_severity", "model_severity")
_CODE_RE = re.compile(r"\[([a-z_]+)\]")


def level_findings(document: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study-level findings and the per-level findings of a report.json document or an HTTP answer.

    report.json holds them under "findings" (with "levels"); an HTTP answer under "findings" too, or (before it
    had one) as top-level "levels".
    """
    findings = document.get("findings")
    if isinstance(findings, dict) and "levels" in findings:
        return findings, findings["levels"]
    return document, document["levels"]


def assert_every_level_not_assessable(document: dict[str, Any], report_text: str, *,
                                      stated_field: str = "stated_severity") -> None:
    """Every level is "assessable": false with reasons and no grade in any grade field, the study is not assessable
    with reasons, and the report says "not assessable" and states no Moderate or Severe grade anywhere.

    Args:
        document: report.json or the HTTP answer.
        report_text: the report as written.
        stated_field: the level field that holds the stated grade ("stated_severity" in report.json; the HTTP
            answer's "severity" is the stated grade): it must be there, and null. Every other grade field present
            ("severity", "stated_severity", "model_severity") must be null too.
    """
    findings, levels = level_findings(document)
    assert [level["level"] for level in levels] == list(LEVELS)
    stated = extract_statements(report_text)
    graded = {level: severity.value for level, severity in stated.items()
              if severity in (Severity.MODERATE, Severity.SEVERE)}
    assert not graded, f"the report states a grade: {graded}\n{report_text}"
    for level in levels:
        name = level["level"]
        assert "assessable" in level, f"{name}: no 'assessable' field in {sorted(level)}"
        assert level["assessable"] is False, f"{name} is called assessable on a scan with no lumbar spine: {level}"
        reasons = level.get("not_assessable_reasons")
        assert isinstance(reasons, list) and reasons and all(isinstance(r, str) and r.strip() for r in reasons), \
            f"{name}: not assessable without a reason: {reasons!r}"
        assert stated_field in level, f"{name}: no {stated_field!r} field in {sorted(level)}"
        grades = {key: level[key] for key in GRADE_FIELDS if key in level}
        assert all(value is None for value in grades.values()), f"{name}: a grade is given: {grades}"
        if "status" in level:
            assert level["status"] == "not_assessable", f"{name}: status {level['status']!r}"
    assert findings.get("assessable") is False, f"the study is called assessable: {findings.get('assessable')!r}"
    reasons = findings.get("not_assessable_reasons")
    assert isinstance(reasons, list) and reasons and all(isinstance(r, str) and r.strip() for r in reasons), \
        f"the study is not assessable without a reason: {reasons!r}"
    assert "not assessable" in report_text.lower(), f"the report does not say 'not assessable':\n{report_text}"


def error_code_in(text: str) -> str | None:
    """The first ``StudyError`` code printed in ``text`` as "[code]" (a valid ``ErrorCode``), else None."""
    for match in _CODE_RE.finditer(text):
        if match.group(1) in {code.value for code in ErrorCode}:
            return match.group(1)
    return None
