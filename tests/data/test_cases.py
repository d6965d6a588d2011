"""lss.data.cases: a case shard and its index row round-trip, JSON lines, the split selection and its errors, and
reading a shard imports neither Ray nor the preprocessing stage."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from lss.data.cases import (
    CASES_DIR,
    file_sha256,
    load_case,
    read_jsonl,
    select_indexed_studies,
    write_case,
    write_jsonl,
)


@dataclass
class _Case:
    sagittal_labels: np.ndarray | None = None
    axial_labels: np.ndarray | None = None
    axial_present: np.ndarray = field(default_factory=lambda: np.array([True, False]))
    severity: np.ndarray = field(default_factory=lambda: np.array([2, -1], dtype=np.int8))
    label_groups: list[list[str]] | None = None
    info: dict[str, Any] = field(default_factory=lambda: {"single_slice": False})

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"sagittal_image": np.arange(24, dtype=np.float16).reshape(2, 3, 4), "severity": self.severity}
        if self.sagittal_labels is not None:
            out["sagittal_labels"] = self.sagittal_labels
        return out


def test_a_case_round_trips_with_its_index_row(tmp_path):
    case = _Case(sagittal_labels=np.ones((2, 3, 4), dtype=np.int16), label_groups=[["disc"]])
    row = write_case(case, "s1", tmp_path)
    assert row["path"] == f"{CASES_DIR}/s1.npz" and row["sha256"] == file_sha256(tmp_path / row["path"])
    assert (row["has_sagittal_labels"], row["has_axial_labels"]) == (True, False)
    assert row["axial_present"] == [True, False] and row["severity"] == [2, -1] and row["label_groups"] == [["disc"]]
    loaded = load_case(tmp_path / row["path"])
    assert set(loaded) == set(case.arrays())
    assert np.array_equal(loaded["sagittal_image"], case.arrays()["sagittal_image"])
    assert [p.name for p in (tmp_path / CASES_DIR).iterdir()] == ["s1.npz"]  # no temporary file left


def test_json_lines_round_trip_and_a_missing_file_is_empty(tmp_path):
    rows = [{"study_id": "a", "n": 1}, {"study_id": "b", "n": None}]
    write_jsonl(rows, tmp_path / "x.jsonl")
    assert read_jsonl(tmp_path / "x.jsonl") == rows
    assert read_jsonl(tmp_path / "none.jsonl") == []


ROWS = [{"study_id": "a"}, {"study_id": "b"}, {"study_id": "7"}]

# (study ids, expected chosen ids, expected missing ids)
SELECTIONS = [
    (None, ["a", "b", "7"], []),
    (["b", "a", "b"], ["b", "a"], []),
    ([7, "a"], ["7", "a"], []),
]


@pytest.mark.parametrize("study_ids, chosen, missing", SELECTIONS)
def test_select_indexed_studies(study_ids, chosen, missing, tmp_path):
    rows, absent = select_indexed_studies(ROWS, study_ids, tmp_path / "index")
    assert [r["study_id"] for r in rows] == chosen and absent == missing


def test_select_indexed_studies_warns_and_refuses(tmp_path):
    with pytest.warns(UserWarning, match="1 studies of the split are not in"):
        rows, missing = select_indexed_studies(ROWS, ["a", "zz"], tmp_path / "index")
    assert [r["study_id"] for r in rows] == ["a"] and missing == ["zz"]
    for rows, ids, message in (([], None, "lists no preprocessed case"), (ROWS, [], "the split is empty"),
                               (ROWS, ["zz"], "none of the 1 studies")):
        with pytest.raises(ValueError, match=message):
            select_indexed_studies(rows, ids, tmp_path / "index")


def test_reading_a_shard_imports_neither_ray_nor_the_preprocessing_stage():
    code = ("import sys, lss.data.cases; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'lss.preprocessing'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
