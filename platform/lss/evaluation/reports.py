"""Evaluation of the written reports on held-out studies: the grounded writer and, when given, the learned report
generator, in the same table.

    per study: predict -> findings (measurements, rule grade) -> report of each writer
    -> NLG scores against the study's reference reports (every style is a reference): BLEU-1..4, METEOR, ROUGE-L,
       CIDEr (pycocoevalcap, PTB tokenizer; SPICE not available offline)
    -> clinical accuracy: (level, severity) statements read back from each report against the true grades
    -> contradiction rate: how often a report states a level or grade its findings contradict
       (``lss.reporting.consistency``); the learned generator's raw text is checked, and a contradicting one is
       replaced by the grounded writer's before it is scored, as the product does
    -> measurement error: the dural sac area and AP diameter measured on the predicted masks against the truth,
       and how often the rule grade of those measurements is right
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from lss.anatomy import LEVELS, Severity, disc_label_for_level
from lss.data.cases import INDEX_NAME, load_case, read_jsonl, select_indexed_studies

__all__ = ["evaluate_reports", "reports_markdown", "true_findings"]

logger = logging.getLogger(__name__)

EXAMPLES = 3  # reports per writer copied into the results, to read next to the numbers


ORACLE = "grounded, true findings (upper bound)"


def case_sagittal_labels(case: dict[str, Any]):
    """(Y, Z) native labels of a preprocessed case's mid-sagittal slice, or None without labels."""
    labels = case.get("sagittal_labels")
    return None if labels is None else labels[labels.shape[0] // 2]


def true_findings(study_id: str, record: dict[str, Any]):
    """Findings holding the ground truth of a study record (for the upper-bound row)."""
    from lss.reporting.findings import LevelFinding, StudyFindings
    from lss.reporting.measurements import LevelMeasurements

    levels = []
    for level in record.get("levels", []):
        if level.get("severity") is None:
            continue
        severity = Severity.parse(level["severity"])
        area, ap = level.get("area_mm2"), level.get("ap_mm")
        levels.append(LevelFinding(
            level=level["level"], severity=severity,
            probabilities={s.value: float(s is severity) for s in Severity}, rule_severity=severity,
            measurements=LevelMeasurements(level=level["level"], area_mm2=None if area is None else round(area, 1),
                                           ap_mm=None if ap is None else round(ap, 1))))
    return StudyFindings(study_id=study_id, levels=levels, has_axial=True)


def _truth(row: dict[str, Any]) -> dict[str, Severity]:
    return {level: Severity.from_index(int(v)) for level, v in zip(LEVELS, row["severity"], strict=True) if v >= 0}


def evaluate_reports(
    model_path: str | Path,
    data_dir: str | Path,
    study_ids: list[str] | None = None,
    generator_path: str | Path | None = None,
    style: str = "structured",
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Writes every evaluated study's report with each writer and scores the reports.

    Args:
        model_path: a model file of ``lss.model.save_model``.
        data_dir: a preprocessing output folder whose rows carry reference reports (synthetic data).
        study_ids: the studies (the held-out split); None = every case.
        generator_path: a learned report generator (``save_generator``) to compare with the grounded writer.
        style: the style the learned generator is asked for, and the style of the reference the reports are scored
            against (the grounded writer writes the structured style); studies without it use every style.
        batch_size: studies per forward pass.
        device: where the models run.

    Returns:
        ``writers`` (per writer: ``nlg``, ``nlg_all_styles``, ``clinical``, ``consistency``, ``examples``),
        ``measurements`` (the rule grade's accuracy against the truth and the number of levels flagged for review;
        the measurement errors are in ``evaluate_model``'s), ``studies`` and ``notes``. Studies without reference
        reports or without known grades are left out and counted in the notes. ``consistency`` is
        ``lss.reporting.contradiction_rates`` of the writer's text against the findings it was written from; for
        the learned generator, of its raw text, with ``rewritten`` (texts replaced by the grounded writer's) and
        ``after_check`` (the rates of the checked text, zero), and ``raw_examples`` beside ``examples``.

    Raises:
        ValueError: when no evaluated study has reference reports and known grades.
    """
    from lss.config import ReportConfig, grounded_style
    from lss.inference.predict import predict_cases
    from lss.model import load_model
    from lss.reporting.clinical import clinical_accuracy
    from lss.reporting.consistency import contradiction_rates
    from lss.reporting.findings import build_findings
    from lss.reporting.nlg import NLGScorer
    from lss.reporting.reporter import StudyReporter

    data_dir = Path(data_dir)
    rows, _ = select_indexed_studies(read_jsonl(data_dir / INDEX_NAME), study_ids, data_dir / INDEX_NAME)
    usable = [r for r in rows if (r.get("record") or {}).get("reports") and _truth(r)]
    notes = []
    if len(usable) < len(rows):
        notes.append(f"{len(rows) - len(usable)} of {len(rows)} studies have no reference report or no known grade "
                     "and are not scored.")
    if not usable:
        raise ValueError("no evaluated study has reference reports and known grades: nothing to score reports on.")
    model = load_model(model_path, map_location=device).eval()
    # The writers as the product runs them (the report stage of lss diagnose and of the Serve Reporter).
    grounded = StudyReporter(ReportConfig(style=grounded_style(style)))
    learned = None if generator_path is None else StudyReporter(
        ReportConfig(writer="learned", generator_path=str(generator_path), style=style))
    written: dict[str, dict[str, str]] = {"grounded": {}}
    if learned is not None:
        written["learned"] = {}
    # An upper bound, not a writer: the grounded writer fed the true grades and measurements. The gap between it and
    # "grounded" is what the predictions cost; the gap between it and the references is the wording.
    written[ORACLE] = {}
    # The findings each writer wrote from, to check its text against: the oracle's are the true ones.
    findings_of: dict[str, dict[str, Any]] = {name: {} for name in written}
    raw_learned: dict[str, str] = {}
    references, all_references, truth = {}, {}, {}
    rule_right, rule_n, flagged = 0, 0, 0
    outcomes = {"graded": 0, "withheld": 0, "not_assessable": 0}
    graded_right, named_right, named_n = 0, 0, 0
    for start in range(0, len(usable), int(batch_size)):
        chunk = usable[start:start + int(batch_size)]
        cases = [load_case(data_dir / r["path"]) for r in chunk]
        ids = [str(r["study_id"]) for r in chunk]
        predictions = predict_cases(model, cases, ids, [r.get("info", {}) for r in chunk], device)
        for row, prediction, case in zip(chunk, predictions, cases, strict=True):
            sid = prediction.study_id
            findings = build_findings(prediction)
            written["grounded"][sid] = grounded.write(findings, prediction)[0].text
            findings_of["grounded"][sid] = findings
            if learned is not None:
                _, checked = learned.write(findings, prediction)
                raw_learned[sid], written["learned"][sid] = checked.original, checked.text
                findings_of["learned"][sid] = findings
            styles = row["record"]["reports"]
            references[sid] = [styles[style]] if style in styles else [text for _, text in sorted(styles.items())]
            findings_of[ORACLE][sid] = true_findings(sid, row["record"])
            written[ORACLE][sid] = grounded.grounded.write(findings_of[ORACLE][sid]).text
            all_references[sid] = [text for _, text in sorted(styles.items())]
            truth[sid] = _truth(row)
            labels = case_sagittal_labels(case)
            for li, finding in enumerate(findings.levels):
                if labels is not None:
                    truth_disc = labels == disc_label_for_level(finding.level)
                    if truth_disc.any():  # was the disc named as this level really this level's disc?
                        named_n += 1
                        named = prediction.level_discs[li] if prediction.level_discs is not None else None
                        named_right += int(named is not None and bool((named & truth_disc).sum() * 2 > named.sum() > 0))
                if finding.level in truth[sid]:
                    outcomes[finding.status] += 1
                    if finding.stated_severity is not None:
                        graded_right += int(finding.stated_severity is truth[sid][finding.level])
                flagged += int(finding.review)
                if finding.rule_severity is not None and finding.level in truth[sid]:
                    rule_n += 1
                    rule_right += int(finding.rule_severity is truth[sid][finding.level])

    writers = {}
    with NLGScorer() as scorer:  # one METEOR Java process for every writer
        for name, texts in written.items():
            # The learned generator's rate is that of its raw text (what the check had to catch); its other scores
            # are those of the checked text. Every other writer's text is checked as written.
            consistency = contradiction_rates(raw_learned if name == "learned" else texts, findings_of[name])
            if name == "learned":
                consistency["rewritten"] = consistency["studies_contradicted"]
                consistency["after_check"] = contradiction_rates(texts, findings_of[name])
            writers[name] = {
                "nlg": scorer.score(texts, references),
                "nlg_all_styles": scorer.score(texts, all_references),
                "clinical": clinical_accuracy(texts, truth),
                "consistency": consistency,
                "examples": {sid: texts[sid] for sid in list(texts)[:EXAMPLES]},
            }
            if name == "learned":
                writers[name]["raw_examples"] = {sid: raw_learned[sid] for sid in list(texts)[:EXAMPLES]}

    levels_n = sum(outcomes.values())
    measurements = {
        "rule_grade_accuracy": rule_right / rule_n if rule_n else None,
        "rule_graded_levels": rule_n,
        "flagged_for_review": flagged,
        # What the findings state: graded levels (coverage) and how often their grade is right (selective accuracy);
        # the others are not assessable (plausibility gate) or withheld (low confidence or a measurement conflict).
        "levels": levels_n,
        **{f"levels_{name}": count for name, count in outcomes.items()},
        "coverage": outcomes["graded"] / levels_n if levels_n else None,
        "selective_accuracy": graded_right / outcomes["graded"] if outcomes["graded"] else None,
        "level_naming_accuracy": named_right / named_n if named_n else None,
        "level_naming_levels": named_n,
    }
    notes.append(f"References: the study's reference report in the style the writers write ({style!r}); "
                 "nlg_all_styles in the JSON scores against every style at once (CIDEr-D's length penalty makes that "
                 "much lower). CIDEr's IDF comes from the evaluated set, so it depends on the set's size.")
    notes.append("Clinical accuracy: (level, severity) statements read back from the report text; a level the report "
                 "does not state counts as wrong.")
    notes.append("Contradiction rate: share of studies whose report states a level or grade its findings contradict "
                 "(a grade other than the finding's, a grade at a withheld or not-assessable level, a level not among "
                 "the findings); contradicted statements: share of the levels a report states that are contradicted. "
                 "The upper bound is checked against the true findings it was written from.")
    if learned is not None:
        notes.append("The learned generator's contradiction rate is that of its raw text; a contradicting text is "
                     "replaced by the grounded writer's report (as `lss diagnose` and the server do), and its other "
                     "scores are those of the checked text, which contradicts nothing.")
    return {"studies": sorted(truth), "style": style, "writers": writers, "measurements": measurements,
            "notes": notes}


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def reports_markdown(results: dict[str, Any]) -> str:
    """The "Reports" section of ``results.md``."""
    writers = results["writers"]
    nlg_keys = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]
    clinical_keys = ["accuracy", "macro_f1", "recall_normal_mild", "recall_moderate", "recall_severe",
                     "stated_fraction"]
    lines = ["## Reports\n", f"{len(results['studies'])} studies; NLG metrics against the {results['style']!r} "
             "reference report of each study (the style both writers write).\n",
             "| writer | " + " | ".join(nlg_keys) + " | clinical accuracy | clinical macro-F1 | contradiction rate "
             "| contradicted statements |",
             "|---|" + "---|" * (len(nlg_keys) + 4)]
    for name, block in writers.items():
        nlg, clinical = block["nlg"], block["clinical"]
        consistency = block.get("consistency") or {}
        lines.append(f"| {name} | " + " | ".join(_f(nlg[k]) for k in nlg_keys)
                     + f" | {_f(clinical['accuracy'])} | {_f(clinical['macro_f1'])}"
                     + f" | {_f(consistency.get('contradiction_rate'))}"
                     + f" | {_f(consistency.get('statement_contradiction_rate'))} |")
    lines += ["", "| writer | " + " | ".join(clinical_keys) + " |", "|---|" + "---|" * len(clinical_keys)]
    for name, block in writers.items():
        lines.append(f"| {name} | " + " | ".join(_f(block["clinical"].get(k)) for k in clinical_keys) + " |")
    for name, block in writers.items():
        consistency = block.get("consistency") or {}
        if "rewritten" in consistency:
            lines += ["", f"{name}: {consistency['rewritten']} of {consistency['studies']} raw reports contradicted "
                      "their findings and were replaced by the grounded writer's (the contradiction rate is the raw "
                      "text's; every other column scores the checked text)."]
    spice = next(iter(writers.values()))["nlg"].get("spice")
    if spice:
        lines += ["", f"SPICE: {spice}"]
    m = results["measurements"]
    lines += ["", f"Rule grade of the measurements right on {_f(m['rule_grade_accuracy'])} of "
              f"{m['rule_graded_levels']} levels; {m['flagged_for_review']} levels flagged for review.", ""]
    if m.get("levels"):
        lines += [f"Findings: {m['levels_graded']} of {m['levels']} levels graded (coverage {_f(m['coverage'])}), "
                  f"selective accuracy {_f(m['selective_accuracy'])}; {m['levels_not_assessable']} not assessable, "
                  f"{m['levels_withheld']} withheld. Level naming (the disc named as each level is that level's "
                  f"disc): {_f(m['level_naming_accuracy'])} of {m['level_naming_levels']} levels.", ""]
    for name, block in writers.items():
        lines.append(f"### Example: {name}\n")
        sid, text = next(iter(block["examples"].items()))
        lines += [f"{sid}:\n", "```text", text, "```", ""]
        raw = (block.get("raw_examples") or {}).get(sid)
        if raw is not None and raw != text:
            lines += [f"{sid}, as generated (replaced: it contradicts the findings):\n", "```text", raw, "```", ""]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"
