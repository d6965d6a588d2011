"""lss.evaluation with a calibrated model: calibrated probabilities, both input paths (as given and sagittal-only),
and coverage / selective accuracy at the model's abstention threshold, in results.json and results.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lss.anatomy import LEVELS
from lss.data.cases import load_case, read_jsonl
from lss.evaluation import RESULTS_JSON, RESULTS_MD, evaluate_model
from lss.metrics import selective_metrics, severity_metrics
from lss.model.calibration import SeverityCalibration

PATH_KEYS = {"n", "accuracy", "balanced_accuracy", "macro_f1", "rsna_log_loss", "ece", "ece_uncalibrated", "coverage",
             "selective_accuracy", "selective_balanced_accuracy", "n_stated"}


@pytest.fixture(scope="module")
def preprocessed(preprocessed_nifti):
    return preprocessed_nifti


@pytest.fixture(scope="module")
def calibrated_model_file(tiny_model_file, tmp_path_factory):
    """The tiny model with a calibration that changes everything: two temperatures and a threshold."""
    from lss.model import load_model, save_model

    model = load_model(tiny_model_file)
    model.calibration = SeverityCalibration(temperature_axial=0.05, temperature_sagittal=3.0, abstain_threshold=0.6,
                                            fitted=True, n_axial=50, n_sagittal=50)
    return save_model(model, tmp_path_factory.mktemp("calibrated") / "model.pt")


@pytest.fixture(scope="module")
def evaluated(calibrated_model_file, preprocessed, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation_paths")
    return evaluate_model(calibrated_model_file, preprocessed, out, batch_size=1, reports=False), out


def _predictions(model_file, preprocessed):
    from lss.model import case_to_sample, collate_samples, load_model

    model = load_model(model_file)
    cases = [load_case(preprocessed / r["path"]) for r in read_jsonl(preprocessed / "preprocessed.jsonl")]
    batch = collate_samples([case_to_sample(c) for c in cases])
    with torch.no_grad():
        given = model(batch["sagittal"], batch["axial"], batch["axial_present"]).severity_logits
        sagittal = model(batch["sagittal"]).severity_logits
    return model, batch, given, sagittal


def test_both_paths_are_reported_with_coverage(evaluated, calibrated_model_file, preprocessed):
    results, out = evaluated
    model, batch, given, sagittal = _predictions(calibrated_model_file, preprocessed)
    targets = batch["severity"]
    expected = {"as_given": model.calibration.probabilities(given, batch["axial_present"]),
                "sagittal_only": model.calibration.probabilities(sagittal)}
    raw = {"as_given": given, "sagittal_only": sagittal}
    severity = results["severity"]
    assert severity["abstain_threshold"] == 0.6
    assert set(severity["paths"]) == {"as_given", "sagittal_only"}
    for path, probs in expected.items():
        metrics = severity["paths"][path]
        assert set(metrics) == PATH_KEYS
        flat = probs.reshape(-1, 3).numpy()
        reference = severity_metrics(flat, targets.reshape(-1).numpy())
        selective = selective_metrics(flat, targets.reshape(-1).numpy(), 0.6)
        for key in ("accuracy", "balanced_accuracy", "ece", "rsna_log_loss"):
            assert metrics[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), (path, key)
        for key in ("coverage", "selective_accuracy", "selective_balanced_accuracy", "n_stated"):
            assert metrics[key] == pytest.approx(selective[key], rel=1e-4, nan_ok=True), (path, key)
        uncalibrated = severity_metrics(raw[path].reshape(-1, 3).numpy(), targets.reshape(-1).numpy(), softmax=True)
        assert metrics["ece_uncalibrated"] == pytest.approx(uncalibrated["ece"], rel=1e-4, abs=1e-6)
        assert 0.0 <= metrics["coverage"] <= 1.0 and metrics["n_stated"] == round(metrics["coverage"] * metrics["n"])
    # A sharp axial temperature states (nearly) every level as given; a soft sagittal one withholds more.
    assert severity["paths"]["as_given"]["coverage"] > severity["paths"]["sagittal_only"]["coverage"]
    # The headline numbers are those of the calibrated predictions as given.
    for key in ("coverage", "selective_accuracy", "n_stated", "ece_uncalibrated"):
        assert severity[key] == severity["paths"]["as_given"][key]
    assert severity["ece"] == pytest.approx(severity["paths"]["as_given"]["ece"])
    assert results["model"]["calibration"] == model.calibration.as_dict()

    # Per study: which grades were withheld; per level: coverage and selective accuracy beside the accuracy.
    confidence = expected["as_given"].max(-1).values
    for b, study in enumerate(results["per_study"]):
        assert study["abstained"] == (confidence[b] < 0.6).tolist()
    for li, entry in enumerate(results["per_level"]):
        stated = confidence[:, li] >= 0.6
        assert entry["coverage"] == pytest.approx(float(stated.float().mean()))
        assert entry["level"] == LEVELS[li] and "selective_accuracy" in entry and "sagittal_only_accuracy" in entry

    saved = json.loads((out / RESULTS_JSON).read_text())
    assert saved["severity"]["paths"]["sagittal_only"]["coverage"] == pytest.approx(
        severity["paths"]["sagittal_only"]["coverage"])
    markdown = (out / RESULTS_MD).read_text()
    for text in ("### By input path", "sagittal only (no axial input)", "coverage", "selective accuracy",
                 "withheld (abstained)", "sagittal-only accuracy"):
        assert text in markdown, text


def test_an_uncalibrated_model_states_every_grade(tiny_model_file, preprocessed, tmp_path):
    results = evaluate_model(tiny_model_file, preprocessed, tmp_path, reports=False)
    severity = results["severity"]
    assert severity["abstain_threshold"] == 0.0 and severity["coverage"] == 1.0
    assert severity["selective_accuracy"] == pytest.approx(severity["accuracy"])
    assert severity["ece"] == pytest.approx(severity["ece_uncalibrated"])
    assert all(not any(s["abstained"]) for s in results["per_study"])
    assert any("no fitted calibration" in note for note in results["notes"])
    assert np.isfinite(severity["paths"]["sagittal_only"]["accuracy"])
