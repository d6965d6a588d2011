"""The main job end to end in a subprocess (its own embedded Ray), small: what `make demo` runs."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_demo_job_runs_end_to_end_and_reuses_outputs(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, str(REPO_ROOT / "jobs" / "demo.py"), "--out", str(out), "--cases", "2", "--workers", "1",
        "--set", "synth.sagittal_inplane_mm=[0.9, 0.9]", "--set", "synth.axial_inplane_mm=[0.9, 0.9]",
        "--set", "synth.through_slice_samples=1", "--set", "ray.num_cpus=2", "--set", "ray.object_store_mb=200",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 ok, 0 failed of 2 studies" in first.stdout
    assert "1 ok, 0 failed of 1 studies" in first.stdout  # the real scan
    for step in ("[1]", "[2]", "[3]", "[4]", "[5]", "[6]"):
        assert step in first.stdout
    assert (out / "synth" / "manifest.jsonl").is_file()
    assert len(list((out / "preprocessed" / "cases").glob("*.npz"))) == 2
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0
    assert "(0 processed, 2 unchanged)" in second.stdout
