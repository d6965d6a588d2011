"""Errors raised while reading or checking a study, each with a stable machine-readable code.

Preprocessing lists them in its errors file, the HTTP API turns them into 4xx answers; the message never contains
patient identifiers (it names files relative to the study and DICOM attributes by keyword only).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ErrorCode", "StudyError"]


class ErrorCode(str, Enum):
    """Why a study (or one of its series) could not be used."""

    NOT_FOUND = "not_found"  # the path does not exist
    NO_IMAGE = "no_image"  # no DICOM, NIfTI or MHA image in what was given
    NOT_AN_IMAGE = "not_an_image"  # a file that should be an image is not one
    UNSUPPORTED_FORMAT = "unsupported_format"
    TRUNCATED = "truncated"  # a file ends early / pixel data cannot be decoded
    WRONG_MODALITY = "wrong_modality"  # DICOM Modality other than MR
    MISSING_SLICES = "missing_slices"  # a gap in the slice positions of a series
    TOO_FEW_SLICES = "too_few_slices"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"  # mixed orientation / size / spacing within a series
    ABSURD_SPACING = "absurd_spacing"
    NON_FINITE = "non_finite"  # NaN or infinite voxel values
    MISSING_SAGITTAL = "missing_sagittal"
    BAD_LABELS = "bad_labels"  # a label table or mask that does not fit the study (e.g. a value the card does not map)
    EMPTY_LABELS = "empty_labels"  # a mask without a structure its dataset requires, or labelling nothing at all
    PREPROCESSING_FAILED = "preprocessing_failed"  # any other failure inside a transform
    BAD_ARCHIVE = "bad_archive"  # an upload that is not a readable zip, or one that is unsafe / too large unpacked
    MULTIPLE_STUDIES = "multiple_studies"  # one study was expected, several were found
    IMAGE_TOO_LARGE = "image_too_large"  # over a limit of lss.config.InputLimits, found from headers before decoding


class StudyError(Exception):
    """A study or series that cannot be used, with a stable ``code`` and a human ``message``.

    Args:
        code: what went wrong, one of ``ErrorCode``.
        message: a sentence for a person; no patient identifiers.
        path: the file or folder concerned, if any (as given by the caller).
    """

    def __init__(self, code: ErrorCode | str, message: str, path: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.message = message
        self.path = path
        super().__init__(f"[{self.code.value}] {message}" + (f" ({path})" if path else ""))

    def __reduce__(self):
        # Pickled across processes (Ray tasks, Serve replicas): rebuilt from its fields, not from the formatted text.
        return (type(self), (self.code, self.message, self.path))

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code.value, "message": self.message, "path": self.path}
