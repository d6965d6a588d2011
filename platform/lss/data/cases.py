"""The on-disk format of preprocessed studies, read by training, evaluation, inference, serving and reporting.

    OUT/cases/<study_id>.npz   one shard per study (the arrays of ``PreprocessedStudy.arrays``)
    OUT/preprocessed.jsonl     the index: one row per case (path, sha256, fingerprint, labels, label_groups, record)
    OUT/errors.jsonl           one row per failed study (code, message, stage)

The preprocessing stage (``lss.preprocessing.pipeline``) writes this format and every later stage reads it through
this module, which imports numpy and the standard library only: reading a shard needs neither Ray nor MONAI.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CASES_DIR",
    "INDEX_NAME",
    "ERRORS_NAME",
    "CaseArrays",
    "file_sha256",
    "model_version",
    "read_jsonl",
    "write_jsonl",
    "write_case",
    "load_case",
    "select_indexed_studies",
]

CASES_DIR = "cases"
INDEX_NAME = "preprocessed.jsonl"
ERRORS_NAME = "errors.jsonl"


class CaseArrays(Protocol):
    """What ``write_case`` needs of a preprocessed study (``lss.preprocessing.transforms.PreprocessedStudy``)."""

    sagittal_labels: np.ndarray | None
    axial_labels: np.ndarray | None
    axial_present: np.ndarray
    severity: np.ndarray
    label_groups: list[list[str]] | None
    info: dict[str, Any]

    def arrays(self) -> dict[str, np.ndarray]: ...


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_version(path: str | Path) -> str:
    """The version of a model file: the first 12 hex digits of its SHA-256."""
    return file_sha256(Path(path))[:12]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (blank lines skipped); [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Writes one JSON object per line, atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def write_case(case: CaseArrays, study_id: str, out_dir: str | Path) -> dict[str, Any]:
    """Writes one case shard, atomically, to ``out_dir/cases/<study_id>.npz``.

    Args:
        case: the preprocessed study.
        study_id: the study's id (the shard's file name).
        out_dir: the preprocessing output folder.

    Returns:
        The case's fields of its index row: ``path`` (relative to ``out_dir``), ``sha256``, ``has_sagittal_labels``,
        ``has_axial_labels``, ``label_groups``, ``axial_present``, ``severity`` and ``info``.
    """
    path = Path(out_dir) / CASES_DIR / f"{study_id}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **case.arrays())
    tmp.replace(path)
    return {
        "path": f"{CASES_DIR}/{path.name}",
        "sha256": file_sha256(path),
        "has_sagittal_labels": case.sagittal_labels is not None,
        "has_axial_labels": case.axial_labels is not None,
        "label_groups": case.label_groups,
        "axial_present": np.asarray(case.axial_present).tolist(),
        "severity": np.asarray(case.severity).tolist(),
        "info": case.info,
    }


def load_case(path: str | Path) -> dict[str, np.ndarray]:
    """Loads a preprocessed case shard (see ``PreprocessedStudy`` for the arrays; a case with sagittal labels has
    ``label_partition`` and ``labelled_span_only`` too)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def select_indexed_studies(rows: list[dict[str, Any]], study_ids: list[str] | None,
                           index: Path) -> tuple[list[dict], list[str]]:
    """The rows of a preprocessing index for the given study ids, in their order, and the ids it does not hold.

    Args:
        rows: the rows of ``preprocessed.jsonl``.
        study_ids: the split; None = every row.
        index: the index file (for messages).

    Raises:
        ValueError: for an empty index, an empty split, or a split with no study in the index (missing ids of a
            partly matching split are a warning).
    """
    if not rows:
        raise ValueError(f"{index} lists no preprocessed case: nothing to evaluate.")
    if study_ids is None:
        return rows, []
    wanted = list(dict.fromkeys(str(s) for s in study_ids))
    if not wanted:
        raise ValueError("the split is empty: give at least one study id (or none, to evaluate every case).")
    by_id = {str(row["study_id"]): row for row in rows}
    missing = [s for s in wanted if s not in by_id]
    chosen = [by_id[s] for s in wanted if s in by_id]
    if not chosen:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"none of the {len(wanted)} studies of the split is in {index} ({shown}).")
    if missing:
        warnings.warn(f"{len(missing)} studies of the split are not in {index} and are skipped: "
                      f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", stacklevel=3)
    return chosen, missing
