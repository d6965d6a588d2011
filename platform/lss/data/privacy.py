"""What may name a study in logs: a short hash of its id, never the id itself.

Folder names of clinical exports can hold patient names, and log lines travel further than the user's own files
(terminals, CI logs, a cluster's log store). Files written to disk for the user (``errors.jsonl``, summaries) keep
the ids: they are the user's, next to the data.
"""

from __future__ import annotations

import hashlib

__all__ = ["anonymous_id"]


def anonymous_id(study_id: str) -> str:
    """A short, stable stand-in for a study id in log lines: ``"study-"`` and the first 10 hex digits of its SHA-256.

    Args:
        study_id: the study's id (a folder or file name, possibly identifying).

    Returns:
        e.g. ``"study-3b7c0e9a1f"``; the same id always gives the same text, so log lines can still be matched.
    """
    return "study-" + hashlib.sha256(str(study_id).encode()).hexdigest()[:10]
