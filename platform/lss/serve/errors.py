"""Typed errors of the serving graph: each carries the HTTP status, a stable code and a sentence for a person.

A deployment raises them (never returns ``{"ok": False}``); they cross process boundaries inside Ray's task errors
and the ingress answers them as ``{"code", "message"}``. Messages never hold a patient identifier or a client's
file name.
"""

from __future__ import annotations

from lss.data.errors import ErrorCode, StudyError

__all__ = ["ServeError", "study_error_status"]

# Codes of uploads that are not a study at all (400); every other StudyError is a study that cannot be used (422).
_BAD_REQUEST = frozenset({ErrorCode.BAD_ARCHIVE, ErrorCode.UNSUPPORTED_FORMAT, ErrorCode.NO_IMAGE,
                          ErrorCode.NOT_AN_IMAGE, ErrorCode.MULTIPLE_STUDIES})


class ServeError(Exception):
    """An error with its HTTP answer.

    Args:
        status: the HTTP status (4xx/5xx).
        code: a stable machine-readable code, e.g. "not_found", "too_large".
        message: a sentence for a person, without identifiers.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status must be a 4xx or 5xx HTTP status, got {status}.")
        super().__init__(message)
        self.status, self.code, self.message = int(status), str(code), str(message)

    def __reduce__(self):
        return (type(self), (self.status, self.code, self.message))


def study_error_status(error: StudyError) -> int:
    """400 for an upload that holds no usable image or archive, 413 for a study over the reading budget
    (``lss.config.InputLimits``), 422 for a study that cannot be used."""
    if error.code is ErrorCode.IMAGE_TOO_LARGE:
        return 413
    return 400 if error.code in _BAD_REQUEST else 422
