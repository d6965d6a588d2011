"""The consistency check of generated reports (``lss.reporting.consistency``): texts that agree with the findings are
kept, texts that state another grade, a grade at a withheld or not-assessable level, or a level the findings do not
hold are found out and replaced by the grounded writer's report; and the report evaluation has a contradiction-rate
column, computed for every writer. Real findings of a prediction of known geometry, real reference-style texts and
a real (small) learned generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_prediction import known_prediction

from lss.anatomy import LEVELS, SEVERITIES
from lss.config import ReportConfig
from lss.data.manifest import LevelRecord
from lss.data.synth.reports import REPORT_STYLES, write_report
from lss.reporting import (
    CheckedText,
    Contradiction,
    GroundedReportWriter,
    Report,
    StudyFindings,
    build_findings,
    contradiction_rates,
    enforce_consistency,
    find_contradictions,
)
from lss.reporting.levels import name_levels

NORMAL, MODERATE, SEVERE = SEVERITIES
GRADES = [NORMAL, MODERATE, NORMAL, SEVERE, NORMAL]
AREAS = [254.0, 95.0, 150.0, 64.0, 227.0]  # L2/L3 in the relative band: "mild" in the references


def _probs(grades, confidence: float = 0.9) -> np.ndarray:
    probs = np.full((len(LEVELS), 3), (1 - confidence) / 2)
    for li, grade in enumerate(grades):
        probs[li, grade.index] = confidence
    return probs


# Sac radii whose measured areas grade as GRADES by the cut-offs (L2/L3 ~95 mm2: Moderate), so that the measurements
# agree with the model and every level is stated (a disagreement withholds the grade).
RADII = (9.0, 5.5, 6.0, 4.5, 8.5)


def graded_findings(grades=GRADES) -> StudyFindings:
    return build_findings(known_prediction(sac_radius_mm=RADII, probs=_probs(grades)))


def withheld_findings() -> StudyFindings:
    """L4/L5 withheld (confidence 0.6 below 0.95), every other level graded Normal/Mild."""
    prediction = known_prediction(probs=np.tile([0.97, 0.02, 0.01], (len(LEVELS), 1)))
    prediction.severity_probs[LEVELS.index("L4/L5")] = [0.2, 0.2, 0.6]
    prediction.abstain_threshold = 0.95
    findings = build_findings(prediction)
    assert [f.status for f in findings.levels] == ["graded"] * 3 + ["withheld", "graded"]
    return findings


def not_assessable_findings() -> StudyFindings:
    """The image ends above L3/L4: L1/L2 and L2/L3 are out of the field of view (as in test_plausibility)."""
    prediction = known_prediction(sac_radius_mm=(9.0, 8.0, 8.0, 8.0, 8.5),
                                  probs=_probs([SEVERE, MODERATE] + [NORMAL] * 3))
    prediction.sagittal_mask[:, 131:] = 0
    naming = name_levels(prediction.sagittal_mask, prediction.sagittal_spacing, (0, 130))
    prediction.level_discs = np.stack([np.zeros(prediction.sagittal_mask.shape, bool) if naming.discs[lv] is None
                                       else naming.discs[lv] for lv in LEVELS])
    prediction.naming = naming.summary()
    findings = build_findings(prediction)
    assert [f.status for f in findings.levels] == ["not_assessable"] * 2 + ["graded"] * 3
    return findings


def _reference(grades, style: str, seed: int = 0) -> str:
    levels = [LevelRecord(level=lv, severity=g, area_mm2=a) for lv, g, a in zip(LEVELS, grades, AREAS, strict=True)]
    return write_report(levels, style, np.random.default_rng(seed))


# -- finding contradictions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", REPORT_STYLES)
@pytest.mark.parametrize("seed", range(3))
def test_reference_texts_stating_the_findings_agree(style, seed):
    """Every radiologist style of the synthetic references, stating the findings' grades, contradicts nothing."""
    assert find_contradictions(_reference(GRADES, style, seed), graded_findings()) == []


@pytest.mark.parametrize("make", [graded_findings, withheld_findings, not_assessable_findings])
def test_the_grounded_writer_never_contradicts_its_findings(make):
    findings = make()
    assert find_contradictions(GroundedReportWriter().write(findings).text, findings) == []


def test_a_level_the_text_does_not_state_is_no_contradiction():
    findings = graded_findings()
    assert find_contradictions("Moderate central canal stenosis at L2/L3.", findings) == []
    assert find_contradictions("", findings) == []
    assert find_contradictions("Loss of disc height at L4/L5.", findings) == []  # no canal statement


def test_a_different_grade_is_a_contradiction():
    findings = graded_findings()
    text = _reference([NORMAL, MODERATE, NORMAL, MODERATE, SEVERE], "structured")
    found = find_contradictions(text, findings)
    assert found == [Contradiction("L4/L5", "grade", MODERATE, SEVERE), Contradiction("L5/S1", "grade", SEVERE, NORMAL)]
    assert "L4/L5" in found[0].message and "Moderate" in found[0].message and "Severe" in found[0].message
    # A summary grades every level it covers: "no stenosis at any level" contradicts the graded L2/L3 and L4/L5.
    summary = find_contradictions("No central canal stenosis at any lumbar level.", findings)
    assert [(c.level, c.kind, c.stated, c.finding) for c in summary] == [
        ("L2/L3", "grade", NORMAL, MODERATE), ("L4/L5", "grade", NORMAL, SEVERE)]


def test_a_grade_at_a_withheld_level_is_a_contradiction():
    findings = withheld_findings()
    for text in ("L4/L5: Severe central canal stenosis.", "No central canal stenosis at any lumbar level.",
                 "L4/L5: no significant central canal stenosis."):
        found = find_contradictions(text, findings)
        assert [(c.level, c.kind, c.finding) for c in found] == [("L4/L5", "withheld", None)], text
        assert "withheld" in found[0].message
    assert find_contradictions("No significant central canal stenosis at L1/L2, L2/L3, L3/L4 and L5/S1.",
                               findings) == []


def test_a_grade_at_a_not_assessable_level_is_a_contradiction():
    findings = not_assessable_findings()
    found = find_contradictions("Severe central canal stenosis at L1/L2. Moderate canal stenosis at L2/L3.", findings)
    assert found == [Contradiction("L1/L2", "not_assessable", SEVERE), Contradiction("L2/L3", "not_assessable",
                                                                                     MODERATE)]
    assert "not assessable" in found[0].message
    # The model's own (unstated) grades are not what the text may say either: any grade there contradicts.
    assert [c.kind for c in find_contradictions("No central canal stenosis.", findings)] == ["not_assessable"] * 2


def test_a_level_not_among_the_findings_is_a_contradiction():
    findings = graded_findings()
    found = find_contradictions("Severe central canal stenosis at L5-6. The conus ends at T12-L1.", findings)
    assert [(c.level, c.kind) for c in found] == [("L5/L6", "unknown_level"), ("T12/L1", "unknown_level")]
    # Findings without L5/S1 (the upper bound's, where a level has no true grade): stating it contradicts them.
    partial = StudyFindings(study_id="partial", levels=findings.levels[:4], has_axial=True)
    found = find_contradictions("No central canal stenosis at L1/L2 or L3/L4. Mild canal stenosis at L5/S1.",
                                partial)
    assert found == [Contradiction("L5/S1", "unknown_level", NORMAL)]
    assert find_contradictions(GroundedReportWriter().write(partial).text, partial) == []


def test_bad_inputs_are_refused():
    findings = graded_findings()
    with pytest.raises(TypeError, match="string"):
        find_contradictions(None, findings)
    with pytest.raises(TypeError, match="StudyFindings"):
        find_contradictions("text", {"L1/L2": NORMAL})
    doubled = StudyFindings(study_id="x", levels=[findings.levels[0], findings.levels[0]], has_axial=True)
    with pytest.raises(ValueError, match="two findings for level 'L1/L2'"):
        find_contradictions("text", doubled)
    with pytest.raises(ValueError, match="unknown contradiction kind"):
        Contradiction("L1/L2", "wrong")


# -- enforcing consistency -------------------------------------------------------------------------------------------


def test_a_consistent_text_is_kept():
    findings = graded_findings()
    text = _reference(GRADES, "narrative")
    checked = enforce_consistency(text, findings)
    assert isinstance(checked, CheckedText)
    assert checked.text == checked.original == text and not checked.rewritten and checked.contradictions == []
    report = checked.report(findings.study_id)
    assert report.writer == "learned" and report.text == text and [s.text for s in report.sentences] == [text]
    assert checked.as_dict() == {"rewritten": False, "fallback_writer": None, "contradictions": [], "original": text}


@pytest.mark.parametrize("make, text", [
    (graded_findings, "No central canal stenosis at any lumbar level."),
    (withheld_findings, "Severe central canal stenosis at L4/L5."),
    (not_assessable_findings, "Moderate central canal stenosis at L2/L3 and L5/L6."),
])
def test_a_contradicting_text_is_replaced_by_the_grounded_report(make, text):
    findings = make()
    checked = enforce_consistency(text, findings)
    grounded = GroundedReportWriter().write(findings)
    assert checked.rewritten and checked.original == text and checked.text == grounded.text
    assert checked.contradictions == find_contradictions(text, findings) != []
    assert find_contradictions(checked.text, findings) == []  # what is shown contradicts nothing
    report = checked.report(findings.study_id, writer="learned")
    assert report.writer == "learned" and report.text == grounded.text
    assert [s.text for s in report.sentences] == [s.text for s in grounded.sentences]  # with their evidence
    saved = json.loads(json.dumps(checked.as_dict()))
    assert saved["rewritten"] and saved["fallback_writer"] == "grounded" and saved["original"] == text
    assert [c["level"] for c in saved["contradictions"]] == [c.level for c in checked.contradictions]


class _OverstatingWriter:
    """A writer that states Severe everywhere, whatever the findings."""

    name = "overstating"

    def write(self, findings: StudyFindings) -> Report:
        return Report(findings.study_id, self.name, "Severe central canal stenosis at every level.", [])


def test_a_fallback_that_contradicts_too_is_an_error_not_a_report():
    findings = graded_findings()
    with pytest.raises(ValueError, match="fallback writer's report .* contradicts the findings too"):
        enforce_consistency("Moderate central canal stenosis at L1/L2.", findings, _OverstatingWriter())
    assert not enforce_consistency("", findings, _OverstatingWriter()).rewritten  # not needed, not called
    with pytest.raises(TypeError, match="write"):
        enforce_consistency("text", findings, fallback_writer=object())


def test_contradiction_rates():
    findings = {"a": graded_findings(), "b": withheld_findings(), "c": graded_findings()}
    texts = {
        "a": _reference(GRADES, "concise"),  # agrees: 5 statements
        "b": "No central canal stenosis at any lumbar level.",  # 5 statements, L4/L5 withheld
        "c": "Severe central canal stenosis at L1/L2 and L5/L6.",  # 2 statements, both contradicted
    }
    rates = contradiction_rates(texts, findings)
    assert rates["studies"] == 3 and rates["studies_contradicted"] == 2
    assert rates["contradiction_rate"] == pytest.approx(2 / 3)
    assert rates["statements"] == 12 and rates["statements_contradicted"] == 3
    assert rates["statement_contradiction_rate"] == pytest.approx(3 / 12)
    assert rates["kinds"] == {"grade": 1, "withheld": 1, "not_assessable": 0, "unknown_level": 1}
    nothing = contradiction_rates({"a": ""}, {"a": findings["a"]})
    assert nothing["contradiction_rate"] == 0.0 and nothing["statement_contradiction_rate"] is None
    with pytest.raises(ValueError, match="without a text: \\['b'\\]"):
        contradiction_rates({"a": ""}, {"a": findings["a"], "b": findings["b"]})
    with pytest.raises(ValueError, match="no report"):
        contradiction_rates({}, {})


# -- the report evaluation -------------------------------------------------------------------------------------------

# Trained to write this whatever the features: it names a level no finding holds, so every raw text contradicts.
CONTRADICTING = "Severe central canal stenosis at L4/L5 and L5/L6."


@pytest.fixture(scope="module")
def evaluated(preprocessed_nifti, tiny_model_file, tmp_path_factory):
    from lss.evaluation.reports import evaluate_reports
    from lss.model import load_model
    from lss.reporting.generator import save_generator, train_generator
    from lss.training.reporter import study_features

    data = preprocessed_nifti
    _, features, _ = study_features(load_model(tiny_model_file).eval(), data, None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = ReportConfig(layers=1, hidden=32, heads=2, batch_size=8, learning_rate=1e-2, max_new_tokens=40,
                              epochs=60)
        generator, _ = train_generator(features, [{"structured": CONTRADICTING}] * len(features), config)
    finally:
        torch.set_num_threads(threads)
    assert generator.generate(features, "structured") == [CONTRADICTING] * len(features)
    path = save_generator(generator, tmp_path_factory.mktemp("consistency_generator") / "generator")
    return evaluate_reports(tiny_model_file, data, generator_path=path)


@pytest.mark.java
def test_the_report_table_has_a_contradiction_rate_for_every_writer(evaluated):
    from lss.evaluation.reports import ORACLE, reports_markdown

    writers = evaluated["writers"]
    assert set(writers) == {"grounded", "learned", ORACLE}
    for name in ("grounded", ORACLE):  # computed, not assumed: the grounded writer states only its findings
        assert writers[name]["consistency"]["contradiction_rate"] == 0.0
    assert writers[ORACLE]["consistency"]["statements"] > 0  # (the untrained model's findings may state nothing)
    learned = writers["learned"]["consistency"]
    # The raw text contradicts every study's findings; what is scored is the grounded replacement.
    assert learned["contradiction_rate"] == 1.0 and learned["rewritten"] == learned["studies"] == 2
    assert learned["kinds"]["unknown_level"] == 2
    assert learned["after_check"]["contradiction_rate"] == 0.0
    assert writers["learned"]["examples"] == writers["grounded"]["examples"]
    assert set(writers["learned"]["raw_examples"].values()) == {CONTRADICTING}
    assert writers["learned"]["clinical"] == writers["grounded"]["clinical"]

    table = reports_markdown(evaluated)
    header = next(line for line in table.splitlines() if line.startswith("| writer | bleu_1"))
    assert "| contradiction rate | contradicted statements |" in header
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and "bleu" not in line and line.count("|") == header.count("|")}
    column = header.split(" | ").index("contradiction rate")
    assert rows["grounded"][column] == "0.000" and rows[ORACLE][column] == "0.000"
    assert rows["learned"][column] == "1.000"
    assert "2 of 2 raw reports contradicted" in table and CONTRADICTING in table


@pytest.mark.java
def test_the_concise_style_is_scored_against_the_concise_references(preprocessed_nifti, tiny_model_file):
    """``report.style=concise``: both grounded rows write the concise form, scored against the concise reference;
    fed the true findings it states every level right."""
    from lss.evaluation.reports import ORACLE, evaluate_reports

    results = evaluate_reports(tiny_model_file, preprocessed_nifti, style="concise")
    assert results["style"] == "concise"
    for name in ("grounded", ORACLE):
        assert all(text.startswith(("Central canal:", "[No level")) for text in results["writers"][name]["examples"]
                   .values())
        assert results["writers"][name]["consistency"]["contradiction_rate"] == 0.0
    assert results["writers"][ORACLE]["clinical"]["accuracy"] == 1.0
