"""``bench/run_all.py`` keeps the sections of the benchmarks it did not rerun."""

from __future__ import annotations

import importlib.util
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"


def _run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rerun_replaces_only_its_section_and_keeps_the_others_with_their_date(tmp_path):
    run_all = _run_all()
    path = tmp_path / "results.md"
    path.write_text("# Benchmarks\n\n- Machine: x\n- Date: 2026-12-01 10:00 UTC\n\n"
                    "## serve: old serving\n\n`python bench/serve.py` — 300 s\n\n```text\nold serve line\n```\n\n"
                    "## model: old model\n\n`python bench/model.py` — 14 s\n\n```text\nmodel line\n```\n")
    sections = run_all._sections(path)
    assert list(sections) == ["serve", "model"]
    assert "`python bench/model.py` — 2026-12-01 10:00 UTC, 14 s" in sections["model"]  # the file's date, kept
    sections["serve"] = ["## serve: new serving", "", "```text", "new serve line", "```", ""]
    run_all._write(path, ["# Benchmarks", ""], sections)
    text = path.read_text()
    assert "new serve line" in text and "old serve line" not in text and "model line" in text
    assert text.index("## model") < text.index("## serve")  # the order of BENCHMARKS, not of the old file
