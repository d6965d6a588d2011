"""Findings, the grounded report writer and the evidence images, on a prediction of known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_prediction import CANAL_Y, DISC_Z, known_prediction
from PIL import Image

from lss.anatomy import LEVELS, SEVERITIES, Severity, format_area_mm2
from lss.reporting import GroundedReportWriter, build_findings
from lss.reporting.clinical import extract_statements
from lss.reporting.evidence import image_id, write_evidence_images

# Sac radii 9, 8, 6, 4.5, 8.5 mm: areas ~254, 201, 113, 64, 227 mm2 -> rule grades N, N, N (mild band), Severe, N.
RULE = [Severity.NORMAL_MILD, Severity.NORMAL_MILD, Severity.NORMAL_MILD, Severity.SEVERE, Severity.NORMAL_MILD]


def _probs(grades: list[Severity]) -> np.ndarray:
    probs = np.full((len(LEVELS), 3), 0.05)
    for li, grade in enumerate(grades):
        probs[li, grade.index] = 0.9
    return probs


def test_rule_grade_and_model_grade_disagreeing_withholds_the_grade():
    findings = build_findings(known_prediction(probs=_probs([Severity.NORMAL_MILD] * 5)))
    assert [f.rule_severity for f in findings.levels] == RULE
    flagged = [f.level for f in findings.levels if f.review]
    assert flagged == ["L4/L5"]
    l45 = findings.level("L4/L5")
    assert l45.severity is Severity.NORMAL_MILD  # the model's grade is kept as the model's...
    assert l45.measurement_conflict and l45.status == "withheld" and l45.stated_severity is None  # ...not stated
    assert "Severe" in l45.review_reason and "mm2" in l45.review_reason  # ...and the disagreement said
    assert l45.withheld_reason == l45.review_reason
    as_json = l45.as_dict()
    assert as_json["severity"] is None and as_json["model_severity"] == "Normal/Mild"
    assert as_json["status"] == "withheld" and as_json["withheld_reason"] == l45.review_reason
    report = GroundedReportWriter().write(findings).text
    assert "L4/L5" not in extract_statements(report)
    assert "no significant central canal stenosis at any lumbar level" not in report.lower()  # L4/L5 is not graded
    agreeing = build_findings(known_prediction(probs=_probs(RULE)))
    assert not any(f.review or f.withheld for f in agreeing.levels)


def test_the_sagittal_ap_compares_stenosis_only():
    """Without an axial area the rule grade is the sagittal AP's, which says Moderate for any AP under 10 mm: a model
    grade of Severe there is stenosis as well, not a contradiction; Normal/Mild is."""
    absent = [True, True, True, False, True]
    for model, conflict in ((Severity.SEVERE, False), (Severity.MODERATE, False), (Severity.NORMAL_MILD, True)):
        prediction = known_prediction(probs=_probs([*RULE[:3], model, RULE[4]]), axial_present=absent)
        z = DISC_Z[LEVELS.index("L4/L5")]
        prediction.sagittal_mask[CANAL_Y[0]:CANAL_Y[0] + 8, z - 12:z + 12] = 0  # the canal narrowed to 8 mm AP
        l45 = build_findings(prediction).level("L4/L5")
        assert l45.measurements.sagittal_ap_mm == pytest.approx(8.0, abs=0.5)
        assert l45.rule_source == "sagittal_ap" and l45.rule_severity is Severity.MODERATE
        assert l45.measurement_conflict is conflict and (l45.stated_severity is None) is conflict


def test_a_level_without_axial_images_is_lower_confidence():
    findings = build_findings(known_prediction(axial_present=[True, True, False, True, True], probs=_probs(RULE)))
    l34 = findings.level("L3/L4")
    # Without an axial area the rule grade comes from the sagittal canal AP (12 mm: Normal/Mild, as the model says).
    assert l34.lower_confidence and l34.rule_source == "sagittal_ap" and not l34.review
    assert l34.rule_severity is Severity.NORMAL_MILD
    assert any("L3/L4" in note for note in findings.notes)
    text = GroundedReportWriter().write(findings).text
    line = next(s for s in text.splitlines() if s.startswith("L3/L4:"))
    assert "lower confidence" in line and "mm2" not in line

    none = build_findings(known_prediction(axial_present=[False] * 5))
    assert not none.has_axial and all(f.lower_confidence for f in none.levels)
    report = GroundedReportWriter().write(none)
    assert "no axial images" in report.text.lower()


def test_report_sections_order_and_evidence():
    findings = build_findings(known_prediction(probs=_probs(RULE)))
    report = GroundedReportWriter().write(findings)
    lines = report.text.splitlines()
    assert lines[0].startswith("TECHNIQUE:") and "FINDINGS:" in lines and "IMPRESSION:" in lines
    level_lines = [line for line in lines if line[:5] in LEVELS]
    assert [line[:5] for line in level_lines] == list(LEVELS)  # anatomical order, one line each
    area = findings.level("L4/L5").measurements.area_mm2
    assert area == pytest.approx(np.pi * 4.5**2, rel=0.1)
    # As radiologists write it: the area to the nearest 5 mm2, the diameter to 0.5 mm.
    assert f"Severe central canal stenosis (dural sac area {format_area_mm2(area)}" in level_lines[3]
    assert format_area_mm2(area) == f"{5 * np.floor(area / 5 + 0.5):.0f} mm2"
    assert "Mild narrowing" in level_lines[2]  # 113 mm2: Normal/Mild, in the relative-stenosis band
    impression = lines[lines.index("IMPRESSION:") + 1]
    assert impression == "Severe central canal stenosis at L4/L5."
    for sentence in report.sentences:
        if sentence.section == "findings":
            (level,) = sentence.levels
            evidence = sentence.evidence[level]
            assert evidence["severity"] == findings.level(level).severity.value
            assert evidence["area_mm2"] == findings.level(level).measurements.area_mm2
            assert evidence["axial_slice"] == {"series": f"ax{LEVELS.index(level)}", "slice": 2}


def test_the_concise_style_is_one_line_from_l5_s1_up_with_the_areas():
    findings = build_findings(known_prediction(probs=_probs(RULE)))
    text = GroundedReportWriter("concise").write(findings).text
    areas = [format_area_mm2(f.measurements.area_mm2) for f in findings.levels]
    # 113 mm2 is Normal/Mild in the relative-stenosis band: "mild", never "no stenosis".
    assert text == (f"Central canal: L5/S1 no stenosis, {areas[4]}; L4/L5 severe stenosis, {areas[3]}; "
                    f"L3/L4 mild stenosis, {areas[2]}; L2/L3 no stenosis, {areas[1]}; L1/L2 no stenosis, {areas[0]}. "
                    "Severe central canal stenosis at L4/L5.")
    assert extract_statements(text) == dict(zip(LEVELS, RULE, strict=True))
    disagreeing = build_findings(known_prediction(probs=_probs([Severity.NORMAL_MILD] * 5)))
    withheld = GroundedReportWriter("concise").write(disagreeing)
    assert "L4/L5 grade withheld [" in withheld.text and "L4/L5" not in extract_statements(withheld.text)
    with pytest.raises(ValueError, match="narrative"):
        GroundedReportWriter("narrative")


@pytest.mark.parametrize("style", ["structured", "concise"])
@pytest.mark.parametrize("seed", range(6))
def test_the_report_states_exactly_the_findings(seed, style):
    """Whatever the grades, every graded level is stated once with the model's grade, and a level whose measurements
    contradict the model is not stated at all: nothing more, nothing else."""
    rng = np.random.default_rng(seed)
    grades = [SEVERITIES[i] for i in rng.integers(0, 3, len(LEVELS))]
    present = rng.random(len(LEVELS)) > 0.3
    radii = rng.uniform(3.5, 10.0, len(LEVELS))
    findings = build_findings(known_prediction(sac_radius_mm=radii, probs=_probs(grades), axial_present=present))
    writer = GroundedReportWriter(style)
    report = writer.write(findings)
    stated = {f.level: f.stated_severity for f in findings.levels if f.stated_severity is not None}
    assert stated == {lv: g for lv, g, f in zip(LEVELS, grades, findings.levels, strict=True)
                      if not f.measurement_conflict}
    assert extract_statements(report.text) == stated
    assert writer.write(findings).text == report.text  # deterministic
    impression = " ".join(s.text for s in report.sentences if s.section == "impression").lower()
    assert impression in " ".join(report.text.split()).lower()
    for level, grade in zip(LEVELS, grades, strict=True):
        if grade is Severity.NORMAL_MILD or level not in stated:
            for word in ("moderate", "severe"):
                assert f"{word} central canal stenosis at {level.lower()}" not in impression


@pytest.mark.heavy
def test_evidence_images_are_written_and_linked(tmp_path):
    prediction = known_prediction(probs=_probs(RULE), axial_present=[True, True, True, False, True])
    findings = build_findings(prediction)
    images = write_evidence_images(prediction, findings, tmp_path)
    expected = {"sagittal", "montage"} | {image_id(k, lv) for k in ("axial", "attention") for lv in LEVELS}
    assert set(images) == expected
    for path in images.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50
    for finding in findings.levels:
        assert image_id("axial", finding.level) in finding.evidence and "sagittal" in finding.evidence
    report = GroundedReportWriter().write(findings)
    level_sentence = next(s for s in report.sentences if s.levels == ["L1/L2"])
    assert "axial_L1-L2" in level_sentence.evidence["L1/L2"]["images"]


@pytest.mark.heavy
def test_evidence_images_render_the_same_from_several_threads_at_once():
    # The Reporter renders on GET in worker threads: concurrent renders must not share figure state.
    from concurrent.futures import ThreadPoolExecutor

    from lss.reporting.evidence import all_evidence_ids, render_evidence_png

    prediction = known_prediction(probs=_probs(RULE))
    findings = build_findings(prediction)
    keys = [key for key in all_evidence_ids() if key != "montage"] * 2
    serial = {key: render_evidence_png(prediction, findings, key) for key in set(keys)}
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda key: (key, render_evidence_png(prediction, findings, key)), keys))
    assert all(png == serial[key] for key, png in parallel)


def test_every_sagittal_slice_renders_and_only_the_segmented_one_carries_masks():
    from lss.reporting.evidence import render_evidence_png, sagittal_slice_ids

    prediction = known_prediction(probs=_probs(RULE))
    findings = build_findings(prediction)
    assert sagittal_slice_ids(prediction) == []  # no stack, no slice images
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, size=(5, *prediction.sagittal_image.shape), dtype=np.uint8)
    stack[2] = np.round(np.clip(prediction.sagittal_image, 0, 1) * 255)
    prediction.sagittal_stack, prediction.sagittal_slice = stack, 2
    ids = sagittal_slice_ids(prediction)
    assert ids == [f"sagittal_slice_{k:02d}" for k in range(5)]
    pngs = [render_evidence_png(prediction, findings, key) for key in ids]
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs) and len(set(pngs)) == 5
    # The segmented slice is the sagittal evidence image itself (masks, level names); the others are not.
    assert pngs[2] == render_evidence_png(prediction, findings, "sagittal")
    with pytest.raises(KeyError, match="sagittal_slice_"):
        render_evidence_png(prediction, findings, "sagittal_slice_05")
