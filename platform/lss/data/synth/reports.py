"""Reference radiology reports written from ground-truth findings, in several radiologist styles.

These are the targets for report generation. Styles differ in wording, order and level of detail, but every style
states each graded level's central canal severity with the words "normal"/"mild"/"no ... stenosis", "moderate" or
"severe" next to the level's name, so that clinical statements can be extracted and scored later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lss.anatomy import CUTOFFS, LEVELS, Severity, format_area_mm2, format_diameter_mm
from lss.data.manifest import LevelRecord

__all__ = ["REPORT_STYLES", "write_report"]

_TECHNIQUE = (
    "Sagittal and axial T2-weighted images of the lumbar spine.",
    "Multiplanar T2-weighted MRI of the lumbar spine (sagittal series, axial stacks through L1/L2 to L5/S1).",
    "MRI lumbar spine without contrast: sagittal T2 and angled axial T2 through each disc level.",
)

_NORMAL = (
    "no significant central canal stenosis",
    "no central canal stenosis",
    "the central canal is patent, without stenosis",
)
_MILD = ("mild narrowing of the central canal", "mild central canal stenosis")
_MODERATE = ("moderate central canal stenosis", "moderate narrowing of the central canal")
_SEVERE = ("severe central canal stenosis", "severe narrowing of the central canal")


def _severity_phrase(level: LevelRecord, rng: np.random.Generator) -> str:
    severity = level.severity or Severity.NORMAL_MILD
    if severity is Severity.SEVERE:
        return str(rng.choice(_SEVERE))
    if severity is Severity.MODERATE:
        return str(rng.choice(_MODERATE))
    # Normal/Mild: "mild" where the sac is in the relative-stenosis band, otherwise normal.
    if level.area_mm2 is not None and level.area_mm2 < CUTOFFS.relative_area_mm2:
        return str(rng.choice(_MILD))
    return str(rng.choice(_NORMAL))


def _causes(level: LevelRecord, rng: np.random.Generator) -> list[str]:
    findings = level.findings
    causes = []
    if findings.get("disc_bulging"):
        causes.append(str(rng.choice(["a disc bulge", "a broad-based disc bulge", "posterior disc bulging"])))
    if findings.get("lf_thickening"):
        causes.append(str(rng.choice(["ligamentum flavum thickening", "hypertrophy of the ligamenta flava"])))
    return causes


def _disc_phrase(level: LevelRecord, rng: np.random.Generator) -> str | None:
    findings = level.findings
    parts = []
    if findings.get("dark_disc"):
        parts.append(str(rng.choice(["disc desiccation", "loss of T2 disc signal"])))
    if findings.get("disc_narrowing"):
        parts.append(str(rng.choice(["loss of disc height", "disc space narrowing"])))
    return " and ".join(parts) if parts else None


def _measure_phrase(level: LevelRecord) -> str | None:
    bits = []
    if level.area_mm2 is not None:
        bits.append(f"dural sac area {format_area_mm2(level.area_mm2)}")
    if level.ap_mm is not None:
        bits.append(f"AP diameter {format_diameter_mm(level.ap_mm)}")
    return ", ".join(bits) if bits else None


def _ordered(levels: Sequence[LevelRecord]) -> list[LevelRecord]:
    by_name = {lv.level: lv for lv in levels}
    return [by_name[name] for name in LEVELS if name in by_name]


def _impression(levels: list[LevelRecord], rng: np.random.Generator) -> str:
    abnormal = [lv for lv in levels if lv.severity in (Severity.MODERATE, Severity.SEVERE)]
    if not abnormal:
        return str(rng.choice([
            "No significant central canal stenosis at any lumbar level.",
            "No moderate or severe central canal stenosis from L1/L2 to L5/S1.",
        ]))
    abnormal.sort(key=lambda lv: (-lv.severity.index, LEVELS.index(lv.level)))
    items = [f"{lv.severity.value.lower()} central canal stenosis at {lv.level}" for lv in abnormal]
    text = "; ".join(items)
    return text[0].upper() + text[1:] + "."


def _structured(levels: list[LevelRecord], rng: np.random.Generator) -> str:
    lines = ["TECHNIQUE: " + str(rng.choice(_TECHNIQUE)), "", "FINDINGS:"]
    for lv in levels:
        sentence = f"{lv.level}: {_severity_phrase(lv, rng).capitalize()}"
        causes = _causes(lv, rng)
        if causes and lv.severity is not Severity.NORMAL_MILD:
            sentence += " due to " + " and ".join(causes)
        measure = _measure_phrase(lv)
        if measure:
            sentence += f" ({measure})"
        disc = _disc_phrase(lv, rng)
        if disc:
            sentence += f". {disc.capitalize()}"
        lines.append(sentence + ".")
    lines += ["", "IMPRESSION:", _impression(levels, rng)]
    return "\n".join(lines)


def _narrative(levels: list[LevelRecord], rng: np.random.Generator) -> str:
    sentences = [str(rng.choice(_TECHNIQUE))]
    normal = [lv for lv in levels if lv.severity in (None, Severity.NORMAL_MILD)]
    abnormal = [lv for lv in levels if lv not in normal]
    for lv in abnormal:
        causes = _causes(lv, rng)
        cause = (" secondary to " + " and ".join(causes)) if causes else ""
        measure = _measure_phrase(lv)
        measure = f", with a {measure}" if measure else ""
        sentences.append(f"At {lv.level} there is {_severity_phrase(lv, rng)}{cause}{measure}.")
    if normal:
        names = ", ".join(lv.level for lv in normal)
        sentences.append(f"At {names} there is {str(rng.choice(_NORMAL))}.")
    discs = [(lv.level, _disc_phrase(lv, rng)) for lv in levels]
    discs = [(name, phrase) for name, phrase in discs if phrase]
    if discs:
        sentences.append(" ".join(f"{phrase.capitalize()} at {name}." for name, phrase in discs))
    sentences.append("Impression: " + _impression(levels, rng))
    return " ".join(sentences)


def _concise(levels: list[LevelRecord], rng: np.random.Generator) -> str:
    parts = []
    for lv in reversed(levels):  # caudal first: some readers dictate from L5/S1 up
        severity = lv.severity or Severity.NORMAL_MILD
        word = {Severity.NORMAL_MILD: "no stenosis", Severity.MODERATE: "moderate stenosis",
                Severity.SEVERE: "severe stenosis"}[severity]
        area = f", {format_area_mm2(lv.area_mm2)}" if lv.area_mm2 is not None else ""
        parts.append(f"{lv.level} {word}{area}")
    return "Central canal: " + "; ".join(parts) + ". " + _impression(levels, rng)


REPORT_STYLES: dict[str, Callable[[list[LevelRecord], np.random.Generator], str]] = {
    "structured": _structured,
    "narrative": _narrative,
    "concise": _concise,
}


def write_report(levels: Sequence[LevelRecord], style: str, rng: np.random.Generator) -> str:
    """A radiology report of the graded levels in one style.

    Args:
        levels: per-level ground truth (severity, measurements, findings); any order.
        style: one of ``REPORT_STYLES``.
        rng: drives the wording; the same seed gives the same text.

    Raises:
        ValueError: for an unknown style.
    """
    if style not in REPORT_STYLES:
        raise ValueError(f"unknown report style {style!r}; expected one of {sorted(REPORT_STYLES)}.")
    return REPORT_STYLES[style](_ordered(levels), rng)
