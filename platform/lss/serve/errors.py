"""Typed errors of the serving graph: each carries the HTTP status, a stable code and a sentence for a person.

A deployment raises them (never returns ``{"ok": False}``); they cross process boundaries inside Ray's task errors
and the ingress answers them as ``{"code", "message"}``. Messages never hold a patient identifier or a client's
file name.
"""

from __future__ import annotations

import logging
import re
import traceback

from lss.data.errors import ErrorCode, StudyError

__all__ = ["ServeError", "study_error_status", "RedactingFilter", "install_log_redaction"]

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


# How ray._private.worker starts its report of an error nobody retrieved (Ray 2.x).
UNHANDLED_PREFIX = "Unhandled error"


def _error_class(text: str) -> str:
    """The short class name on the last "module.Class: message" line of a formatted traceback, or "an error"."""
    for line in reversed(text.strip().splitlines()):
        match = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", line.strip())
        if match and not line.startswith((" ", "\t")):
            return match.group(1).rsplit(".", 1)[-1]
    return "an error"


class RedactingFilter(logging.Filter):
    """Keeps tracebacks and exception messages out of the replicas' logs.

    Serve logs every exception a deployment method raises as "Request failed." with its traceback, and asyncio logs
    "Task exception was never retrieved" with the task's repr (which quotes the message) for Serve's internal tasks
    that were resolving a failed stage's response for the next stage. A record keeps its first line only; an
    expected refusal (``StudyError``, ``ServeError``) gets its code and no traceback; any other exception keeps its
    frames (file and line, for whoever debugs it) but not its message, which can quote an uploaded file name or a
    DICOM value. Ray's own report of a task error that nobody retrieved (``ray._private.worker``: the error's text in
    the message, no exc_info) keeps its first words and the error's class.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            message = str(record.msg)
            if message.startswith(UNHANDLED_PREFIX):
                # Ray logs the text of a task error nobody retrieved when its reference is collected (when is up to
                # the garbage collector): the remote traceback and the message, as one string. Keep its class.
                kind = _error_class(message)
                record.msg, record.args = (f"{UNHANDLED_PREFIX} a Ray task failed and nobody retrieved its error: "
                                           f"{kind} (message withheld: it can hold client data)"), ()
            return True
        kind, error, trace = record.exc_info
        first_line = record.getMessage().splitlines()[0] if record.getMessage() else ""
        record.args, record.exc_info = (), None
        if isinstance(error, StudyError | ServeError):
            code = error.code.value if isinstance(error, StudyError) else error.code
            record.msg, record.exc_text = f"{first_line} Refused: {code} (an expected error; no traceback).", None
        else:
            record.msg = first_line
            record.exc_text = f"Traceback (most recent call last):\n{''.join(traceback.format_tb(trace))}" \
                              f"{kind.__name__} (message withheld: it can hold client data)"
        return True


def install_log_redaction(logger_names: tuple[str, ...] = ("ray.serve", "asyncio", "ray._private.worker")) -> None:
    """Adds one ``RedactingFilter`` to each logger (Serve's own, asyncio's and Ray's worker's, which reports
    unretrieved task errors) in this process; idempotent."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
