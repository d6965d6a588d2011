"""`lss evaluate` on a real labelled set scores only the structures its cases label."""

from __future__ import annotations

import math

import pytest

from conftest import REPO_ROOT
from lss.config import PreprocessConfig
from lss.data.adapters.card import discover
from lss.data.manifest import write_manifest
from lss.evaluation import evaluate_model
from lss.preprocessing.pipeline import run_preprocessing

CARD = REPO_ROOT / "data" / "cards" / "fastcleverseg_vb2.yaml"


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared" / "data" / "real" / "fastcleverseg_vb2").is_dir(),
                    reason="../shared/data/real is absent")
def test_a_bodies_only_real_set_is_scored_on_bodies_only(tiny_model_file, tmp_path):
    write_manifest(discover(CARD).records[:2], tmp_path / "in" / "manifest.jsonl")
    run_preprocessing(tmp_path / "in" / "manifest.jsonl", tmp_path / "pre", PreprocessConfig(), engine="serial")
    results = evaluate_model(tiny_model_file, tmp_path / "pre", tmp_path / "eval")
    sagittal = results["segmentation"]["sagittal"]
    assert sagittal["n_cases"] == 2
    assert 0.0 <= sagittal["dice_vertebral_body"] <= 1.0 and "hd95_vertebral_body" in sagittal  # NaN: none predicted
    for name in ("posterior_elements", "disc", "spinal_canal"):
        assert sagittal[f"dice_{name}"] is None or math.isnan(sagittal[f"dice_{name}"])
    assert sagittal["dice_macro"] == pytest.approx(sagittal["dice_vertebral_body"])
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| disc | n/a | n/a |" in table and "vertebral body" in table
