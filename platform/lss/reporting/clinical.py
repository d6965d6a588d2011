"""Clinical accuracy of a report: the central canal severity it states at each level, read back and compared with the
truth.

NLG scores reward wording; a fluent report that names the wrong grade scores well on them. Here the statements
"level -> central canal severity" are extracted from the free text with regular expressions and scored like a
classifier. The reader understands the sentence styles of ``lss.data.synth.reports.write_report`` ("structured",
"narrative", "concise") and of ``lss.reporting.grounded.GroundedReportWriter``, and common variants of them
("L4-5", "L4-L5", "mild to moderate", "no stenosis at the other levels", "between L1/L2 and L3/L4").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from lss.anatomy import LEVELS, SEVERITIES, Severity, parse_level

__all__ = ["extract_statements", "mentioned_levels", "clinical_accuracy", "NOT_STATED"]

# Column name of the confusion matrix's last column: levels the report says nothing about.
NOT_STATED = "not stated"

_FLAGS = re.IGNORECASE

# A disc level: "L4/L5", "L4-L5", "L4-5", "L4/5", "L5/S1", "L5-S1"; T12/L1 is read but not graded.
_LEVEL = r"\b[LT]\d{1,2}\s*[/\-\u2013]\s*[LS]?\d\b"
_LEVEL_RE = re.compile(r"\b(?P<up>[LT]\d{1,2})\s*[/\-\u2013]\s*(?P<lo>[LS]?)(?P<n>\d)\b", _FLAGS)
_RANGE_RE = re.compile(
    rf"\bbetween\s+(?P<a>{_LEVEL})\s+and\s+(?P<b>{_LEVEL})"
    rf"|(?:\bfrom\s+)?(?P<c>{_LEVEL})\s*(?:to|through|thru|[\-\u2013])\s*(?P<d>{_LEVEL})",
    _FLAGS,
)
_RANGE_MARK = "\x00{}\x00"
_RANGE_MARK_RE = re.compile(r"\x00(\d+)\x00")

# Square brackets hold notes (the grounded writer's "[review: ...]"), parentheses measurements: neither grades.
_BRACKETS_RE = re.compile(r"\[[^\[\]]*\]")
_PARENS_RE = re.compile(r"\([^()]*\)")

# Foraminal, subarticular and lateral-recess stenosis are other conditions; their severity words must not be read
# as the central canal's. Removed with the severity and side words in front of them.
_SEVERITY_WORDS = r"(?:(?:mild|moderate|severe|critical)(?:ly)?(?:\s*(?:to|-)\s*(?:moderate|severe|critical))?\s+)?"
_SIDE = r"(?:(?:left|right|bilateral)(?:\s+and\s+(?:left|right))?\s+)?"
_OTHER_STENOSIS_RE = re.compile(
    rf"{_SEVERITY_WORDS}{_SIDE}(?:neural\s+)?\b(?:foraminal|neuroforaminal|subarticular|lateral\s+recess)\s+"
    r"(?:stenosis|narrowing)"
    rf"|{_SEVERITY_WORDS}\b(?:stenosis|narrowing)\s+of\s+(?:the\s+|both\s+)?{_SIDE}(?:neural\s+)?"
    r"(?:foram(?:en|ina)|lateral\s+recess(?:es)?|subarticular\s+zones?)",
    _FLAGS,
)

# Sentences end at ".", "!" or "?" followed by white space (so "13.3 mm" stays whole) or at a line break.
_SENTENCE_RE = re.compile(r"\n+|(?<=[.!?])\s+")
_SUBCLAUSE_RE = re.compile(r",|\band\b|\bbut\b|\bwhile\b|\bwhereas\b", _FLAGS)

# A clause speaks about the central canal only with one of these; "disc space narrowing" alone does not.
_CANAL_RE = re.compile(r"\bcanal\b|\bstenos[ie]s\b|\bstenotic\b|\b(?:thecal|dural)\s+sac\b", _FLAGS)
# Negation before what it negates: "no (moderate or severe) stenosis", "without stenosis", "L5/S1 no stenosis".
_NEGATED_RE = re.compile(
    r"\b(?:no|not|without|negative\s+for|absence\s+of|free\s+of)\b.*?"
    r"(?:\bstenos[ie]s\b|\bstenotic\b|(?<!space )(?<!disc )\bnarrow(?:ing|ed)\b|\bcanal\b)",
    _FLAGS,
)
_GRADE_RES: tuple[tuple[Severity, re.Pattern[str]], ...] = (
    (Severity.SEVERE, re.compile(r"\b(?:severe(?:ly)?|critical(?:ly)?)\b", _FLAGS)),
    (Severity.MODERATE, re.compile(r"\bmoderate(?:ly)?\b", _FLAGS)),
    (Severity.NORMAL_MILD, re.compile(r"\b(?:mild(?:ly)?|minimal|normal|patent|unremarkable)\b", _FLAGS)),
)
# "at any lumbar level", "at all levels", "at the other levels", "throughout", "elsewhere".
_ALL_LEVELS_RE = re.compile(
    r"\b(?:any|all|every|each|other|remaining)\b(?:\s+\w+){0,2}?\s+levels?\b|\bthroughout\b|\belsewhere\b", _FLAGS
)
# What may remain of a sub-clause that only lists levels ("At L1/L2", "L2/L3", "the L4/L5 level").
_LIST_ONLY_RE = re.compile(r"^(?:\s|\b(?:at|and|or|the|levels?|from|to|in|of)\b|[:.])*$", _FLAGS)


def _level_name(match: re.Match[str]) -> str:
    """The level a match names, normalised ("L4-5" -> "L4/L5"); one that is no disc of a spine ("L5/L6") is kept
    as written, in the same form."""
    upper = match.group("up").upper()
    name = f"{upper}/{(match.group('lo').upper() or upper[0])}{match.group('n')}"
    try:
        return parse_level(name)
    except ValueError:
        return name


def _level_of(match: re.Match[str]) -> str | None:
    level = _level_name(match)
    return level if level in LEVELS else None


def mentioned_levels(text: str) -> list[str]:
    """Every level name in the text, normalised and once each, also those that are no graded level ("T12/L1",
    "L5/L6"): what a report names, whether or not it grades it."""
    names: list[str] = []
    for match in _LEVEL_RE.finditer(text):
        if (name := _level_name(match)) not in names:
            names.append(name)
    return names


def _levels_in(text: str) -> list[str]:
    return [level for level in map(_level_of, _LEVEL_RE.finditer(text)) if level is not None]


def _expand_range(first: str, last: str) -> list[str]:
    ends = _levels_in(first) + _levels_in(last)
    if len(ends) != 2:
        return []
    i, j = sorted(LEVELS.index(level) for level in ends)
    return list(LEVELS[i : j + 1])


def _grade(text: str) -> Severity | None:
    """The severity a piece of a clause states, or None; several grades ("mild to moderate") give the highest."""
    if _NEGATED_RE.search(text):
        return Severity.NORMAL_MILD
    for severity, pattern in _GRADE_RES:  # from the most severe down
        if pattern.search(text):
            return severity
    return None


def _clause_statements(clause: str) -> tuple[dict[str, list[Severity]], dict[str, list[Severity]]]:
    """(specific, summary) statements of one clause, each level -> the severities stated for it."""
    specific: dict[str, list[Severity]] = {}
    summary: dict[str, list[Severity]] = {}
    # Ranges first: their "to"/"and" must not be split, and their levels are summary statements.
    ranges: list[list[str]] = []

    def mark(match: re.Match[str]) -> str:
        first, last = (match.group("a"), match.group("b")) if match.group("a") else (match.group("c"), match.group("d"))
        ranges.append(_expand_range(first, last))
        return _RANGE_MARK.format(len(ranges) - 1)

    clause = _RANGE_RE.sub(mark, clause)
    clause_has_levels = bool(ranges) or bool(_levels_in(clause))

    parts = []  # (levels, range levels, applies to all levels, grade, only lists levels)
    for piece in _SUBCLAUSE_RE.split(clause):
        levels = _levels_in(piece)
        in_ranges = [lv for k in _RANGE_MARK_RE.findall(piece) for lv in ranges[int(k)]]
        rest = _RANGE_MARK_RE.sub(" ", _LEVEL_RE.sub(" ", piece))
        listing = bool(levels or in_ranges) and bool(_LIST_ONLY_RE.match(rest))
        parts.append((levels, in_ranges, bool(_ALL_LEVELS_RE.search(piece)), _grade(piece), listing))

    for index, (levels, in_ranges, everywhere, grade, listing) in enumerate(parts):
        if grade is None and listing:
            # "At L1/L2, L2/L3 and L5/S1 there is no stenosis": a bare list takes the grade that follows it, or,
            # at the end ("severe stenosis at L4/L5 and L5/S1"), the one before it.
            following = [p[3] for p in parts[index + 1 :] if p[3] is not None]
            preceding = [p[3] for p in parts[:index] if p[3] is not None]
            grade = following[0] if following else (preceding[-1] if preceding else None)
        if grade is None:
            continue
        for level in levels:
            specific.setdefault(level, []).append(grade)
        summary_levels = list(in_ranges)
        if everywhere:
            summary_levels += LEVELS
        for level in summary_levels:
            summary.setdefault(level, []).append(grade)

    if not clause_has_levels and _NEGATED_RE.search(clause) and not summary:
        # "No central canal stenosis." names no level and so speaks about all of them.
        summary = {level: [Severity.NORMAL_MILD] for level in LEVELS}
    return specific, summary


def extract_statements(text: str) -> dict[str, Severity]:
    """The central canal severity a free-text lumbar MRI report states at each level.

    The text is cut into sentences (at ".", "!" or "?" followed by a space, so "13.3 mm" stays whole, and at line
    breaks), then clauses (at ";"), then sub-clauses (at ",", "and", "but", ...). A clause counts only if it is about
    the central canal ("canal", "stenosis", "thecal/dural sac"); "Loss of disc height at L2/L3" states nothing.
    A piece with a negation before what it negates ("no significant central canal stenosis", "without stenosis",
    "No moderate or severe ... stenosis") or with "mild", "normal" or "patent" states Normal/Mild; "moderate" states
    Moderate; "severe" or "critical" Severe; a piece with several ("mild to moderate") states the highest. A bare
    list of levels takes the grade of the piece after it ("At L1/L2, L2/L3 there is no stenosis"). Text in square
    brackets (notes, "[review]") and in parentheses (measurements) is ignored, and so are foraminal, subarticular
    and lateral-recess stenosis. A grade with no level ("Severe stenosis.") or a level with no grade ("Central canal
    stenosis at L4/L5.") states nothing.

    Precedence: a statement naming a level ("L4/L5: ...", "... at L4/L5") is specific; one covering a range ("from
    L1/L2 to L5/S1"), all levels ("at any lumbar level", "at the other levels") or no level at all ("No central
    canal stenosis.") is a summary. Specific statements override summaries. Where statements of the same kind
    disagree about a level, the most severe wins: a conservative reading, which never under-calls what the report
    says somewhere.

    Args:
        text: the report.

    Returns:
        level -> severity, for the levels the report states (in ``LEVELS`` order); the others are absent.

    Raises:
        TypeError: when ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"a report must be a string, got {type(text).__name__}.")
    text = _BRACKETS_RE.sub(" ", text)
    previous = None
    while previous != text:  # nested parentheses, inside out
        previous, text = text, _PARENS_RE.sub(" ", text)
    text = _OTHER_STENOSIS_RE.sub(" ", text)

    specific: dict[str, list[Severity]] = {}
    summary: dict[str, list[Severity]] = {}
    for sentence in _SENTENCE_RE.split(text):
        for clause in sentence.split(";"):
            if not _CANAL_RE.search(clause):
                continue
            clause_specific, clause_summary = _clause_statements(clause)
            for target, found in ((specific, clause_specific), (summary, clause_summary)):
                for level, grades in found.items():
                    target.setdefault(level, []).extend(grades)

    out = {}
    for level in LEVELS:
        grades = specific.get(level) or summary.get(level)
        if grades:
            out[level] = max(grades, key=lambda severity: severity.index)
    return out


def clinical_accuracy(
    predicted: Mapping[str, str], truth: Mapping[str, Mapping[str, Severity]]
) -> dict[str, float | int | list[list[int]]]:
    """How well reports state the true central canal severity, level by level.

    Every level with a true severity is scored (a level whose true severity is None is skipped). The report's
    statement at that level (``extract_statements``) is one of the three severities or "not stated", which counts as
    wrong: a miss for the true class and a false positive for none.

    Args:
        predicted: report text per study id.
        truth: per study id, level -> true severity (a ``Severity`` or anything ``Severity.parse`` accepts); the same
            ids as ``predicted``.

    Returns:
        "accuracy": share of scored levels whose stated severity is the true one.
        "macro_f1": mean F1 of the three severities; a severity neither true nor stated anywhere (F1 0/0) is left
            out of the mean.
        "recall_normal_mild", "recall_moderate", "recall_severe": per-severity recall (NaN where it never occurs).
        "stated_fraction": share of scored levels the reports state a severity for.
        "n_levels", "n_studies": what was scored.
        "confusion": 3 x 4 counts, rows the true severity (Normal/Mild, Moderate, Severe), columns the stated one
            (Normal/Mild, Moderate, Severe, not stated).

    Raises:
        TypeError: when a report is not a string or a study's truth is not a mapping.
        ValueError: when the ids differ (the message lists them), a level or severity is unknown, or nothing is
            left to score.
    """
    missing_truth = [key for key in predicted if key not in truth]
    missing_report = [key for key in truth if key not in predicted]
    if missing_truth or missing_report:
        raise ValueError(
            "predicted and truth must have the same study ids; "
            f"without truth: {sorted(map(str, missing_truth))}, without a report: {sorted(map(str, missing_report))}."
        )
    confusion = np.zeros((len(SEVERITIES), len(SEVERITIES) + 1), dtype=np.int64)
    for study_id, text in predicted.items():
        levels = truth[study_id]
        if not isinstance(levels, Mapping):
            raise TypeError(f"the truth of {study_id!r} must map level -> severity, got {type(levels).__name__}.")
        if not isinstance(text, str):
            raise TypeError(f"the report of {study_id!r} must be a string, got {type(text).__name__}.")
        stated = extract_statements(text)
        for level, severity in levels.items():
            if severity is None:
                continue
            key = parse_level(level)
            if key not in LEVELS:
                raise ValueError(f"study {study_id!r}: level {level!r} is not graded; expected one of {LEVELS}.")
            row = Severity.parse(severity).index
            column = stated[key].index if key in stated else len(SEVERITIES)
            confusion[row, column] += 1

    n_levels = int(confusion.sum())
    if n_levels == 0:
        raise ValueError("no level with a true severity to score.")
    correct = np.diag(confusion[:, : len(SEVERITIES)])
    true_counts = confusion.sum(axis=1)
    stated_counts = confusion[:, : len(SEVERITIES)].sum(axis=0)
    f1s = []
    recalls = {}
    for k, severity in enumerate(SEVERITIES):
        recall = correct[k] / true_counts[k] if true_counts[k] else float("nan")
        precision = correct[k] / stated_counts[k] if stated_counts[k] else 0.0
        recalls[severity] = float(recall)
        if true_counts[k] or stated_counts[k]:
            r = 0.0 if np.isnan(recall) else recall
            f1s.append(0.0 if precision + r == 0 else 2 * precision * r / (precision + r))

    scores: dict[str, float | int | list[list[int]]] = {
        "accuracy": float(correct.sum() / n_levels),
        "macro_f1": float(np.mean(f1s)),
    }
    for severity in SEVERITIES:
        scores[f"recall_{severity.name.lower()}"] = recalls[severity]
    scores.update(
        stated_fraction=float(1.0 - confusion[:, -1].sum() / n_levels),
        n_levels=n_levels,
        n_studies=len(predicted),
        confusion=confusion.tolist(),
    )
    return scores
