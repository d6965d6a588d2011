"""Replica logs hold no traceback of an expected refusal and no exception message at all: Serve logs every exception
a deployment raises, and a message can quote an uploaded file name."""

from __future__ import annotations

import io
import logging

from lss.data.errors import ErrorCode, StudyError
from lss.serve.errors import RedactingFilter, ServeError, install_log_redaction

NAME = "Smith^John_MRN-67890"


def _logged(error: Exception) -> str:
    stream = io.StringIO()
    logger = logging.getLogger(f"test.redaction.{type(error).__name__}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.addFilter(RedactingFilter())
    try:
        raise error
    except Exception:
        logger.exception("Request failed.")
    logger.removeHandler(handler)
    return stream.getvalue()


def test_an_expected_refusal_is_one_line_with_its_code():
    for error, code in ((StudyError(ErrorCode.BAD_ARCHIVE, "archive entry 1 cannot be unpacked."), "bad_archive"),
                        (ServeError(413, "too_large", "too large"), "too_large")):
        text = _logged(error)
        assert text.count("\n") == 1 and "Traceback" not in text and f"Refused: {code}" in text


def test_any_other_exception_keeps_its_frames_but_not_its_message():
    text = _logged(FileExistsError(f"[Errno 17] File exists: '/tmp/x/{NAME}/b.dcm'"))
    assert "Traceback" in text and "test_log_redaction.py" in text and "FileExistsError" in text
    assert NAME not in text and "message withheld" in text


def test_installing_twice_adds_one_filter():
    install_log_redaction(("test.redaction.install",))
    install_log_redaction(("test.redaction.install",))
    assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger("test.redaction.install").filters) == 1



def test_unretrieved_task_errors_lose_their_message_and_expected_ones_their_traceback(caplog):
    """asyncio's own report of a failed task nobody awaited (its repr quotes the message) goes through the filter."""
    import asyncio
    import gc

    async def fail(error):
        raise error

    async def main():
        for error in (StudyError(ErrorCode.BAD_ARCHIVE, f"refused {NAME}"), FileExistsError(f"exists: {NAME}")):
            task = asyncio.ensure_future(fail(error))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            del task
            gc.collect()

    install_log_redaction()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
    text = caplog.text
    assert text.count("Task exception was never retrieved") == 2
    assert NAME not in text and "Refused: bad_archive" in text and "FileExistsError (message withheld" in text


def test_an_unretrieved_ray_task_error_keeps_its_class_but_not_its_text(caplog):
    """Ray logs the text of a task error nobody retrieved (remote traceback and message in one string) when the
    reference is collected; through its own handler, as a replica would."""
    import traceback

    from ray._private.worker import _unhandled_error_handler
    from ray.exceptions import RayTaskError

    install_log_redaction()
    with caplog.at_level(logging.ERROR, logger="ray._private.worker"):
        for cause in (StudyError(ErrorCode.BAD_ARCHIVE, f"refused {NAME}"), FileExistsError(f"exists: {NAME}")):
            try:
                raise cause
            except Exception as error:  # noqa: BLE001 - the test builds Ray's error from a real traceback
                remote = RayTaskError("ServeReplica:lss:Preprocessor.prepare", traceback.format_exc(), error)
            assert NAME in str(remote)  # what Ray would log as it is
            _unhandled_error_handler(remote)
    text = caplog.text
    assert text.count("Unhandled error") == 2 and NAME not in text and "Traceback" not in text
    assert "lss.data.errors.StudyError" not in text
    assert ": StudyError (message withheld" in text and ": FileExistsError (message withheld" in text
