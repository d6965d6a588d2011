"""lss.evaluation on a real small model and real preprocessed synthetic studies: the report's files, keys and ranges,
valid PNGs, the numbers equal to lss.metrics on the same predictions, unlabelled studies, splits, the CLI
and the job, and the error paths."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT
from lss.anatomy import LEVELS, Structure
from lss.data.cases import load_case, read_jsonl
from lss.evaluation import PLOTS, RESULTS_JSON, RESULTS_MD, evaluate_model, read_split
from lss.metrics import SEVERITY_NAMES, rsna_score, segmentation_metrics, severity_metrics

SEGMENTATION_KEYS = ({f"dice_{s.value}" for s in list(Structure)[1:]} | {f"hd95_{s.value}" for s in list(Structure)[1:]}
                     | {"dice_macro", "n_cases"})


@pytest.fixture(scope="module")
def preprocessed(preprocessed_nifti):
    return preprocessed_nifti


@pytest.fixture(scope="module")
def model_file(tiny_model_file):
    return tiny_model_file


@pytest.fixture(scope="module")
def evaluated(model_file, preprocessed, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate_model(model_file, preprocessed, out, batch_size=1), out


@pytest.fixture(scope="module")
def mixed(preprocessed, tmp_path_factory):
    """A data folder with one labelled study and a copy of it stripped of every label ("unlabelled")."""
    out = tmp_path_factory.mktemp("mixed")
    (out / "cases").mkdir()
    row = read_jsonl(preprocessed / "preprocessed.jsonl")[0]
    case = load_case(preprocessed / row["path"])
    np.savez(out / "cases" / "labelled.npz", **case)
    bare = {k: v for k, v in case.items() if k not in ("sagittal_labels", "axial_labels")}
    bare["severity"] = np.full_like(case["severity"], -1)
    np.savez(out / "cases" / "unlabelled.npz", **bare)
    rows = [{"study_id": "labelled", "path": "cases/labelled.npz"},
            {"study_id": "unlabelled", "path": "cases/unlabelled.npz"}]
    (out / "preprocessed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.java
def test_the_report_files_keys_and_ranges(evaluated, preprocessed, model_file):
    _, out = evaluated
    assert (out / RESULTS_JSON).is_file() and (out / RESULTS_MD).is_file()
    saved = _strict_json(out / RESULTS_JSON)
    assert set(saved) == {"model", "data", "studies", "segmentation", "severity", "per_level", "per_study", "notes",
                          "files", "canal_moderate_severe", "reports", "measurements", "intervals"}
    # Every Dice and severity figure has its bootstrap interval over studies, and the interval holds the figure.
    intervals = saved["intervals"]
    assert intervals["sagittal_dice_macro"]["value"] == pytest.approx(saved["segmentation"]["sagittal"]["dice_macro"])
    assert intervals["axial_dice_macro"]["value"] == pytest.approx(saved["segmentation"]["axial"]["dice_macro"])
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        figure = intervals["severity"][name]
        assert figure["value"] == pytest.approx(saved["severity"][name])
        assert figure["low"] <= figure["value"] <= figure["high"]
    assert intervals["area_bias"]["value"] == pytest.approx(saved["measurements"]["area_mm2"]["bias"])
    assert "95% CI" in (out / RESULTS_MD).read_text()
    # The rule grade of the measured masks, on the levels whose predicted sac is not empty.
    rule_levels = sum(t >= 0 and r >= 0 for st in saved["per_study"]
                      for t, r in zip(st["severity_true"], st["rule_severity_pred"], strict=True))
    rule = saved["severity"].get("rule_of_measurements")
    assert (rule is None) == (rule_levels == 0)
    if rule:
        assert rule["n"] == rule_levels and 0 < rule["coverage"] <= 1
    # What the findings state: confident, and not contradicted by the rule grade of the measured masks.
    stated, by_hand = saved["severity"]["stated"], []
    for st in saved["per_study"]:
        for t, p, r, a, shown in zip(st["severity_true"], st["severity_pred"], st["rule_severity_pred"],
                                     st["abstained"], st["stated_pred"], strict=True):
            assert shown == (p if not a and r in (-1, p) else -1)
            if t >= 0 and shown >= 0:
                by_hand.append(t == shown)
    assert stated["n_stated"] == len(by_hand) and stated["n"] == saved["severity"]["n"]
    assert stated["coverage"] == pytest.approx(len(by_hand) / stated["n"])
    if by_hand:
        assert stated["selective_accuracy"] == pytest.approx(np.mean(by_hand))
        assert intervals["severity_stated"]["accuracy"]["value"] == pytest.approx(np.mean(by_hand))
    narrow = saved["canal_moderate_severe"]
    expected_levels = sum(sev >= 1 for study in saved["per_study"] for sev in study["severity_true"])
    assert narrow["levels"] == expected_levels
    assert (narrow["axial_dice_spinal_canal"] is None) == (expected_levels == 0)
    if expected_levels:
        assert 0.0 <= narrow["axial_dice_spinal_canal"] <= 1.0
    ids = [r["study_id"] for r in read_jsonl(preprocessed / "preprocessed.jsonl")]
    assert saved["studies"]["evaluated"] == ids and saved["studies"]["count"] == len(ids)
    assert saved["model"]["path"] == str(model_file.resolve()) and len(saved["model"]["sha256"]) == 64

    for view, cases in (("sagittal", len(ids)), ("axial", len(ids) * len(LEVELS))):
        metrics = saved["segmentation"][view]
        assert set(metrics) == SEGMENTATION_KEYS and metrics["n_cases"] == cases
        for s in list(Structure)[1:]:
            assert 0.0 <= metrics[f"dice_{s.value}"] <= 1.0
        assert metrics["hd95_spinal_canal"] is None or metrics["hd95_spinal_canal"] >= 0

    severity = saved["severity"]
    assert severity["n"] == len(ids) * len(LEVELS) and severity["n_studies"] == len(ids)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "ece_top_label"):
        assert 0.0 <= severity[key] <= 1.0
    for key in ("rsna_log_loss", "log_loss") + (("any_severe_log_loss", "rsna_score")
                                                if severity["any_severe_defined"] else ()):
        assert 0.0 < severity[key] < 10.0  # an untrained model is near log(3), never the clipped extreme
    assert {f"recall_{n}" for n in SEVERITY_NAMES} <= set(severity)
    assert np.asarray(severity["confusion_matrix"]).sum() == severity["n"]
    assert set(severity["calibration"]) == {"top_label", *SEVERITY_NAMES}
    assert sum(severity["calibration"]["top_label"]["count"]) == severity["n"]

    assert [e["level"] for e in saved["per_level"]] == list(LEVELS)
    assert sum(e["n"] for e in saved["per_level"]) == severity["n"]
    assert [s["study_id"] for s in saved["per_study"]] == ids

    markdown = (out / RESULTS_MD).read_text()
    for text in ("## Segmentation", "## Severity", "### Confusion matrix", "## Per level", str(model_file.resolve()),
                 *ids, *LEVELS, "rsna_score"):
        assert text in markdown


@pytest.mark.java
def test_the_figures_are_valid_pngs(evaluated):
    results, out = evaluated
    assert set(results["files"]["plots"]) == set(PLOTS)
    for name in PLOTS.values():
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


@pytest.mark.java
def test_reports_are_written_and_scored(evaluated):
    """The grounded writer states the model's grade at each graded level and no grade elsewhere (not assessable or
    withheld): the share of levels its text states is the findings' coverage."""
    results, out = evaluated
    reports = results["reports"]
    grounded = reports["writers"]["grounded"]
    assert set(grounded["nlg"]) >= {"bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "spice"}
    assert isinstance(grounded["nlg"]["spice"], str) and "not computed" in grounded["nlg"]["spice"].lower()
    assert 0 <= grounded["nlg"]["bleu_4"] <= grounded["nlg"]["bleu_1"] <= 1
    counts = reports["measurements"]
    assert counts["levels"] == counts["levels_graded"] + counts["levels_withheld"] + counts["levels_not_assessable"]
    assert grounded["clinical"]["stated_fraction"] == pytest.approx(counts["coverage"])
    if counts["levels_graded"]:
        stated = grounded["clinical"]["accuracy"] / grounded["clinical"]["stated_fraction"]
        assert stated == pytest.approx(counts["selective_accuracy"])
    oracle = reports["writers"]["grounded, true findings (upper bound)"]
    assert oracle["clinical"]["accuracy"] == 1.0  # the true grades, written and read back, are the true grades
    assert reports["measurements"]["rule_graded_levels"] > 0
    measured = results["measurements"]["area_mm2"]
    assert measured["n"] == results["segmentation"]["axial"]["n_cases"]  # every labelled axial level is measured
    assert measured["mae"] >= abs(measured["bias"])
    # The same rule on the labelled masks: the floor of the pixel grid. The phantoms' labels are rasterised from the
    # geometry their truth is measured on, so the floor is a few mm2 (~2.5 on the fixed evaluation set).
    floor = results["measurements"]["area_mm2_label_masks"]
    assert 0 < floor["n"] <= measured["n"] and floor["mae"] < 10.0
    assert results["measurements"]["ap_mm_label_masks"]["mae"] < 1.0
    markdown = (out / RESULTS_MD).read_text()
    assert "labelled masks (the floor)" in markdown
    assert "## Reports" in markdown and "clinical accuracy" in markdown and "TECHNIQUE:" in markdown


@pytest.mark.java
def test_the_numbers_are_the_metrics_of_the_same_predictions(evaluated, preprocessed, model_file):
    from lss.model import case_to_sample, collate_samples, load_model

    results, _ = evaluated
    model = load_model(model_file)
    rows = read_jsonl(preprocessed / "preprocessed.jsonl")
    cases = [load_case(preprocessed / r["path"]) for r in rows]
    batch = collate_samples([case_to_sample(c) for c in cases])
    with torch.no_grad():
        out = model(batch["sagittal"], batch["axial"], batch["axial_present"])

    sagittal_spacing = [np.linalg.norm(c["sagittal_affine"][:3, 1:3], axis=0) for c in cases]
    expected = segmentation_metrics(out.sagittal_logits, batch["sagittal_target"], spacing=np.stack(sagittal_spacing))
    assert results["segmentation"]["sagittal"] == pytest.approx(expected, rel=1e-5, nan_ok=True)

    axial_spacing = [np.linalg.norm(a[:3, 0:2], axis=0) for c in cases for a in c["axial_affines"]]
    expected = segmentation_metrics(out.axial_logits.flatten(0, 1), batch["axial_target"].flatten(0, 1),
                                    spacing=np.stack(axial_spacing))
    assert results["segmentation"]["axial"] == pytest.approx(expected, rel=1e-5, nan_ok=True)

    probs = out.severity_logits.softmax(-1)
    severity = severity_metrics(probs.reshape(-1, 3), batch["severity"].reshape(-1))
    score = rsna_score(probs, batch["severity"])
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "rsna_log_loss", "log_loss", "ece"):
        assert results["severity"][key] == pytest.approx(severity[key], rel=1e-5), key
    assert results["severity"]["confusion_matrix"] == severity["confusion_matrix"]
    for key in ("any_severe_log_loss", "rsna_score"):
        assert results["severity"][key] == pytest.approx(score[key], rel=1e-5, nan_ok=True), key
    level = severity_metrics(probs[:, 3], batch["severity"][:, 3])
    assert results["per_level"][3]["accuracy"] == pytest.approx(level["accuracy"])


def test_studies_without_labels_are_evaluated_and_their_metrics_skipped(model_file, mixed, tmp_path):
    results = evaluate_model(model_file, mixed, tmp_path / "mixed")
    assert results["studies"]["with_sagittal_labels"] == 1 and results["studies"]["with_severity"] == 1
    assert results["segmentation"]["sagittal"]["n_cases"] == 1 and results["severity"]["n"] == len(LEVELS)
    assert any("1 of 2 studies have no sagittal labels" in note for note in results["notes"])
    assert results["per_study"][1]["sagittal_dice_macro"] is None

    bare = evaluate_model(model_file, mixed, tmp_path / "bare", study_ids=["unlabelled"])
    assert bare["studies"]["evaluated"] == ["unlabelled"]
    assert bare["segmentation"] == {"sagittal": None, "axial": None} and bare["severity"] is None
    assert bare["files"]["plots"] == {} and not list((tmp_path / "bare").glob("*.png"))
    notes = " ".join(bare["notes"])
    assert "sagittal segmentation metrics skipped" in notes and "severity metrics" in notes
    assert all(math.isnan(e["accuracy"]) and e["n"] == 0 for e in bare["per_level"])
    markdown = (tmp_path / "bare" / RESULTS_MD).read_text()
    assert "Skipped: no segmentation labels" in markdown and "Skipped: no known severity" in markdown
    _strict_json(tmp_path / "bare" / RESULTS_JSON)


def test_a_split_with_unknown_ids_warns_and_lists_them(model_file, mixed, tmp_path):
    with pytest.warns(UserWarning, match="1 studies of the split are not in"):
        results = evaluate_model(model_file, mixed, tmp_path, study_ids=["unlabelled", "ghost", "unlabelled"])
    assert results["studies"]["evaluated"] == ["unlabelled"] and results["studies"]["missing"] == ["ghost"]


# (arguments changed from a valid call, exception, message)
ERROR_CASES = [
    ({"model_path": "missing.pt"}, FileNotFoundError, "model file .*missing.pt does not exist"),
    ({"data_dir": "nowhere"}, FileNotFoundError, "preprocessed.jsonl does not exist"),
    ({"study_ids": []}, ValueError, "the split is empty"),
    ({"study_ids": ["ghost", "phantom"]}, ValueError, "none of the 2 studies of the split"),
    ({"batch_size": 0}, ValueError, "batch_size must be at least 1"),
]


@pytest.mark.parametrize("changes, error, message", ERROR_CASES)
def test_errors(model_file, mixed, tmp_path, changes, error, message):
    arguments = {"model_path": model_file, "data_dir": mixed, "out_dir": tmp_path / "out"}
    for key, value in changes.items():
        arguments[key] = tmp_path / value if key in ("model_path", "data_dir") else value
    with pytest.raises(error, match=message):
        evaluate_model(**arguments)
    assert not (tmp_path / "out").exists()


def test_an_index_without_cases_is_an_error(model_file, tmp_path):
    (tmp_path / "preprocessed.jsonl").write_text("")
    with pytest.raises(ValueError, match="lists no preprocessed case"):
        evaluate_model(model_file, tmp_path, tmp_path / "out")


# (file content, key, expected ids or (exception, message))
SPLIT_CASES = [
    ('["a", "b", 7]', None, ["a", "b", "7"]),
    ('{"train": ["a"], "test": ["b", "c"]}', "test", ["b", "c"]),
    ('{"test": ["b"], "seed": 3}', None, ["b"]),
    ("a\n\n# held out\nb  # the second\n", None, ["a", "b"]),
    ("12345\n", None, ["12345"]),
    ('{"train": ["a"], "test": ["b"]}', None, (ValueError, r"needs a key; choose one of \['test', 'train'\]")),
    ('{"train": ["a"]}', "test", (ValueError, "got 'test'")),
    ('["a"]', "test", (ValueError, "holds a list")),
    ('[{"id": 1}]', None, (ValueError, "JSON list of study ids")),
]


@pytest.mark.parametrize("content, key, expected", SPLIT_CASES)
def test_read_split(tmp_path, content, key, expected):
    path = tmp_path / "split.txt"
    path.write_text(content)
    if isinstance(expected, tuple):
        with pytest.raises(expected[0], match=expected[1]):
            read_split(path, key)
    else:
        assert read_split(path, key) == expected


def test_read_split_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file"):
        read_split(tmp_path / "none.json")


def test_cli_and_job(model_file, mixed, tmp_path, capsys):
    from lss.cli import main

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["labelled"], "test": ["unlabelled"]}))
    code = main(["-q", "evaluate", "--model", str(model_file), "--data", str(mixed), "--out", str(tmp_path / "cli"),
                 "--split", str(split), "--split-key", "test"])
    printed = capsys.readouterr().out
    assert code == 0 and "evaluate: 1 studies" in printed and str(tmp_path / "cli" / RESULTS_JSON) in printed
    assert _strict_json(tmp_path / "cli" / RESULTS_JSON)["studies"]["evaluated"] == ["unlabelled"]

    assert main(["-q", "evaluate", "--model", str(tmp_path / "no.pt"), "--data", str(mixed), "--out",
                 str(tmp_path / "x")]) == 1
    assert "lss evaluate: model file" in capsys.readouterr().err

    spec = importlib.util.spec_from_file_location("evaluate_job", REPO_ROOT / "jobs" / "evaluate.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--model", str(model_file), "--data", str(mixed), "--out", str(tmp_path / "job"),
                     "--batch-size", "2"]) == 0
    assert "results:" in capsys.readouterr().out
    assert _strict_json(tmp_path / "job" / RESULTS_JSON)["studies"]["count"] == 2
    assert (tmp_path / "job" / PLOTS["dice"]).is_file()


def test_a_model_with_a_measured_grade_is_scored_on_it_and_on_its_head_alone(model_file, preprocessed, tmp_path):
    """The grade evaluated is the model's (its measured grade where a sac is measured); the head is reported beside."""
    from lss.model import case_to_sample, collate_samples, load_model, save_model
    from lss.model.measured_grade import fit_measured_grade

    model = load_model(model_file)
    rng = np.random.default_rng(0)  # a grade whose boundaries are the published ones (fitted on clean measurements)
    area = rng.uniform(30, 230, 400)
    ap = np.clip(area / 14 + rng.normal(0, 1.5, 400), 2, 20)
    grades = np.where(area < 75, 2, np.where((area < 100) | (ap < 10), 1, 0))
    model.measured_grade = fit_measured_grade(area, ap, grades, (0.9, 0.9))
    path = save_model(model, tmp_path / "graded.pt")
    results = evaluate_model(path, preprocessed, tmp_path / "graded", batch_size=2, reports=False)

    cases = [load_case(preprocessed / r["path"]) for r in read_jsonl(preprocessed / "preprocessed.jsonl")]
    batch = collate_samples([case_to_sample(c) for c in cases])
    with torch.no_grad():
        out = load_model(path)(batch["sagittal"], batch["axial"], batch["axial_present"])
    assert not torch.equal(out.severity_logits, out.head_logits)  # some level's sac was measured
    head = severity_metrics(out.head_logits.softmax(-1).reshape(-1, 3), batch["severity"].reshape(-1))
    given = severity_metrics(out.severity_logits.softmax(-1).reshape(-1, 3), batch["severity"].reshape(-1))
    assert results["severity"]["head_alone"]["balanced_accuracy"] == pytest.approx(head["balanced_accuracy"])
    assert results["severity"]["confusion_matrix"] == given["confusion_matrix"]
    assert results["model"]["measured_grade"]["fitted"] is True
    assert "The severity head alone" in (tmp_path / "graded" / RESULTS_MD).read_text()
