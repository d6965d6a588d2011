"""Clinical statements read back from reports: every synthetic style and the grounded writer, exactly, at every level
and severity; precedence and conflicts; clinical accuracy of right, fluent-but-wrong and incomplete reports."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lss.anatomy import CUTOFFS, LEVELS, SEVERITIES, Severity
from lss.data.manifest import LevelRecord
from lss.data.synth.reports import REPORT_STYLES, write_report
from lss.reporting.clinical import clinical_accuracy, extract_statements
from lss.reporting.findings import LevelFinding, StudyFindings
from lss.reporting.grounded import GroundedReportWriter
from lss.reporting.measurements import LevelMeasurements

N, M, S = SEVERITIES
FINDING_KEYS = ("disc_bulging", "lf_thickening", "dark_disc", "disc_narrowing")


def _level(name: str, severity: Severity, rng: np.random.Generator) -> LevelRecord:
    """A level whose measurements fit its severity; Normal/Mild falls in the relative band ("mild") half the time."""
    if severity is S:
        area = rng.uniform(30, CUTOFFS.severe_area_mm2)
    elif severity is M:
        area = rng.uniform(CUTOFFS.severe_area_mm2, CUTOFFS.stenosis_area_mm2)
    elif rng.random() < 0.5:
        area = rng.uniform(CUTOFFS.stenosis_area_mm2, CUTOFFS.relative_area_mm2)
    else:
        area = rng.uniform(CUTOFFS.relative_area_mm2, 220)
    return LevelRecord(
        level=name,
        severity=severity,
        area_mm2=None if rng.random() < 0.1 else float(area),
        ap_mm=None if rng.random() < 0.1 else float(rng.uniform(6, 16)),
        findings={key: bool(rng.random() < 0.5) for key in FINDING_KEYS},
    )


def _studies() -> list[list[LevelRecord]]:
    rng = np.random.default_rng(2024)
    plans = [[SEVERITIES[(k + j) % 3] for j in range(len(LEVELS))] for k in range(3)]  # every severity at every level
    plans += [[N] * len(LEVELS)] * 4  # all normal: the global impressions
    plans += [[SEVERITIES[i] for i in rng.choice(3, size=len(LEVELS), p=(0.5, 0.25, 0.25))] for _ in range(60)]
    return [[_level(name, severity, rng) for name, severity in zip(LEVELS, plan, strict=True)] for plan in plans]


STUDIES = _studies()
SEEDS = (0, 1, 2)


def _truth(levels: list[LevelRecord]) -> dict[str, Severity]:
    return {lv.level: lv.severity for lv in levels}


@pytest.mark.parametrize("style", sorted(REPORT_STYLES))
def test_every_synthetic_style_reads_back_exactly(style):
    failures, texts = [], []
    for index, levels in enumerate(STUDIES):
        for seed in SEEDS:
            text = write_report(levels, style, np.random.default_rng(1000 * index + seed))
            texts.append(text)
            if extract_statements(text) != _truth(levels):
                failures.append((index, seed, _truth(levels), extract_statements(text), text))
    assert not failures, f"{len(failures)} of {len(texts)} {style} reports misread; first: {failures[0]}"
    covered = {level: {lv.severity for levels in STUDIES for lv in levels if lv.level == level} for level in LEVELS}
    assert all(found == set(SEVERITIES) for found in covered.values())
    joined = "\n".join(texts)
    # The wordings that make the reader's job hard were all generated (the test is not passing vacuously).
    for phrase in ("No moderate or severe central canal stenosis from L1/L2 to L5/S1",
                   "No significant central canal stenosis at any lumbar level"):
        assert phrase in joined
    if style == "structured":  # the narrative style words every Normal/Mild level as normal
        assert "Mild narrowing of the central canal" in joined and "Mild central canal stenosis" in joined
    if style != "concise":
        assert "patent, without stenosis" in joined
        assert "disc height" in joined or "disc space narrowing" in joined
    if style == "narrative":
        assert re.search(r"At L\d/L\d, L\d/[LS]\d(, L\d/[LS]\d)* there is", joined)  # a list of normal levels


def test_subset_of_levels_reads_back():
    rng = np.random.default_rng(7)
    for index, levels in enumerate(STUDIES[:30]):
        chosen = [lv for lv in levels if rng.random() < 0.6] or levels[:1]
        for style in REPORT_STYLES:
            stated = extract_statements(write_report(chosen, style, np.random.default_rng(index)))
            assert {lv.level: stated.get(lv.level) for lv in chosen} == _truth(chosen), style


def test_grounded_writer_reads_back_with_notes_in_brackets():
    severities = {"L1/L2": N, "L2/L3": N, "L3/L4": M, "L4/L5": S, "L5/S1": N}
    areas = {"L1/L2": 150.4, "L2/L3": 118.0, "L3/L4": 88.2, "L4/L5": 61.7, "L5/S1": None}
    findings = []
    for level, severity in severities.items():
        probabilities = {s.value: (0.8 if s is severity else 0.1) for s in SEVERITIES}
        measured = LevelMeasurements(level=level, area_mm2=areas[level], ap_mm=None if areas[level] is None else 13.3,
                                     sagittal_ap_mm=11.4)
        finding = LevelFinding(level=level, severity=severity, probabilities=probabilities, rule_severity=None,
                               measurements=measured, lower_confidence=areas[level] is None)
        if level == "L2/L3":  # the bracketed reason names a severe grade: it must not be read as a statement
            finding.review = True
            finding.review_reason = "the model grades Normal/Mild but the measured dural sac (60 mm2) grades Severe"
        findings.append(finding)
    study = StudyFindings(study_id="g1", levels=findings, has_axial=True,
                          notes=["No axial images at L5/S1: read from the sagittal view only (lower-confidence)."])
    text = GroundedReportWriter().write(study).text
    assert "[review:" in text and "13.5 mm" in text and "please review" in text.lower()
    assert extract_statements(text) == severities

    # The same disagreement as a measurement conflict: the grade is withheld, and the reason (which names two grades)
    # states nothing.
    findings[1].measurement_conflict = True
    text = GroundedReportWriter().write(study).text
    assert ("L2/L3: grade withheld [the model grades Normal/Mild but the measured dural sac (60 mm2) grades "
            "Severe") in text
    assert "Grade withheld where the model and the measurements disagree: L2/L3; please review." in text
    assert extract_statements(text) == {lv: s for lv, s in severities.items() if lv != "L2/L3"}


def test_grounded_style_text_with_review_marker():
    text = (
        "TECHNIQUE: Sagittal and axial T2-weighted images of the lumbar spine.\n\nFINDINGS:\n"
        "L1/L2: No significant central canal stenosis (dural sac area 151 mm2, AP diameter 13.3 mm).\n"
        "L2/L3: Mild narrowing of the central canal (dural sac area 118 mm2, AP diameter 11.2 mm) [review].\n"
        "L3/L4: Moderate central canal stenosis (severe by AP diameter alone).\n"
        "L4/L5: Severe central canal stenosis (dural sac area 62 mm2, AP diameter 7.9 mm).\n"
        "L5/S1: No significant central canal stenosis.\n\nIMPRESSION:\n"
        "Severe central canal stenosis at L4/L5; moderate central canal stenosis at L3/L4.\n"
        "[Severe central canal stenosis at L2/L3 by measurement: please review.]"
    )
    assert extract_statements(text) == {"L1/L2": N, "L2/L3": N, "L3/L4": M, "L4/L5": S, "L5/S1": N}


def test_disc_sentences_and_technique_state_nothing():
    text = ("Multiplanar T2-weighted MRI of the lumbar spine (sagittal series, axial stacks through L1/L2 to L5/S1). "
            "MRI lumbar spine without contrast: sagittal T2 and angled axial T2 through each disc level. "
            "Loss of disc height at L2/L3. Disc desiccation and disc space narrowing at L4/L5. "
            "Severe loss of disc height at L1/L2. Moderate facet arthropathy at L5/S1. "
            "Severe central canal stenosis.")  # a grade without a level states nothing either
    assert extract_statements(text) == {}


def test_specific_statements_override_summaries():
    text = ("L3/L4: Moderate central canal stenosis. "
            "Impression: No moderate or severe central canal stenosis from L1/L2 to L5/S1.")
    assert extract_statements(text) == {"L1/L2": N, "L2/L3": N, "L3/L4": M, "L4/L5": N, "L5/S1": N}
    text = "Severe central canal stenosis at L4/L5. No central canal stenosis at the other levels."
    assert extract_statements(text) == {"L1/L2": N, "L2/L3": N, "L3/L4": N, "L4/L5": S, "L5/S1": N}
    assert extract_statements("No central canal stenosis.") == dict.fromkeys(LEVELS, N)


def test_conflicting_specific_statements_take_the_most_severe():
    text = "L4/L5: Mild narrowing of the central canal.\nIMPRESSION:\nSevere central canal stenosis at L4/L5."
    assert extract_statements(text) == {"L4/L5": S}


def test_common_variants():
    text = ("Moderate to severe central canal stenosis at L4-5 and L5-S1; severe left foraminal stenosis at L3-L4. "
            "Between L1/L2 and L2/L3 the canal is patent. At L3/L4, no central canal stenosis; "
            "moderate narrowing of the right neural foramen at L2/L3.")
    assert extract_statements(text) == {"L1/L2": N, "L2/L3": N, "L3/L4": N, "L4/L5": S, "L5/S1": S}
    # A decimal point ends no sentence: the level and its grade stay together.
    assert extract_statements("At L4/L5 the AP diameter is 7.9 mm with severe central canal stenosis.") == {"L4/L5": S}


def test_extract_rejects_non_text():
    with pytest.raises(TypeError, match="must be a string"):
        extract_statements(None)  # type: ignore[arg-type]


def _reference_reports(studies: list[list[LevelRecord]]) -> dict[str, str]:
    return {f"s{i}": write_report(levels, "structured", np.random.default_rng(i)) for i, levels in enumerate(studies)}


def test_reference_reports_score_perfectly():
    truth = {f"s{i}": _truth(levels) for i, levels in enumerate(STUDIES)}
    scores = clinical_accuracy(_reference_reports(STUDIES), truth)
    assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0 and scores["stated_fraction"] == 1.0
    assert scores["recall_normal_mild"] == scores["recall_moderate"] == scores["recall_severe"] == 1.0
    assert scores["n_studies"] == len(STUDIES) and scores["n_levels"] == len(STUDIES) * len(LEVELS)
    confusion = np.asarray(scores["confusion"])
    assert confusion.shape == (3, 4)
    assert np.array_equal(confusion[:, :3], np.diag(confusion.sum(axis=1))) and confusion[:, 3].sum() == 0


def test_fluent_but_wrong_reports_score_low():
    # Study k's truth is the rotation k of the severities, so the report of study k + 1 is wrong at every level.
    studies = STUDIES[:3]
    reports = _reference_reports(studies)
    truth = {f"s{i}": _truth(levels) for i, levels in enumerate(studies)}
    swapped = {f"s{i}": reports[f"s{(i + 1) % 3}"] for i in range(3)}
    right, wrong = clinical_accuracy(reports, truth), clinical_accuracy(swapped, truth)
    assert right["accuracy"] == 1.0
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert wrong["stated_fraction"] == 1.0  # fluent: every level is stated, just wrongly
    assert np.trace(np.asarray(wrong["confusion"])[:, :3]) == 0


def test_missing_level_counts_as_not_stated_and_hand_computed_metrics():
    truth = {"a": {"L1/L2": N, "L2/L3": M, "L3/L4": S}}
    report = {"a": "L1/L2: No significant central canal stenosis. L2/L3: Severe central canal stenosis."}
    scores = clinical_accuracy(report, truth)
    assert scores["confusion"] == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["stated_fraction"] == pytest.approx(2 / 3)
    assert (scores["recall_normal_mild"], scores["recall_moderate"], scores["recall_severe"]) == (1.0, 0.0, 0.0)
    assert scores["macro_f1"] == pytest.approx(1 / 3)  # F1: Normal/Mild 1, Moderate 0, Severe 0
    assert scores["n_levels"] == 3 and scores["n_studies"] == 1


def test_absent_class_and_ungraded_levels():
    truth = {"a": {"L1/L2": N, "L2/L3": M, "L3/L4": None}}  # None: not graded, not scored
    report = {"a": "L1/L2: no stenosis. L2/L3: moderate central canal stenosis."}
    scores = clinical_accuracy(report, truth)
    assert scores["n_levels"] == 2 and scores["accuracy"] == 1.0
    assert scores["macro_f1"] == 1.0  # Severe is neither true nor stated anywhere: left out of the mean
    assert math.isnan(scores["recall_severe"])


def test_clinical_accuracy_validates_input():
    with pytest.raises(ValueError, match=r"same study ids.*without truth: \['b'\].*without a report: \['c'\]"):
        clinical_accuracy({"a": "", "b": ""}, {"a": {"L4/L5": S}, "c": {"L4/L5": S}})
    with pytest.raises(ValueError, match="not graded"):
        clinical_accuracy({"a": ""}, {"a": {"T12/L1": S}})
    with pytest.raises(ValueError, match="unknown severity"):
        clinical_accuracy({"a": ""}, {"a": {"L4/L5": "terrible"}})
    with pytest.raises(ValueError, match="nothing|no level"):
        clinical_accuracy({"a": ""}, {"a": {}})
    with pytest.raises(TypeError, match="report of 'a' must be a string"):
        clinical_accuracy({"a": None}, {"a": {"L4/L5": S}})  # type: ignore[dict-item]
