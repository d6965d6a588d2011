"""One DICOM file: is it DICOM, read it, what its pixels will cost, and typed access to its attributes.

Everything the listing and the reader share about single files lives here: how a damaged file becomes a
``StudyError`` (TRUNCATED, naming the file by a label such as "file 3 of the series", never by its name, and never
quoting element values), the reading budget of one file (``read_file_sized``: a deflated file is inflated with a
cap before pydicom inflates it in one go; ``DicomFootprint``: what its pixels take once decoded), and how an
attribute is read as text, a number or a fixed-length vector without raising on a missing or malformed value.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.limits import InflateBudget, check_declared_size, check_inflated_size

__all__ = [
    "DicomFootprint",
    "is_dicom_file",
    "read_file",
    "read_file_sized",
    "footprint_of",
    "cut_short",
    "truncated",
    "text_of",
    "float_of",
    "int_of",
    "floats_of",
    "required_floats",
    "quoted_modality",
]

# Exceptions pydicom raises on a damaged (not merely non-DICOM) file.
_DAMAGED = (EOFError, OSError, ValueError, struct.error, KeyError, IndexError, TypeError, AttributeError, zlib.error)


class DicomFootprint(NamedTuple):
    """What one DICOM file's image costs to read, from its header (``footprint_of``).

    Attributes:
        rows, columns: Rows and Columns (0 when absent).
        frames: NumberOfFrames (1 when absent).
        samples: SamplesPerPixel (1 when absent).
        bytes_per_sample: BitsAllocated rounded up to whole bytes (2 when absent).
        stored_bytes: what the dataset takes once read: the file's size, or the inflated size of a deflated file.
    """

    rows: int
    columns: int
    frames: int
    samples: int
    bytes_per_sample: int
    stored_bytes: int

    @property
    def voxels(self) -> int:
        return self.rows * self.columns * self.frames

    @property
    def decoded_bytes(self) -> int:
        """The larger of the decoded pixels and the dataset as read (a huge non-pixel element counts too)."""
        return max(self.voxels * self.samples * self.bytes_per_sample, self.stored_bytes)


def footprint_of(ds: Dataset, stored_bytes: int) -> DicomFootprint:
    """The ``DicomFootprint`` of a header (read with or without its pixel data).

    Args:
        ds: the dataset.
        stored_bytes: the bytes its dataset takes once read (``read_file_sized``).
    """

    def count(keyword: str, default: int) -> int:
        value = int_of(ds, keyword)
        return default if value is None else max(value, 0)

    bits = count("BitsAllocated", 16)
    return DicomFootprint(
        rows=count("Rows", 0),
        columns=count("Columns", 0),
        frames=max(count("NumberOfFrames", 1), 1),
        samples=max(count("SamplesPerPixel", 1), 1),
        bytes_per_sample=max(math.ceil(bits / 8), 1),
        stored_bytes=max(int(stored_bytes), 0),
    )


def checked_footprint(
    path: Path, ds: Dataset, stored_bytes: int, limits: InputLimits | None, label: str
) -> DicomFootprint:
    """``footprint_of``, refusing at once a file that alone is over the reading budget: no series holding it could
    be read, and a study of many such files is refused at its first (not after inflating them all).

    Raises:
        StudyError: IMAGE_TOO_LARGE (``lss.data.io.limits.check_declared_size``), naming the file by ``label``.
    """
    footprint = footprint_of(ds, stored_bytes)
    try:
        check_declared_size(voxels=footprint.voxels, decoded_bytes=footprint.decoded_bytes,
                            matrix=max(footprint.rows, footprint.columns), frames=footprint.frames, limits=limits,
                            what=label)
    except StudyError as error:
        error.path = str(path)
        raise
    return footprint


def is_dicom_file(path: str | Path) -> bool:
    """True when a file starts with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


class _BoundedFile(io.BufferedReader):
    """A file opened for reading whose ``read(n)`` never asks for more than what is left of it.

    pydicom reads an element with ``read(length)`` at the length the file declares, and Python allocates that many
    bytes before reading: a few bytes declaring a 4 GB element would allocate 4 GB.
    """

    def __init__(self, path: Path) -> None:
        raw = io.FileIO(path, "rb")
        super().__init__(raw)
        self._size = os.fstat(raw.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def _inflated_size(path: Path, limits: InputLimits | None, label: str, budget: InflateBudget | None
                   ) -> int | None:
    """The bytes a deflated file's dataset takes once inflated, found by inflating it with a cap (keeping nothing);
    None when the file is not deflated.

    pydicom inflates a file of the Deflated Explicit VR Little Endian transfer syntax in one go, even for its header
    only: a few KB can become GBs there. This reads the preamble, file meta and command set as ``pydicom.dcmread``
    does (the same functions on the same bytes), so it sees exactly the deflate stream pydicom would inflate.
    Anything it cannot parse is left to ``dcmread``, which fails on the same bytes before inflating.

    Raises:
        StudyError: IMAGE_TOO_LARGE when the dataset inflates past ``max_decoded_mb`` (or what is left of
            ``budget``); TRUNCATED when the deflate stream is damaged or ends early.
    """
    try:
        with _BoundedFile(path) as handle:
            read_preamble(handle, False)
            meta = _read_file_meta_info(handle)
            if str(meta.get("TransferSyntaxUID", "") or "") != DeflatedExplicitVRLittleEndian:
                return None
            _read_command_set_elements(handle)
            start = handle.tell()
            return start + check_inflated_size(handle, limits, f"{label} (deflated DICOM)", budget=budget)
    except StudyError as error:
        error.path = str(path)
        raise
    except (InvalidDicomError, *_DAMAGED):
        return None


def read_file_sized(
    path: Path, *, stop_before_pixels: bool, limits: InputLimits | None = None, label: str = "the DICOM file",
    budget: InflateBudget | None = None,
) -> tuple[Dataset | None, int]:
    """``read_file``, with the bytes its dataset takes once read in full (``DicomFootprint.stored_bytes``).

    ``budget`` is shared by the files of one folder listing: a deflated file's inflated bytes are taken from it.

    Returns:
        (the dataset, or None when the file is no DICOM file at all; the inflated size of a deflated file, else the
        file's size).

    Raises:
        StudyError: as ``read_file``.
    """
    inflated = _inflated_size(path, limits, label, budget)
    try:
        with _BoundedFile(path) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=stop_before_pixels)
        stored = inflated if inflated is not None else path.stat().st_size
    except InvalidDicomError:
        return None, 0
    except FileNotFoundError:
        raise StudyError(ErrorCode.NOT_FOUND, f"{label} does not exist.", str(path)) from None
    except PermissionError:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"{label} cannot be opened (permission denied).", str(path)
        ) from None
    except _DAMAGED as error:
        # The exception text may quote element values, so only its type is reported.
        raise StudyError(
            ErrorCode.TRUNCATED,
            f"{label} ends early or is damaged ({type(error).__name__} while parsing).",
            str(path),
        ) from None
    return ds, stored


def read_file(
    path: Path, *, stop_before_pixels: bool, limits: InputLimits | None = None, label: str = "the DICOM file"
) -> Dataset | None:
    """Reads one file with pydicom; a deflated file is first inflated with a cap (``limits.max_decoded_mb``), so
    pydicom never inflates more than that.

    Args:
        path: the file.
        stop_before_pixels: read the header only.
        limits: the reading budget (``lss.data.io.limits``); None for the defaults.
        label: how messages name the file, e.g. "file 3 of the series" (never its name).

    Returns:
        The dataset; None when the file is no DICOM file at all.

    Raises:
        StudyError: NOT_FOUND when the file does not exist, NOT_AN_IMAGE when it cannot be opened, TRUNCATED when it
            is a damaged DICOM file, IMAGE_TOO_LARGE when it is deflated and inflates past ``max_decoded_mb``.
    """
    return read_file_sized(path, stop_before_pixels=stop_before_pixels, limits=limits, label=label)[0]


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


def truncated(path: Path, what: str, label: str = "the DICOM file") -> StudyError:
    """The TRUNCATED error for a file that ``cut_short`` flags; ``what`` says where it stops, ``label`` names the
    file ("file 3", never its name)."""
    return StudyError(ErrorCode.TRUNCATED, f"{label} ends early: {what}.", str(path))


def _value(ds: Dataset, keyword: str, default):
    """``ds.get(keyword, default)``; ``default`` too when the stored value cannot be converted (pydicom converts an
    element on first access, and a damaged one raises there: a wrong length, a bad character set, ...)."""
    try:
        return ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - a value that cannot be converted is no value
        return default


def text_of(ds: Dataset, keyword: str) -> str:
    """An attribute as stripped text; "" when absent, empty or not convertible."""
    value = _value(ds, keyword, "")
    try:
        return "" if value is None else str(value).strip()
    except Exception:  # noqa: BLE001 - a value that cannot be shown is no value
        return ""


def float_of(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    """A single-valued attribute as a float; ``default`` when absent, empty or not a number."""
    value = _value(ds, keyword, None)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


def int_of(ds: Dataset, keyword: str) -> int | None:
    """A single-valued attribute as an int (truncated towards zero); None when absent or not a finite number."""
    value = float_of(ds, keyword)
    return None if value is None or not math.isfinite(value) else int(value)


def floats_of(ds: Dataset, keyword: str, count: int) -> np.ndarray | None:
    """A multi-valued attribute as a float64 array of ``count`` finite values; None otherwise."""
    value = _value(ds, keyword, None)
    if value is None or value == "":
        return None
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def required_floats(ds: Dataset, keyword: str, count: int, path: Path, label: str = "the slice") -> np.ndarray:
    """``floats_of`` for a geometry attribute the slice cannot do without.

    Args:
        ds: the slice's dataset.
        keyword: the attribute.
        count: its number of values.
        path: the slice's file (the error's ``path``).
        label: how the message names the slice, e.g. "file 3 of the series" (never its name).

    Raises:
        StudyError: INCONSISTENT_GEOMETRY when the attribute is missing or malformed.
    """
    value = floats_of(ds, keyword, count)
    if value is None:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"{label} lacks a valid {keyword}; its position is unknown.",
            str(path),
        )
    return value


# DICOM's defined terms for Modality (PS3.3 C.7.3.1.1.1): a message quotes a Modality only when it is one of these.
_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS M3D MG "
    "MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT "
    "RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC".split()
)


def quoted_modality(modality: str) -> str:
    """A Modality for a message: quoted when it is one of DICOM's defined terms ("'CT'"), else a phrase that quotes
    nothing (the element is free text in a file, and could hold anything)."""
    return repr(modality) if modality in _MODALITIES else "another one (not a DICOM defined term)"
