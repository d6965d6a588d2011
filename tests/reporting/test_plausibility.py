"""The plausibility gate (``lss.reporting.plausibility.assess_study``) and, through it, the findings
(``lss.reporting.findings.build_findings``) and the grounded report: a level whose masks or image cannot carry a grade
is never stated with one, and a level the model is unsure of is withheld."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_prediction import CANAL_Y, DISC_Y, DISC_Z, known_prediction

from lss.anatomy import LEVELS, Severity, Structure
from lss.reporting import GroundedReportWriter, build_findings
from lss.reporting.clinical import extract_statements
from lss.reporting.levels import name_levels
from lss.reporting.measurements import measure_study
from lss.reporting.plausibility import assess_study

DISC, BODY, CANAL = Structure.DISC.index, Structure.VERTEBRAL_BODY.index, Structure.CANAL.index
NORMAL = [0.9, 0.07, 0.03]
SEVERE = [0.05, 0.05, 0.9]
MODERATE = [0.05, 0.9, 0.05]
HIGH = (Severity.MODERATE, Severity.SEVERE)
ROOMY = (9.0, 8.0, 8.0, 8.0, 8.5)  # axial sac radii (mm) measuring Normal/Mild at every level


def assess(prediction):
    return assess_study(prediction, measure_study(prediction))


def probs(**by_level) -> np.ndarray:
    """Normal/Mild everywhere, except the levels given ("L4_L5"=SEVERE)."""
    out = np.tile(NORMAL, (len(LEVELS), 1))
    for key, row in by_level.items():
        out[LEVELS.index(key.replace("_", "/"))] = row
    return out


def with_naming(prediction, fov_z=None):
    """Names the levels as ``predict_cases`` does (``level_discs`` and ``naming`` on the prediction)."""
    naming = name_levels(prediction.sagittal_mask, prediction.sagittal_spacing, fov_z)
    prediction.level_discs = np.stack([np.zeros(prediction.sagittal_mask.shape, bool) if naming.discs[lv] is None
                                       else naming.discs[lv] for lv in LEVELS])
    prediction.naming = naming.summary()
    return prediction


def fov_from_l3(prediction):
    """The acquired image ends 21 mm above the L3/L4 disc: L1/L2 and L2/L3 are out of the field of view."""
    prediction.sagittal_mask[:, 131:] = 0
    return with_naming(prediction, fov_z=(0, 130))


def not_high(report_text: str, level: str) -> bool:
    return extract_statements(report_text).get(level) not in HIGH


# -- the gate --------------------------------------------------------------------------------------------------------


def test_the_helper_spine_is_assessable_everywhere():
    assessment = assess(known_prediction())
    assert assessment.study_reasons == []
    assert assessment.level_reasons == {level: [] for level in LEVELS}
    assert all(assessment.assessable(level) for level in LEVELS)
    assert assessment.canal_interrupted == set()
    assert assessment.naming["method"] == "counted_from_sacrum"
    findings = build_findings(known_prediction())
    # Every level is assessable; L4/L5's 4.5 mm sac grades Severe where the default model says Normal/Mild: withheld.
    assert [f.status for f in findings.levels] == ["graded"] * 3 + ["withheld", "graded"]
    assert findings.level("L4/L5").measurement_conflict
    assert findings.not_assessable_reasons == [] and findings.assessable


def test_a_precomputed_naming_is_used_as_given():
    prediction = fov_from_l3(known_prediction())
    assessment = assess(prediction)
    assert assessment.naming == prediction.naming
    assert assessment.level_reasons["L1/L2"] == ["the level's disc is not in the field of view"]
    assert [assessment.assessable(lv) for lv in LEVELS] == [False, False, True, True, True]


@pytest.mark.parametrize("spacing_z", [0.4, 0.5, 0.6, 0.7])
def test_a_compressed_spine_is_not_assessable(spacing_z):
    # The helper spine at a smaller Z spacing: discs every 30 px = 12, 15, 18, 21 mm (adult: 22-60 mm).
    prediction = known_prediction()
    prediction.sagittal_spacing = (0.5, spacing_z)
    assessment = assess(prediction)
    assert not any(assessment.assessable(level) for level in LEVELS)
    findings = build_findings(prediction)
    assert all(f.stated_severity is None for f in findings.levels)


def test_discs_every_21_mm_give_a_study_reason_naming_the_spacing():
    prediction = known_prediction()
    prediction.sagittal_spacing = (0.5, 0.7)
    reasons = assess(prediction).study_reasons
    assert any("spacing (21 mm)" in r and "22-60 mm" in r for r in reasons)


def test_discs_every_15_mm_give_a_reason_naming_the_spacing():
    prediction = known_prediction()
    prediction.sagittal_spacing = (0.5, 0.5)
    assessment = assess(prediction)
    assert any("spacing" in r for r in assessment.study_reasons)


def test_discs_every_16_5_mm_are_not_graded():
    prediction = known_prediction()
    prediction.sagittal_spacing = (0.5, 0.55)
    findings = build_findings(prediction)
    assert all(f.stated_severity is None for f in findings.levels)


def test_discs_every_66_mm_are_not_graded():
    prediction = known_prediction()
    prediction.sagittal_spacing = (0.5, 2.2)  # discs 66 mm apart, 17.6 mm high; bodies 48 mm
    findings = build_findings(prediction)
    assert all(f.stated_severity is None for f in findings.levels)


def test_a_30_mm_high_disc_is_not_assessable():
    # L3/L4 24 px (30 mm) high and 64 px (32 mm) deep: its long axis is still antero-posterior.
    prediction = known_prediction()
    z = DISC_Z[2]
    prediction.sagittal_mask[CANAL_Y[1]:, z - 12:z + 12] = DISC
    assessment = assess(prediction)
    assert [assessment.assessable(lv) for lv in LEVELS] == [True, True, False, True, True]
    assert any("disc height (30.0 mm)" in r and "1.5-20 mm" in r for r in assessment.level_reasons["L3/L4"])
    finding = build_findings(prediction).level("L3/L4")
    assert finding.status == "not_assessable" and finding.stated_severity is None
    assert not finding.review and finding.review_reason == ""  # nothing stated, nothing to review


def test_a_30_mm_high_20_mm_deep_disc_is_not_assessable():
    prediction = known_prediction()
    z = DISC_Z[2]
    prediction.sagittal_mask[DISC_Y[0]:DISC_Y[1], z - 12:z + 12] = DISC
    assert not assess(prediction).assessable("L3/L4")


def test_no_canal_at_all_is_a_study_reason():
    prediction = known_prediction(probs=probs(L4_L5=SEVERE))
    prediction.sagittal_mask[prediction.sagittal_mask == CANAL] = 0
    assessment = assess(prediction)
    assert assessment.study_reasons == ["no spinal canal was segmented on the mid-sagittal slice"]
    assert not any(assessment.assessable(level) for level in LEVELS)
    findings = build_findings(prediction)
    assert not findings.assessable and findings.not_assessable_reasons == assessment.study_reasons
    assert all(f.as_dict()["severity"] is None for f in findings.levels)
    text = GroundedReportWriter().write(findings).text
    assert extract_statements(text) == {}
    assert "[No level could be graded: see the findings for why.]" in text


def test_a_canal_interrupted_at_one_level_stays_assessable_and_is_flagged():
    # No canal behind the L3/L4 disc (z 102..117), canal above and below: what a compressed canal looks like.
    prediction = known_prediction(sac_radius_mm=ROOMY, axial_present=[True, True, False, True, True])
    z = DISC_Z[2]
    prediction.sagittal_mask[CANAL_Y[0]:CANAL_Y[1], z - 8:z + 8] = 0
    assessment = assess(prediction)
    assert assessment.canal_interrupted == {"L3/L4"}
    assert all(assessment.assessable(level) for level in LEVELS)
    findings = build_findings(prediction)
    l34 = findings.level("L3/L4")
    assert l34.status == "graded" and l34.measurements.sagittal_ap_mm is None and l34.rule_severity is None
    assert l34.review and "interrupted" in l34.review_reason
    assert [f.level for f in findings.levels if f.review] == ["L3/L4"]
    line = next(s for s in GroundedReportWriter().write(findings).text.splitlines() if s.startswith("L3/L4:"))
    assert "review:" in line and "interrupted" in line


def test_a_canal_that_stops_at_a_level_is_no_canal_behind_the_discs_below():
    # The canal runs only above L3/L4: there is nothing behind L3/L4, L4/L5 and L5/S1 to grade.
    prediction = known_prediction(axial_present=[True, True, False, False, False])
    prediction.sagittal_mask[CANAL_Y[0]:CANAL_Y[1], :DISC_Z[2] + 8] = 0
    assessment = assess(prediction)
    assert [assessment.assessable(lv) for lv in LEVELS] == [True, True, False, False, False]
    for level in ("L3/L4", "L4/L5", "L5/S1"):
        assert "no spinal canal was found behind the disc" in assessment.level_reasons[level]
    assert assessment.canal_interrupted == set()


def test_an_axial_sac_of_1000_mm2_is_not_assessable():
    radius = float(np.sqrt(1000.0 / np.pi))
    prediction = known_prediction(sac_radius_mm=(9.0, 8.0, 6.0, radius, 8.5), probs=probs(L4_L5=SEVERE))
    assessment = assess(prediction)
    assert [assessment.assessable(lv) for lv in LEVELS] == [True, True, True, False, True]
    reasons = assessment.level_reasons["L4/L5"]
    assert any(r.startswith("the axial dural sac area (") and "10-600 mm2" in r for r in reasons)
    finding = build_findings(prediction).level("L4/L5")
    assert finding.stated_severity is None and finding.status == "not_assessable"


def test_a_sac_narrower_than_the_ranges_on_both_views_is_graded_severe_for_review():
    """An obliterated sac (7 mm2 on the axial slice, 1 mm of canal left behind the disc on the sagittal view, the
    canal continuing above and below) is the tightest compression, not an impossible mask."""
    prediction = known_prediction(sac_radius_mm=(9.0, 8.0, 8.0, 1.5, 8.5), probs=probs(L4_L5=SEVERE))
    z = DISC_Z[3]
    prediction.sagittal_mask[CANAL_Y[0]:CANAL_Y[1] - 2, z - 8:z + 8] = 0
    assessment = assess(prediction)
    assert assessment.extreme_narrowing == {"L4/L5"} and all(assessment.assessable(lv) for lv in LEVELS)
    finding = build_findings(prediction).level("L4/L5")
    assert finding.measurements.area_mm2 < 10 and finding.measurements.sagittal_ap_mm < 2
    assert finding.stated_severity == Severity.SEVERE and finding.status == "graded"
    assert finding.review and "narrower than a sac is expected" in finding.review_reason


def test_a_sac_below_the_ranges_on_one_view_only_is_not_assessable():
    """The axial sac measures 7 mm2 but the sagittal canal behind the disc is 12 mm deep: a gap in a mask."""
    prediction = known_prediction(sac_radius_mm=(9.0, 8.0, 8.0, 1.5, 8.5), probs=probs(L4_L5=SEVERE))
    assessment = assess(prediction)
    assert assessment.extreme_narrowing == set() and not assessment.assessable("L4/L5")
    assert any("10-600 mm2" in r for r in assessment.level_reasons["L4/L5"])
    assert build_findings(prediction).level("L4/L5").stated_severity is None


# -- findings and the report -----------------------------------------------------------------------------------------


def test_a_not_assessable_level_is_never_stated_moderate_or_severe():
    prediction = fov_from_l3(known_prediction(sac_radius_mm=ROOMY, probs=probs(L1_L2=SEVERE, L2_L3=MODERATE)))
    findings = build_findings(prediction)
    for level in ("L1/L2", "L2/L3"):
        finding = findings.level(level)
        assert finding.status == "not_assessable" and finding.stated_severity is None
        assert finding.not_assessable_reasons == ["the level's disc is not in the field of view"]
        out = finding.as_dict()
        assert out["severity"] is None and out["stated_severity"] is None and out["model_severity"] is None
        assert out["probabilities"] is None and out["confidence"] is None
        assert out["status"] == "not_assessable"
    study = findings.as_dict()
    assert [lv["severity"] for lv in study["levels"]] == [None, None, "Normal/Mild", "Normal/Mild", "Normal/Mild"]
    report = GroundedReportWriter().write(findings)
    statements = extract_statements(report.text)
    assert "L1/L2" not in statements and "L2/L3" not in statements
    assert not_high(report.text, "L1/L2") and not_high(report.text, "L2/L3")
    assert "severe" not in report.text.lower() and "moderate" not in report.text.lower()
    lines = report.text.splitlines()
    assert lines[lines.index("IMPRESSION:") + 1] == "No significant central canal stenosis at L3/L4, L4/L5 and L5/S1."
    assert "[Not assessable: L1/L2, L2/L3; no grade is stated there.]" in lines
    for sentence in report.sentences:
        for level, evidence in sentence.evidence.items():
            if level in ("L1/L2", "L2/L3"):
                assert evidence["severity"] is None and evidence["model_severity"] is None
                assert evidence["probability"] is None


def test_a_study_that_cannot_be_counted_states_no_grade():
    prediction = known_prediction(probs=np.tile(SEVERE, (len(LEVELS), 1)))
    body = prediction.sagittal_mask == BODY
    body[:, DISC_Z[-1]:] = False
    prediction.sagittal_mask[body] = 0  # no sacrum
    findings = build_findings(prediction)
    assert not findings.assessable and any("sacrum" in r for r in findings.not_assessable_reasons)
    assert all(f.stated_severity is None and f.as_dict()["model_severity"] is None for f in findings.levels)
    text = GroundedReportWriter().write(findings).text
    assert extract_statements(text) == {}
    assert "severe" not in text.lower()


def test_a_low_confidence_level_is_withheld():
    prediction = known_prediction(probs=np.tile([0.97, 0.02, 0.01], (len(LEVELS), 1)))
    prediction.severity_probs[LEVELS.index("L4/L5")] = [0.2, 0.2, 0.6]
    prediction.abstain_threshold = 0.95
    findings = build_findings(prediction)
    l45 = findings.level("L4/L5")
    assert l45.assessable and l45.abstained and l45.status == "withheld"
    assert l45.stated_severity is None and l45.abstain_threshold == 0.95
    out = l45.as_dict()
    assert out["status"] == "withheld" and out["severity"] is None and out["stated_severity"] is None
    assert [f.status for f in findings.levels if f.level != "L4/L5"] == ["graded"] * 4
    report = GroundedReportWriter().write(findings)
    assert "L4/L5" not in extract_statements(report.text)
    line = next(s for s in report.text.splitlines() if s.startswith("L4/L5:"))
    assert line.startswith("L4/L5: grade withheld [") and "0.60" in line and "0.95" in line
    lines = report.text.splitlines()
    impression = lines[lines.index("IMPRESSION:") + 1]
    assert impression == "No significant central canal stenosis at L1/L2, L2/L3, L3/L4 and L5/S1."
    assert "[Grade withheld for low model confidence: L4/L5.]" in lines
    assert "severe" not in report.text.lower()


def test_every_level_withheld_leaves_no_impression_grade():
    prediction = known_prediction(probs=np.tile([0.6, 0.3, 0.1], (len(LEVELS), 1)))
    prediction.abstain_threshold = 0.95
    findings = build_findings(prediction)
    assert [f.status for f in findings.levels] == ["withheld"] * 5
    text = GroundedReportWriter().write(findings).text
    assert extract_statements(text) == {}
    assert "[No level could be graded: see the findings for why.]" in text


def test_a_not_assessable_severe_level_beside_a_graded_severe_one():
    # L4/L5 is graded Severe (model and measurement agree); L1/L2 is out of view with Severe probabilities.
    prediction = fov_from_l3(known_prediction(probs=probs(L1_L2=SEVERE, L4_L5=SEVERE)))
    findings = build_findings(prediction)
    report = GroundedReportWriter().write(findings)
    assert extract_statements(report.text) == {"L3/L4": Severity.NORMAL_MILD, "L4/L5": Severity.SEVERE,
                                               "L5/S1": Severity.NORMAL_MILD}
    lines = report.text.splitlines()
    assert lines[lines.index("IMPRESSION:") + 1] == "Severe central canal stenosis at L4/L5."


def test_a_not_assessable_level_exports_no_rule_grade():
    # L1/L2 is out of the field of view; its axial slice shows a 4.5 mm sac (a Severe area by the cut-offs).
    prediction = fov_from_l3(known_prediction(sac_radius_mm=(4.5, 8.0, 8.0, 8.0, 8.5)))
    findings = build_findings(prediction)
    assert findings.level("L1/L2").as_dict()["rule_severity"] is None
    report = GroundedReportWriter().write(findings)
    assert all(s.evidence["L1/L2"]["rule_severity"] is None for s in report.sentences if "L1/L2" in s.evidence)
