"""One DICOM file: is it DICOM, read it, and typed access to its attributes.

Everything the listing and the reader share about single files lives here: how a damaged file becomes a
``StudyError`` (TRUNCATED, naming the file by its base name and never quoting element values), and how an attribute
is read as text, a number or a fixed-length vector without raising on a missing or malformed value.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from lss.data.errors import ErrorCode, StudyError

__all__ = [
    "is_dicom_file",
    "read_file",
    "cut_short",
    "truncated",
    "text_of",
    "float_of",
    "int_of",
    "floats_of",
    "required_floats",
]

# Exceptions pydicom raises on a damaged (not merely non-DICOM) file.
_DAMAGED = (EOFError, OSError, ValueError, struct.error, KeyError, IndexError, TypeError, AttributeError)


def is_dicom_file(path: str | Path) -> bool:
    """True when a file starts with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_file(path: Path, *, stop_before_pixels: bool) -> Dataset | None:
    """Reads one file with pydicom.

    Args:
        path: the file.
        stop_before_pixels: read the header only.

    Returns:
        The dataset; None when the file is no DICOM file at all.

    Raises:
        StudyError: NOT_FOUND when the file does not exist, NOT_AN_IMAGE when it cannot be opened, TRUNCATED when it
            is a damaged DICOM file.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        return None
    except FileNotFoundError:
        raise StudyError(ErrorCode.NOT_FOUND, f"file {path.name} does not exist.", str(path)) from None
    except PermissionError:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"file {path.name} cannot be opened (permission denied).", str(path)
        ) from None
    except _DAMAGED as error:
        # The exception text may quote element values, so only its type is reported.
        raise StudyError(
            ErrorCode.TRUNCATED,
            f"DICOM file {path.name} ends early or is damaged ({type(error).__name__} while parsing).",
            str(path),
        ) from None


def _sop_class_name(ds: Dataset) -> str | None:
    """The SOP class name from the file meta (or the dataset), None when neither says."""
    meta = getattr(ds, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID", None) if meta is not None else None) or ds.get("SOPClassUID", None)
    return None if not uid else UID(str(uid)).name


def cut_short(path: Path, ds: Dataset) -> bool:
    """True for a file with the DICOM preamble that claims to be an image (or names no SOP class) yet lacks the
    attributes every image has: pydicom stops silently at the end of a truncated header."""
    if not is_dicom_file(path):
        return False
    name = _sop_class_name(ds)
    return name is None or "Image Storage" in name


def truncated(path: Path, what: str) -> StudyError:
    """The TRUNCATED error for a file that ``cut_short`` flags; ``what`` says where it stops."""
    return StudyError(ErrorCode.TRUNCATED, f"DICOM file {path.name} ends early: {what}.", str(path))


def text_of(ds: Dataset, keyword: str) -> str:
    """An attribute as stripped text; "" when absent or empty."""
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def float_of(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    """A single-valued attribute as a float; ``default`` when absent, empty or not a number."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def int_of(ds: Dataset, keyword: str) -> int | None:
    """A single-valued attribute as an int (truncated towards zero); None when absent or not a number."""
    value = float_of(ds, keyword)
    return None if value is None else int(value)


def floats_of(ds: Dataset, keyword: str, count: int) -> np.ndarray | None:
    """A multi-valued attribute as a float64 array of ``count`` finite values; None otherwise."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return None
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def required_floats(ds: Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    """``floats_of`` for a geometry attribute the slice cannot do without.

    Raises:
        StudyError: INCONSISTENT_GEOMETRY when the attribute is missing or malformed.
    """
    value = floats_of(ds, keyword, count)
    if value is None:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"slice {path.name} lacks a valid {keyword}; its position is unknown.",
            str(path),
        )
    return value
