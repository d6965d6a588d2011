"""Our own layout: a folder with a ``manifest.jsonl`` (the synthetic datasets write one).

The manifest is read with ``lss.data.manifest.read_manifest``; relative paths become absolute, and every referenced
file is checked: a study whose sagittal image is missing is left out, a missing axial series or mask is dropped
from its record; each gives an error entry.
"""

from __future__ import annotations

from pathlib import Path

from lss.data.adapters.base import AdapterError, AdapterResult, check_root, error_entry
from lss.data.errors import ErrorCode, StudyError
from lss.data.manifest import MANIFEST_NAME, StudyRecord, read_manifest

__all__ = ["discover"]


def discover(root: str | Path) -> AdapterResult:
    """Reads ``root/manifest.jsonl`` (or ``root`` itself when it is the manifest file).

    Args:
        root: the dataset folder, or its manifest file.

    Returns:
        ``AdapterResult`` with absolute paths.

    Raises:
        StudyError: NOT_FOUND when ``root`` or its manifest does not exist.
        ValueError: when a manifest line is not a valid record (from ``read_manifest``, naming the line).
    """
    root = check_root(root)
    manifest = root if root.is_file() else root / MANIFEST_NAME
    if not manifest.is_file():
        raise StudyError(ErrorCode.NOT_FOUND, f"{root.name} has no {MANIFEST_NAME}.", str(manifest))
    records: list[StudyRecord] = []
    errors: list[AdapterError] = []
    for record in read_manifest(manifest):
        series = []
        for item in record.series:
            path = record.resolve(item.path)
            if path is None or not path.exists():
                errors.append(
                    error_entry(
                        record.study_id, ErrorCode.NOT_FOUND, f"{item.view} series {item.series_id} is missing.", path
                    )
                )
                continue
            mask = record.resolve(item.mask_path)
            if mask is not None and not mask.exists():
                errors.append(
                    error_entry(
                        record.study_id,
                        ErrorCode.NOT_FOUND,
                        f"the mask of series {item.series_id} is missing; the series is kept without it.",
                        mask,
                    )
                )
                mask = None
            series.append(item.model_copy(update={"path": str(path), "mask_path": None if mask is None else str(mask)}))
        if not any(item.view == "sagittal" for item in series):
            errors.append(
                error_entry(
                    record.study_id,
                    ErrorCode.MISSING_SAGITTAL,
                    "the study has no (existing) sagittal series; it is left out.",
                    manifest,
                )
            )
            continue
        kept = record.model_copy(update={"series": series})
        kept.root = record.root
        records.append(kept)
    return AdapterResult(records, errors)
