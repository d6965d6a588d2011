"""What replicas leave on disk is removed: upload folders of a dead process (however fresh) or older than the stale
age, evidence past its time-to-live, and the least recently used evidence beyond the size budget."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lss.serve.housekeeping import UPLOAD_PREFIX, Sweeper, new_upload_folder, prune_results, sweep_uploads


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_upload_folders_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    mine = new_upload_folder(tmp_path)
    assert mine.name.startswith(f"{UPLOAD_PREFIX}{os.getpid()}_") and (mine.stat().st_mode & 0o777) == 0o700
    orphan = tmp_path / f"{UPLOAD_PREFIX}{_dead_pid()}_abc"
    orphan.mkdir()
    (orphan / "study.dcm").write_bytes(b"DICM")
    old_style = tmp_path / f"{UPLOAD_PREFIX}xyz"  # no pid: only its age counts
    old_style.mkdir()
    unrelated = tmp_path / "other_folder"
    unrelated.mkdir()
    assert sweep_uploads(tmp_path) == 1
    assert mine.is_dir() and not orphan.exists() and old_style.is_dir() and unrelated.is_dir()
    stale = time.time() - 7200
    os.utime(old_style, (stale, stale))
    os.utime(mine, (stale, stale))
    assert sweep_uploads(tmp_path, stale_s=3600) == 2
    assert not old_style.exists() and not mine.exists() and unrelated.is_dir()


def _evidence(root: Path, name: str, size: int, age_s: float) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "state.pkl").write_bytes(b"s" * size)
    when = time.time() - age_s
    os.utime(folder, (when, when))
    return folder


def test_evidence_is_pruned_by_age_then_least_recently_used_first(tmp_path):
    expired = _evidence(tmp_path, "a" * 32, 10, age_s=5000)
    oldest = _evidence(tmp_path, "b" * 32, 400, age_s=300)
    middle = _evidence(tmp_path, "c" * 32, 400, age_s=200)
    newest = _evidence(tmp_path, "d" * 32, 400, age_s=100)
    assert prune_results(tmp_path, ttl_s=3600, max_bytes=850) == 2
    assert not expired.exists() and not oldest.exists() and middle.is_dir() and newest.is_dir()
    assert prune_results(tmp_path, ttl_s=3600, max_bytes=850) == 0
    assert prune_results(tmp_path / "missing", ttl_s=1, max_bytes=1) == 0


def test_the_sweeper_runs_each_interval_survives_a_failing_round_and_stops():
    rounds: list[float] = []
    done = threading.Event()

    def task():
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            raise OSError("a round that fails")
        if len(rounds) >= 3:
            done.set()

    sweeper = Sweeper(task, interval_s=0.1)
    try:
        assert done.wait(timeout=20)
    finally:
        sweeper.stop()
    count = len(rounds)
    time.sleep(1.2)
    assert len(rounds) == count  # stopped
    with pytest.raises(ValueError):
        Sweeper(task, interval_s=0)
