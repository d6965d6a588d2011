"""DICOM MR series: list the series in a folder, read one into a ``Volume``, write a ``Volume`` as a series.

Array convention of ``read_dicom_series`` (and of ``write_dicom_series``, its inverse)::

    array[i, j, k]   i = column index (along the row direction cosine, ImageOrientationPatient[0:3]),
                     j = row index (along the column direction cosine, ImageOrientationPatient[3:6]),
                     k = slice, ordered by increasing position along the normal row_cosine x column_cosine.

So ``array[:, :, k] == pixel_array.T`` of the k-th slice, and ``affine`` columns are, in LPS before the flip to
RAS: ``row_cosine * PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]``, the mean step between consecutive
ImagePositionPatient values (``normal * slice spacing`` for an unsheared stack), origin = ImagePositionPatient of
slice 0. This is what nibabel/dcm2niix-style readers give before any reorientation, and the affine is always
right-handed. Nothing here reads or returns patient identifiers: ``Volume.meta`` holds only series-level,
non-identifying attributes and error messages name files by their base name and DICOM attributes by keyword.

Stacks. One series may hold several *stacks*: groups of slices with their own ImageOrientationPatient, such as the
axial T2 of many lumbar exams (RSNA 2024 included), acquired as one stack angled along each disc. Slices whose
orientation cosines agree within ``STACK_ORIENTATION_TOL`` (1e-3) form one stack. Stacks are numbered from 0 in
cranial-to-caudal order: by decreasing mean superior (RAS z) coordinate of their slice centres, so for per-disc
axial stacks stack 0 is the most cranial disc (the order of ``lss.anatomy.LEVELS``); ties keep file order.
``list_dicom_series`` gives each series' stacks (``DicomSeriesInfo.stacks``), ``list_dicom_stacks`` those of one
series, and ``read_dicom_series(..., stack=i)`` reads stack ``i`` alone; reading a multi-stack series without
``stack`` raises INCONSISTENT_GEOMETRY naming the stacks. A manifest addresses a stack with the series id
``f"{series_id}#stack{i}"`` (``stack_series_id`` / ``split_stack_series_id``), which ``lss.data.io.read_series``
honours.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import format_number_as_ds

from lss.data.errors import ErrorCode, StudyError
from lss.data.io.view import view_of_normal
from lss.data.volume import LPS_TO_RAS, Volume

__all__ = [
    "DicomSeriesInfo",
    "DicomStackInfo",
    "STACK_ORIENTATION_TOL",
    "list_dicom_series",
    "list_dicom_stacks",
    "read_dicom_series",
    "stack_series_id",
    "split_stack_series_id",
    "write_dicom_series",
    "dicom_pixel_to_ras",
    "is_dicom_file",
]

# A step between sorted slice positions larger than this times the median step is a missing slice.
GAP_FACTOR = 1.5
# Tolerances for "the same geometry" across the slices of one series.
ORIENTATION_TOL = 1e-4
SPACING_TOL = 1e-4
# Slices whose ImageOrientationPatient values all agree within this belong to one stack.
STACK_ORIENTATION_TOL = 1e-3
_STACK_ID = re.compile(r"^(?P<series>.+)#stack(?P<index>0|[1-9][0-9]*)$")
# Exceptions pydicom raises on a damaged (not merely non-DICOM) file.
_DAMAGED = (EOFError, OSError, ValueError, struct.error, KeyError, IndexError, TypeError, AttributeError)
_UINT16_MAX = 65535


@dataclass
class DicomStackInfo:
    """One stack of a DICOM series: the slices that share one ImageOrientationPatient (headers only).

    Attributes:
        index: the stack's number in its series, from 0 in cranial-to-caudal order (decreasing mean superior
            coordinate of the slice centres); what ``read_dicom_series(..., stack=index)`` reads.
        orientation: the stack's ImageOrientationPatient (of its first file), 6 values.
        view: "sagittal", "coronal" or "axial" from the orientation.
        files: the stack's files, sorted by path (natural order).
        centre_ras: mean of the slice centres (RAS+, mm); None when no slice has an ImagePositionPatient.
    """

    index: int
    orientation: tuple[float, ...]
    view: str
    files: list[Path] = field(default_factory=list)
    centre_ras: tuple[float, float, float] | None = None

    @property
    def n_files(self) -> int:
        return len(self.files)


@dataclass
class DicomSeriesInfo:
    """One DICOM series found under a folder (from headers only; pixel data is not read).

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID ("" when absent).
        description: SeriesDescription ("" when absent).
        modality: Modality ("" when absent).
        files: the series' files, sorted by path (natural order: 2.dcm before 10.dcm).
        view: "sagittal", "coronal" or "axial" from ImageOrientationPatient; "mixed" when the slices disagree
            (3-plane localisers); "unknown" when no slice has an orientation. A series of several angled axial
            stacks is "axial".
        series_number: SeriesNumber, if present.
        stacks: the series' stacks (see the module docstring), cranial first; one for a single-orientation series,
            none when no slice has an orientation. Slices without a valid ImageOrientationPatient are in no stack.
    """

    series_uid: str
    study_uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    view: str = "unknown"
    series_number: int | None = None
    stacks: list[DicomStackInfo] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_stacks(self) -> int:
        return len(self.stacks)


def stack_series_id(series_id: str, stack: int) -> str:
    """The manifest series id of one stack of a series: ``f"{series_id}#stack{stack}"``.

    Args:
        series_id: the series' id (its SeriesInstanceUID, or the dataset's series id such as RSNA's folder name).
        stack: the stack index (``DicomStackInfo.index``).

    Raises:
        ValueError: when ``series_id`` is empty or already names a stack, or ``stack`` is not an integer >= 0.
    """
    index = _stack_index(stack)
    if not series_id or _STACK_ID.match(series_id):
        raise ValueError(f"series_id {series_id!r} is empty or already names a stack.")
    return f"{series_id}#stack{index}"


def split_stack_series_id(series_id: str) -> tuple[str, int | None]:
    """The series id and stack index of a manifest series id: ``"1.2.3#stack2"`` -> ``("1.2.3", 2)``, and
    ``"1.2.3"`` -> ``("1.2.3", None)`` (the whole series)."""
    match = _STACK_ID.match(series_id)
    return (series_id, None) if match is None else (match["series"], int(match["index"]))


def _stack_index(stack: Any) -> int:
    if isinstance(stack, bool) or not isinstance(stack, (int, np.integer)) or int(stack) < 0:
        raise ValueError(f"stack must be an integer >= 0 (0 = the most cranial stack), got {stack!r}.")
    return int(stack)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def is_dicom_file(path: str | Path) -> bool:
    """True when a file starts with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: Path, *, stop_before_pixels: bool) -> Dataset | None:
    """Reads one file; None when it is no DICOM file, StudyError(TRUNCATED) when it is a damaged one."""
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


def _cut_short(path: Path, ds: Dataset) -> bool:
    """True for a file with the DICOM preamble that claims to be an image (or names no SOP class) yet lacks the
    attributes every image has: pydicom stops silently at the end of a truncated header."""
    if not is_dicom_file(path):
        return False
    name = _sop_class_name(ds)
    return name is None or "Image Storage" in name


def _truncated(path: Path, what: str) -> StudyError:
    return StudyError(ErrorCode.TRUNCATED, f"DICOM file {path.name} ends early: {what}.", str(path))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _float(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int(ds: Dataset, keyword: str) -> int | None:
    value = _float(ds, keyword)
    return None if value is None else int(value)


def _floats(ds: Dataset, keyword: str, count: int) -> np.ndarray | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return None
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def _slice_view(ds: Dataset) -> str | None:
    iop = _floats(ds, "ImageOrientationPatient", 6)
    if iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    return view_of_normal(normal) if np.any(normal) else None


class _SliceGeometry(NamedTuple):
    """What stack grouping needs of one slice header."""

    path: Path
    orientation: np.ndarray | None  # ImageOrientationPatient, None when missing or degenerate
    centre_lps: np.ndarray | None  # the slice's centre (LPS, mm), None without ImagePositionPatient


def _slice_geometry(path: Path, ds: Dataset) -> _SliceGeometry:
    iop = _floats(ds, "ImageOrientationPatient", 6)
    if iop is not None and not np.any(np.cross(iop[:3], iop[3:])):
        iop = None
    position = _floats(ds, "ImagePositionPatient", 3)
    centre = None
    if position is not None:
        centre = position
        spacing = _floats(ds, "PixelSpacing", 2)
        rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
        if iop is not None and spacing is not None and rows and columns:
            centre = position + (columns - 1) / 2 * spacing[1] * iop[:3] + (rows - 1) / 2 * spacing[0] * iop[3:]
    return _SliceGeometry(path, iop, centre)


def _group_stacks(slices: Sequence[_SliceGeometry]) -> list[DicomStackInfo]:
    """Groups slices by orientation (within ``STACK_ORIENTATION_TOL``), cranial stack first.

    Slices without an orientation are left out; each group keeps the order of ``slices``.
    """
    groups: list[tuple[np.ndarray, list[_SliceGeometry]]] = []
    for item in slices:
        if item.orientation is None:
            continue
        for reference, members in groups:
            if np.max(np.abs(item.orientation - reference)) <= STACK_ORIENTATION_TOL:
                members.append(item)
                break
        else:
            groups.append((item.orientation, [item]))
    stacks = []
    for reference, members in groups:
        centres = [m.centre_lps for m in members if m.centre_lps is not None]
        centre = None
        if centres:
            ras = LPS_TO_RAS[:3, :3] @ np.mean(centres, axis=0)
            centre = (float(ras[0]), float(ras[1]), float(ras[2]))
        stacks.append(
            DicomStackInfo(
                index=-1,
                orientation=tuple(float(v) for v in reference),
                view=view_of_normal(np.cross(reference[:3], reference[3:])),
                files=[m.path for m in members],
                centre_ras=centre,
            )
        )
    # Cranial first; stacks without a position last; ties keep the order the groups were found in.
    order = sorted(
        range(len(stacks)),
        key=lambda n: (0, -stacks[n].centre_ras[2], n) if stacks[n].centre_ras is not None else (1, 0.0, n),
    )
    ordered = [stacks[n] for n in order]
    for index, stack in enumerate(ordered):
        stack.index = index
    return ordered


def _stacks_summary(stacks: Sequence[DicomStackInfo]) -> str:
    parts = []
    for stack in stacks:
        where = "" if stack.centre_ras is None else f", centre S {stack.centre_ras[2]:.1f} mm"
        parts.append(f"stack {stack.index}: {stack.n_files} slice(s), {stack.view}{where}")
    return "; ".join(parts)


def _iter_files(folder: Path) -> Iterable[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=_natural_key)


def list_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """Groups the DICOM image files under a folder (recursively) by SeriesInstanceUID.

    Files that are not DICOM are skipped; so are DICOM files without image geometry (DICOMDIR, reports).

    Args:
        folder: the folder to search.

    Returns:
        One ``DicomSeriesInfo`` per series, ordered by SeriesNumber then description then UID.

    Raises:
        StudyError: NOT_FOUND when ``folder`` does not exist; NO_IMAGE when it holds no DICOM image;
            TRUNCATED when a file has the DICOM preamble but its header cannot be parsed.
    """
    folder = Path(folder)
    if not folder.exists():
        raise StudyError(ErrorCode.NOT_FOUND, f"folder {folder.name} does not exist.", str(folder))
    files = [folder] if folder.is_file() else list(_iter_files(folder))
    groups: dict[str, DicomSeriesInfo] = {}
    views: dict[str, list[str | None]] = {}
    geometry: dict[str, list[_SliceGeometry]] = {}
    for path in files:
        ds = _read(path, stop_before_pixels=True)
        if ds is None:
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            if _cut_short(path, ds):
                raise _truncated(path, "its header stops before SeriesInstanceUID / Rows")
            continue  # a DICOMDIR, a report, or another non-image object
        uid = _text(ds, "SeriesInstanceUID")
        info = groups.get(uid)
        if info is None:
            info = groups[uid] = DicomSeriesInfo(
                series_uid=uid,
                study_uid=_text(ds, "StudyInstanceUID"),
                description=_text(ds, "SeriesDescription"),
                modality=_text(ds, "Modality"),
                series_number=_int(ds, "SeriesNumber"),
            )
            views[uid] = []
            geometry[uid] = []
        info.files.append(path)
        views[uid].append(_slice_view(ds))
        geometry[uid].append(_slice_geometry(path, ds))
    if not groups:
        raise StudyError(
            ErrorCode.NO_IMAGE, f"no DICOM image among the {len(files)} file(s) in {folder.name}.", str(folder)
        )
    for uid, info in groups.items():
        info.files.sort(key=_natural_key)
        known = Counter(view for view in views[uid] if view is not None)
        info.view = "unknown" if not known else (next(iter(known)) if len(known) == 1 else "mixed")
        info.stacks = _group_stacks(sorted(geometry[uid], key=lambda g: _natural_key(g.path)))
    return sorted(
        groups.values(),
        key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.description, s.series_uid),
    )


def _series_summary(series: Sequence[DicomSeriesInfo]) -> str:
    return ", ".join(f"{s.description or 'no description'} ({s.n_files} files, {s.view})" for s in series)


def _select_series(source: str | Path | Sequence[str | Path], series_uid: str | None) -> DicomSeriesInfo:
    """The one series (files and stacks) that ``source`` holds, or the one with ``series_uid``."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        series = list_dicom_series(folder)
    else:
        paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
        if not paths:
            raise StudyError(ErrorCode.NO_IMAGE, "no DICOM file was given.")
        for path in paths:
            if not path.exists():
                raise StudyError(ErrorCode.NOT_FOUND, f"file {path.name} does not exist.", str(path))
        folder = paths[0].parent
        series = []
        by_uid: dict[str, DicomSeriesInfo] = {}
        geometry: dict[str, list[_SliceGeometry]] = {}
        for path in paths:
            ds = _read(path, stop_before_pixels=True)
            if ds is None:
                raise StudyError(ErrorCode.NOT_AN_IMAGE, f"file {path.name} is not a DICOM file.", str(path))
            if "SeriesInstanceUID" not in ds and _cut_short(path, ds):
                raise _truncated(path, "its header stops before SeriesInstanceUID")
            uid = _text(ds, "SeriesInstanceUID")
            if uid not in by_uid:
                by_uid[uid] = DicomSeriesInfo(
                    uid, _text(ds, "StudyInstanceUID"), _text(ds, "SeriesDescription"), _text(ds, "Modality")
                )
                geometry[uid] = []
                series.append(by_uid[uid])
            by_uid[uid].files.append(path)
            geometry[uid].append(_slice_geometry(path, ds))
        for uid, info in by_uid.items():
            # The order of the given files does not change the stack numbering.
            info.stacks = _group_stacks(sorted(geometry[uid], key=lambda g: _natural_key(g.path)))
    if series_uid is not None:
        match = [s for s in series if s.series_uid == str(series_uid)]
        if not match:
            raise StudyError(
                ErrorCode.NOT_FOUND,
                f"no series with SeriesInstanceUID {series_uid} in {folder.name} (found {len(series)} series).",
                str(source) if isinstance(source, (str, Path)) else str(folder),
            )
        return match[0]
    if len(series) > 1:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"{folder.name} holds {len(series)} DICOM series: {_series_summary(series)}; "
            "choose one with read_dicom_series(folder, series_uid=...) (list them with list_dicom_series).",
            str(source) if isinstance(source, (str, Path)) else str(folder),
        )
    return series[0]


def list_dicom_stacks(
    folder_or_files: str | Path | Sequence[str | Path], series_uid: str | None = None
) -> list[DicomStackInfo]:
    """The stacks of one DICOM series (from headers only), cranial first (see the module docstring).

    Args:
        folder_or_files: a folder (searched recursively), one file, or a list of files of one series.
        series_uid: the SeriesInstanceUID of the series, when the files hold several.

    Returns:
        One ``DicomStackInfo`` per distinct ImageOrientationPatient; ``stacks[i]`` is what
        ``read_dicom_series(folder_or_files, series_uid, stack=i)`` reads.

    Raises:
        StudyError: NOT_FOUND, NO_IMAGE, NOT_AN_IMAGE, TRUNCATED as ``list_dicom_series``; INCONSISTENT_GEOMETRY when
            the files hold several series and ``series_uid`` is not given.
    """
    if isinstance(folder_or_files, (str, Path)) and not Path(folder_or_files).exists():
        raise StudyError(ErrorCode.NOT_FOUND, f"{Path(folder_or_files).name} does not exist.", str(folder_or_files))
    return _select_series(folder_or_files, series_uid).stacks


def _require(ds: Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    value = _floats(ds, keyword, count)
    if value is None:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"slice {path.name} lacks a valid {keyword}; its position is unknown.",
            str(path),
        )
    return value


def read_dicom_series(
    folder_or_files: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    *,
    stack: int | None = None,
    min_slices: int = 1,
) -> Volume:
    """Reads one single-frame MR DICOM series, or one stack of it, into a ``Volume`` (float32, RAS+ affine).

    Slices are sorted by the projection of ImagePositionPatient on the slice normal (the cross product of the two
    ImageOrientationPatient cosines); pixel values are rescaled with RescaleSlope/RescaleIntercept.

    Args:
        folder_or_files: a folder (searched recursively), one file, or a list of files of one series.
        series_uid: the SeriesInstanceUID to read when the files hold several series.
        stack: the stack to read when the series holds several (``DicomStackInfo.index``: 0 is the most cranial;
            see ``list_dicom_stacks``). ``stack=0`` of a single-orientation series is the whole series.
        min_slices: the fewest slices accepted (in the stack, when ``stack`` is given).

    Returns:
        A ``Volume`` whose ``array`` is (Columns, Rows, slices) = array[i=column, j=row, k=slice], float32, and whose
        ``meta`` holds "format", "view", "slice_axis" (2), "modality", "series_description", "series_uid", "study_uid",
        "slice_thickness", "slice_spacing", "n_slices", "instance_numbers" (InstanceNumber of each k), "stack" (the
        ``stack`` read, None for the whole series) and "n_stacks" (the series' stack count).

    Raises:
        StudyError: NOT_FOUND (missing path / series UID / stack), NO_IMAGE (no DICOM image), NOT_AN_IMAGE (a given
            file is not DICOM, or has no pixel data), TRUNCATED (a file ends early or its pixels cannot be decoded),
            WRONG_MODALITY (Modality other than MR), UNSUPPORTED_FORMAT (multi-frame or colour images),
            INCONSISTENT_GEOMETRY (several series; several stacks and no ``stack``, the message says how many and
            how to pick one; mixed Rows / Columns / PixelSpacing, missing or duplicate positions; with ``stack``, a
            slice without ImageOrientationPatient), ABSURD_SPACING (non-positive spacing), MISSING_SLICES (a gap
            in positions), TOO_FEW_SLICES (fewer than ``min_slices``), NON_FINITE (NaN or infinite values).
        ValueError: when ``min_slices`` is below 1 or ``stack`` is not an integer >= 0.
    """
    if int(min_slices) < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices!r}.")
    stack_index = None if stack is None else _stack_index(stack)
    if isinstance(folder_or_files, (str, Path)) and not Path(folder_or_files).exists():
        raise StudyError(ErrorCode.NOT_FOUND, f"{Path(folder_or_files).name} does not exist.", str(folder_or_files))
    info = _select_series(folder_or_files, series_uid)
    files, stacks = info.files, info.stacks
    where = str(folder_or_files) if isinstance(folder_or_files, (str, Path)) else str(files[0].parent)
    if stack_index is not None:
        grouped = {path for item in stacks for path in item.files}
        lost = [path for path in files if path not in grouped]
        if lost:
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slice {lost[0].name} lacks a valid ImageOrientationPatient; its stack is unknown.",
                str(lost[0]),
            )
        if stack_index >= len(stacks):
            raise StudyError(
                ErrorCode.NOT_FOUND,
                f"stack {stack_index} does not exist: the series has {len(stacks)} stack(s) "
                f"({_stacks_summary(stacks)}).",
                where,
            )
        files = stacks[stack_index].files
    if len(files) < min_slices:
        what = "the series" if stack_index is None else f"stack {stack_index} of the series"
        raise StudyError(
            ErrorCode.TOO_FEW_SLICES, f"{what} has {len(files)} slice(s); at least {min_slices} are needed.", where
        )

    datasets: list[tuple[Path, Dataset]] = []
    for path in files:
        ds = _read(path, stop_before_pixels=False)
        if ds is None:
            raise StudyError(ErrorCode.NOT_AN_IMAGE, f"file {path.name} is not a DICOM file.", str(path))
        datasets.append((path, ds))

    first_path, first = datasets[0]
    modality = _text(first, "Modality")
    for path, ds in datasets:
        this = _text(ds, "Modality")
        if this and this != "MR":
            raise StudyError(
                ErrorCode.WRONG_MODALITY,
                f"slice {path.name} has Modality {this!r}; only MR images are supported.",
                str(path),
            )
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise StudyError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"file {path.name} is a multi-frame image (NumberOfFrames {int(ds.NumberOfFrames)}); "
                "only single-frame series are supported.",
                str(path),
            )
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise StudyError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"file {path.name} has SamplesPerPixel {int(ds.SamplesPerPixel)}; only greyscale images are supported.",
                str(path),
            )
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            if _cut_short(path, ds):
                raise _truncated(path, "it stops before its pixel data")
            raise StudyError(ErrorCode.NOT_AN_IMAGE, f"file {path.name} has no pixel data.", str(path))

    # Geometry: one orientation, one in-plane grid for the whole series (or stack).
    if stack_index is None and len(stacks) > 1:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"the series mixes orientations: it holds {len(stacks)} stacks of different ImageOrientationPatient "
            f"({_stacks_summary(stacks)}); read one with read_dicom_series(..., stack=i), i from 0 (the most "
            f"cranial) to {len(stacks) - 1} (list them with list_dicom_stacks).",
            where,
        )
    iop = _require(first, "ImageOrientationPatient", 6, first_path)
    spacing = _require(first, "PixelSpacing", 2, first_path)
    rows, columns = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    for path, ds in datasets:
        other = _require(ds, "ImageOrientationPatient", 6, path)
        if not np.allclose(other, iop, atol=ORIENTATION_TOL):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slice {path.name} has ImageOrientationPatient {np.round(other, 4).tolist()}, "
                f"slice {first_path.name} {np.round(iop, 4).tolist()}; the series mixes orientations.",
                str(path),
            )
        size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if size != (rows, columns):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slice {path.name} is {size[0]}x{size[1]} (Rows x Columns), slice {first_path.name} {rows}x{columns}.",
                str(path),
            )
        other_spacing = _require(ds, "PixelSpacing", 2, path)
        if not np.allclose(other_spacing, spacing, atol=SPACING_TOL):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slice {path.name} has PixelSpacing {other_spacing.tolist()}, "
                f"slice {first_path.name} {spacing.tolist()}.",
                str(path),
            )
    if rows < 1 or columns < 1:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"slice {first_path.name} has Rows {rows} and Columns {columns}.", where
        )
    if np.any(spacing <= 0):
        raise StudyError(ErrorCode.ABSURD_SPACING, f"PixelSpacing {spacing.tolist()} is not positive.", where)
    row_cos, col_cos = iop[:3], iop[3:]
    norms = (np.linalg.norm(row_cos), np.linalg.norm(col_cos))
    if min(norms) < 1e-6 or abs(float(np.dot(row_cos, col_cos))) > 1e-3 * norms[0] * norms[1]:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"ImageOrientationPatient {np.round(iop, 4).tolist()} is not two orthogonal directions.",
            where,
        )
    row_cos, col_cos = row_cos / norms[0], col_cos / norms[1]
    normal = np.cross(row_cos, col_cos)

    # Slice order and spacing.
    positions = np.stack([_require(ds, "ImagePositionPatient", 3, path) for path, ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    datasets = [datasets[index] for index in order]
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    thickness = _float(first, "SliceThickness")
    if len(datasets) > 1:
        median = float(np.median(steps))
        duplicate = int(np.argmin(steps))
        if steps[duplicate] <= max(1e-4, 1e-3 * median):
            names = (datasets[duplicate][0].name, datasets[duplicate + 1][0].name)
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slices {names[0]} and {names[1]} share the position {along[duplicate]:.3f} mm along the normal "
                "(several acquisitions in one series?).",
                where,
            )
        gap = int(np.argmax(steps))
        if steps[gap] > GAP_FACTOR * median:
            raise StudyError(
                ErrorCode.MISSING_SLICES,
                f"a gap of {steps[gap]:.3f} mm between slices {datasets[gap][0].name} and {datasets[gap + 1][0].name} "
                f"is more than {GAP_FACTOR}x the median slice step {median:.3f} mm; slices are missing.",
                where,
            )
        slice_spacing = median
        step_vector = (positions[-1] - positions[0]) / (len(datasets) - 1)
    else:
        slice_spacing = _float(first, "SpacingBetweenSlices") or thickness or 1.0
        if slice_spacing <= 0:
            slice_spacing = 1.0
        step_vector = normal * slice_spacing

    # Pixels.
    planes = []
    for path, ds in datasets:
        try:
            pixels = ds.pixel_array
        except Exception as error:  # noqa: BLE001 - any decoder failure means the pixels cannot be used
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            syntax_name = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown"
            raise StudyError(
                ErrorCode.TRUNCATED,
                f"pixel data of {path.name} cannot be decoded ({type(error).__name__}; transfer syntax {syntax_name}).",
                str(path),
            ) from None
        if pixels.shape != (rows, columns):
            raise StudyError(
                ErrorCode.TRUNCATED,
                f"pixel data of {path.name} has shape {pixels.shape}, expected ({rows}, {columns}).",
                str(path),
            )
        slope = _float(ds, "RescaleSlope", 1.0)
        intercept = _float(ds, "RescaleIntercept", 0.0)
        planes.append((pixels.astype(np.float64) * slope + intercept).T)
    array = np.stack(planes, axis=2).astype(np.float32)
    if not np.all(np.isfinite(array)):
        count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise StudyError(ErrorCode.NON_FINITE, f"the series has {count} NaN or infinite voxel value(s).", where)

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * spacing[1]
    affine_lps[:3, 1] = col_cos * spacing[0]
    affine_lps[:3, 2] = step_vector
    affine_lps[:3, 3] = positions[0]
    meta = {
        "format": "dicom",
        "view": view_of_normal(normal),
        "slice_axis": 2,
        "modality": modality,
        "series_description": _text(first, "SeriesDescription"),
        "series_uid": _text(first, "SeriesInstanceUID"),
        "study_uid": _text(first, "StudyInstanceUID"),
        "slice_thickness": thickness,
        "slice_spacing": float(slice_spacing),
        "n_slices": len(datasets),
        "instance_numbers": [_int(ds, "InstanceNumber") for _, ds in datasets],
        "stack": stack_index,
        "n_stacks": len(stacks),
    }
    return Volume(array=array, affine=LPS_TO_RAS @ affine_lps, meta=meta)


def dicom_pixel_to_ras(header: Dataset, column: float, row: float) -> np.ndarray:
    """World position (RAS+, mm) of a pixel of one DICOM slice.

    ``LPS = ImagePositionPatient + column * PixelSpacing[1] * row_cosine + row * PixelSpacing[0] * column_cosine``
    (pixel centres at integer coordinates, as RSNA 2024 annotations and ``read_dicom_series`` use them).

    Args:
        header: the slice's dataset (pixel data not needed).
        column: x, the column index (may be fractional).
        row: y, the row index (may be fractional).

    Raises:
        StudyError: INCONSISTENT_GEOMETRY when the header lacks ImagePositionPatient, ImageOrientationPatient or
            PixelSpacing.
    """
    where = Path(str(getattr(header, "filename", "") or "slice"))
    position = _require(header, "ImagePositionPatient", 3, where)
    iop = _require(header, "ImageOrientationPatient", 6, where)
    spacing = _require(header, "PixelSpacing", 2, where)
    lps = position + float(column) * spacing[1] * iop[:3] + float(row) * spacing[0] * iop[3:]
    return LPS_TO_RAS[:3, :3] @ lps


_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _valid_uid(text: str) -> bool:
    return len(text) <= 64 and _UID_PATTERN.match(text) is not None


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _encode(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 stored values, RescaleSlope, RescaleIntercept: exact for integer data, else over the full range."""
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the volume holds NaN or infinite values; DICOM cannot store them.")
    low, high = float(values.min()), float(values.max())
    integral = (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.bool_)
        or bool(np.all(values == np.round(values)))
    )
    if integral and high - low <= _UINT16_MAX:
        slope, intercept = 1.0, float(_ds(low))
        if intercept != low:  # an integer too long for a decimal string
            raise ValueError(f"minimum value {low!r} cannot be written exactly as RescaleIntercept.")
    else:
        slope = float(_ds((high - low) / _UINT16_MAX)) if high > low else 1.0
        intercept = float(_ds(low))
    stored = np.clip(np.round((values - intercept) / slope), 0, _UINT16_MAX).astype(np.uint16)
    return stored, slope, intercept


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    study_uid: str,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    frame_of_reference_uid: str | None = None,
    patient_name: str = "SYNTHETIC^PHANTOM",
    patient_id: str = "SYNTH-0000",
    modality: str = "MR",
    study_description: str = "",
    instance_uid_prefix: str | None = None,
    file_name: str = "{index:04d}.dcm",
    first_instance: int = 1,
) -> list[Path]:
    """Writes a volume as a DICOM series, one MR Image Storage file per k slice (Explicit VR Little Endian).

    The inverse of ``read_dicom_series``: ``array[:, :, k].T`` becomes slice k's pixels (Rows = J, Columns = I).
    Pixels are stored as uint16 with one RescaleSlope/RescaleIntercept for the series: integer-valued volumes
    (label maps) whose range fits in 16 bits are stored exactly (slope 1), others are spread over 0..65535
    (error at most range / 131070). A left-handed affine (k against row x column cosines) is written with its
    true geometry but reads back with k reversed.

    Args:
        volume: (I, J, K) image or label map with a RAS+ affine; i and j must be orthogonal.
        folder: the output folder (created).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID; default: a new UID.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        frame_of_reference_uid: FrameOfReferenceUID; default: a new UID.
        patient_name: PatientName (synthetic data only; never read back by this package).
        patient_id: PatientID.
        modality: Modality (the reader only accepts "MR"; other values are for tests).
        study_description: StudyDescription.
        instance_uid_prefix: prefix of the SOPInstanceUIDs (ending in "."); default: pydicom's root.
        file_name: file name pattern, formatted with ``index`` (k, from 0) and ``instance`` (InstanceNumber, from
            ``first_instance``).
        first_instance: InstanceNumber of slice 0 (slice k gets ``first_instance + k``); to write several stacks
            into one series (same ``series_uid`` and ``frame_of_reference_uid``), numbering on across stacks.

    Returns:
        The written paths, in k order.

    Raises:
        ValueError: for an invalid UID, non-orthogonal in-plane axes, a slice larger than 65535 pixels a side,
            non-finite values, a ``file_name`` pattern that does not give distinct names, or a ``first_instance``
            that is not an integer >= 1.
    """
    for name, uid in (
        ("study_uid", study_uid),
        ("series_uid", series_uid),
        ("frame_of_reference_uid", frame_of_reference_uid),
    ):
        if uid is not None and not _valid_uid(str(uid)):
            raise ValueError(f"{name} {uid!r} is not a valid DICOM UID.")
    if instance_uid_prefix is not None and not _valid_uid(str(instance_uid_prefix).rstrip(".")):
        raise ValueError(f"instance_uid_prefix {instance_uid_prefix!r} is not a valid UID prefix.")
    if isinstance(first_instance, bool) or not isinstance(first_instance, (int, np.integer)) or first_instance < 1:
        raise ValueError(f"first_instance must be an integer >= 1, got {first_instance!r}.")
    first_instance = int(first_instance)
    size_i, size_j, size_k = volume.shape
    if max(size_i, size_j) > _UINT16_MAX:
        raise ValueError(f"slices of {size_i}x{size_j} pixels are too large for DICOM Rows/Columns.")
    names = [file_name.format(index=k, instance=first_instance + k) for k in range(size_k)]
    if len(set(names)) != size_k:
        raise ValueError(f"file_name {file_name!r} does not give distinct names for {size_k} slices.")

    affine_lps = LPS_TO_RAS @ volume.affine
    col_i, col_j, col_k = affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2]
    spacing_i, spacing_j, spacing_k = (float(np.linalg.norm(c)) for c in (col_i, col_j, col_k))
    row_cos, col_cos = col_i / spacing_i, col_j / spacing_j
    if abs(float(np.dot(row_cos, col_cos))) > 1e-4:
        raise ValueError(
            f"the i and j axes are not orthogonal (cosine {float(np.dot(row_cos, col_cos)):.6f}); "
            "DICOM cannot store that."
        )
    normal = np.cross(row_cos, col_cos)
    stored, slope, intercept = _encode(volume.array)
    thickness = volume.meta.get("slice_thickness")
    thickness = float(thickness) if isinstance(thickness, (int, float)) and thickness and thickness > 0 else spacing_k

    series_uid = str(series_uid) if series_uid is not None else str(generate_uid())
    frame_of_reference_uid = str(frame_of_reference_uid) if frame_of_reference_uid is not None else str(generate_uid())
    prefix = (
        instance_uid_prefix
        if instance_uid_prefix is None or str(instance_uid_prefix).endswith(".")
        else f"{instance_uid_prefix}."
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in range(size_k):
        sop_uid = generate_uid() if prefix is None else generate_uid(prefix=prefix)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ""
        ds.StudyTime = ""
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer = ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = "LSPINE"
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(spacing_k)
        ds.StudyInstanceUID = str(study_uid)
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = ""
        ds.SeriesNumber = int(series_number)
        ds.InstanceNumber = first_instance + k
        position = affine_lps[:3, 3] + k * col_k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size_j
        ds.Columns = size_i
        ds.PixelSpacing = [_ds(spacing_j), _ds(spacing_i)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<u2").tobytes()
        path = folder / names[k]
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written
