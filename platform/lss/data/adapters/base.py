"""What every dataset adapter returns: the manifest records it could build and the problems it met.

Every adapter module has one entry point with the same signature::

    discover(root: str | Path) -> AdapterResult

(the adapters that read image headers, "generic" and "rsna2024", also take ``limits``, the reading budget of
``lss.data.io.limits``). Error messages name no file or folder of a study and quote no DICOM text value: they may be
shown to whoever uploaded the study; the entry's ``path`` is for local logs.

``AdapterResult`` is a named tuple, so both ``result.records`` and ``records, errors = discover(root)`` work.
``records`` are ``StudyRecord``s with absolute paths; ``errors`` are plain dicts (JSON-ready, one per problem)::

    {"study_id": "spider_3_t1", "code": "missing_sagittal", "message": "...", "path": "/abs/path" or None}

A study with an error entry is either left out (nothing usable: no sagittal series, unreadable) or kept without the
part that failed (a missing axial series, a label that does not parse); the message says which. Adapters raise only
for problems with the dataset as a whole (``root`` missing, a label table without its key columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from lss.data.errors import ErrorCode, StudyError
from lss.data.manifest import StudyRecord

__all__ = ["AdapterResult", "AdapterError", "error_entry", "check_root"]

AdapterError = dict[str, str | None]


class AdapterResult(NamedTuple):
    """Records and error entries of one dataset (see the module docstring for the error entry keys)."""

    records: list[StudyRecord]
    errors: list[AdapterError]


def error_entry(
    study_id: str, error: StudyError | ErrorCode | str, message: str | None = None, path: str | Path | None = None
) -> AdapterError:
    """An error entry from a ``StudyError`` (``error_entry("s1", err)``) or from its parts.

    Args:
        study_id: the study concerned ("" when none can be named).
        error: a ``StudyError``, or an ``ErrorCode`` (or its value) together with ``message``.
        message: the message, when ``error`` is a code.
        path: the file or folder concerned; default: the ``StudyError``'s own path.

    Raises:
        ValueError: when ``error`` is a code but ``message`` is missing, or the code is unknown.
    """
    if isinstance(error, StudyError):
        entry = error.to_dict()
        if path is not None:
            entry["path"] = str(path)
        return {"study_id": study_id, **entry}
    if message is None:
        raise ValueError(f"an error entry for code {error!r} needs a message.")
    return {
        "study_id": study_id,
        "code": ErrorCode(error).value,
        "message": message,
        "path": None if path is None else str(path),
    }


def check_root(root: str | Path) -> Path:
    """``root`` as an absolute ``Path``.

    Raises:
        StudyError: NOT_FOUND when it does not exist.
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the dataset root does not exist.", str(path))
    return path.resolve()
