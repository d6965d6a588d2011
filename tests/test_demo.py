"""The main job end to end in a subprocess (its own embedded Ray), tiny: every stage `make demo` runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# The job runs in a subprocess with its own embedded Ray, and scores its reports with Java.
pytestmark = [pytest.mark.ray, pytest.mark.java]


def test_demo_job_runs_every_stage_and_reuses_outputs(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, str(REPO_ROOT / "jobs" / "demo.py"), "--out", str(out), "--cases", "6", "--workers", "1",
        "--epochs", "1", "--trials", "1", "--set", "train.steps_per_epoch=2", "--set", "model.base_channels=8",
        "--set", "model.attention_dim=32", "--set", "model.text_encoder=random-small",
        "--set", "ray.num_cpus=2", "--set", "ray.object_store_mb=300", "--set", "ray.include_dashboard=false",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "6 ok, 0 failed of 6 studies" in first.stdout
    assert "1 ok, 0 failed of 1 studies" in first.stdout  # the real scan
    # The labelled real sets, through their cards: trained on beside the phantoms, scored on held-out scans.
    assert "17 ok, 0 failed of 17 studies" in first.stdout and "17 ok, 3 failed of 20 studies" in first.stdout
    assert "real data: fastcleverseg_vb2 (" in first.stdout and "vertebral_body Dice" in first.stdout
    assert "real data: vesal_sagittal_2d (5 held-out scans)" in first.stdout
    for step in range(1, 12):
        assert f"[{step}]" in first.stdout
    diagnoses = sorted(p.name for p in (out / "diagnoses").glob("*.json"))
    assert len(diagnoses) == 2, diagnoses  # the held-out synthetic study and the real scan, over HTTP
    real = json.loads((out / "diagnoses" / "real_scan.json").read_text())
    assert not real["has_axial"] and len(real["levels"]) == 5 and real["report"].startswith("TECHNIQUE:")
    assert (out / "diagnoses" / "real_scan_montage.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "evaluation" / "results.md").is_file()
    assert "reusing" not in first.stdout

    second = subprocess.run([*command, "--stop-after", "train"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "(0 processed, 6 unchanged)" in second.stdout
    assert "reusing the trained model" in second.stdout
