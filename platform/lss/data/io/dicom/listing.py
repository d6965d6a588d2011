"""Finding DICOM series and their stacks under a folder, from headers only (pixel data is never read here).

A series is the files that share a SeriesInstanceUID; a stack is the slices of one series that share an
ImageOrientationPatient (within ``STACK_ORIENTATION_TOL``), numbered cranial first. See the package docstring for
the conventions; ``stack_series_id`` / ``split_stack_series_id`` name one stack in a manifest.

Each file's ``DicomFootprint`` (what its pixels cost once decoded) is kept in ``DicomSeriesInfo.footprints``, so the
reader checks a series against the reading budget (``lss.data.io.limits``) before reading any pixel data. Messages
name files by number ("file 3": the third file under the folder in natural order, or of the files given), never by
name, and series by number, never by description.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydicom.dataset import Dataset

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.dicom.geometry import pixel_to_lps, slice_normal
from lss.data.io.dicom.headers import (
    DicomFootprint,
    checked_footprint,
    cut_short,
    floats_of,
    int_of,
    read_file_sized,
    text_of,
    truncated,
)
from lss.data.io.limits import InflateBudget
from lss.data.io.view import view_of_normal
from lss.data.volume import LPS_TO_RAS

__all__ = [
    "STACK_ORIENTATION_TOL",
    "DicomSeriesInfo",
    "DicomStackInfo",
    "list_dicom_series",
    "list_dicom_stacks",
    "stack_series_id",
    "split_stack_series_id",
    "select_series",
    "check_stack_index",
    "describe_stacks",
]

# Slices whose ImageOrientationPatient values all agree within this belong to one stack.
STACK_ORIENTATION_TOL = 1e-3
_STACK_ID = re.compile(r"^(?P<series>.+)#stack(?P<index>0|[1-9][0-9]*)$")


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
        stacks: the series' stacks (see the package docstring), cranial first; one for a single-orientation series,
            none when no slice has an orientation. Slices without a valid ImageOrientationPatient are in no stack.
        footprints: each file's ``DicomFootprint`` (Rows, Columns, frames, samples, bytes per sample, bytes as
            read), for the reading budget.
    """

    series_uid: str
    study_uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    view: str = "unknown"
    series_number: int | None = None
    stacks: list[DicomStackInfo] = field(default_factory=list)
    footprints: dict[Path, DicomFootprint] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_stacks(self) -> int:
        return len(self.stacks)


# ---- stack ids in manifests -----------------------------------------------------------------------------------


def stack_series_id(series_id: str, stack: int) -> str:
    """The manifest series id of one stack of a series: ``f"{series_id}#stack{stack}"``.

    Args:
        series_id: the series' id (its SeriesInstanceUID, or the dataset's series id such as RSNA's folder name).
        stack: the stack index (``DicomStackInfo.index``).

    Raises:
        ValueError: when ``series_id`` is empty or already names a stack, or ``stack`` is not an integer >= 0.
    """
    index = check_stack_index(stack)
    if not series_id or _STACK_ID.match(series_id):
        raise ValueError(f"series_id {series_id!r} is empty or already names a stack.")
    return f"{series_id}#stack{index}"


def split_stack_series_id(series_id: str) -> tuple[str, int | None]:
    """The series id and stack index of a manifest series id: ``"1.2.3#stack2"`` -> ``("1.2.3", 2)``, and
    ``"1.2.3"`` -> ``("1.2.3", None)`` (the whole series)."""
    match = _STACK_ID.match(series_id)
    return (series_id, None) if match is None else (match["series"], int(match["index"]))


def check_stack_index(stack: Any) -> int:
    """``stack`` as an int.

    Raises:
        ValueError: unless ``stack`` is an integer (not a bool) >= 0.
    """
    if isinstance(stack, bool) or not isinstance(stack, (int, np.integer)) or int(stack) < 0:
        raise ValueError(f"stack must be an integer >= 0 (0 = the most cranial stack), got {stack!r}.")
    return int(stack)


# ---- grouping slices into stacks ------------------------------------------------------------------------------


class _SliceGeometry(NamedTuple):
    """What stack grouping needs of one slice header."""

    path: Path
    orientation: np.ndarray | None  # ImageOrientationPatient, None when missing or degenerate
    centre_lps: np.ndarray | None  # the slice's centre (LPS, mm), None without ImagePositionPatient


def _slice_geometry(path: Path, ds: Dataset) -> _SliceGeometry:
    iop = floats_of(ds, "ImageOrientationPatient", 6)
    if iop is not None and not np.any(slice_normal(iop)):
        iop = None
    position = floats_of(ds, "ImagePositionPatient", 3)
    centre = None
    if position is not None:
        centre = position
        spacing = floats_of(ds, "PixelSpacing", 2)
        rows, columns = int_of(ds, "Rows"), int_of(ds, "Columns")
        if iop is not None and spacing is not None and rows and columns:
            centre = pixel_to_lps(position, iop, spacing, (columns - 1) / 2, (rows - 1) / 2)
    return _SliceGeometry(path, iop, centre)


def _slice_view(ds: Dataset) -> str | None:
    iop = floats_of(ds, "ImageOrientationPatient", 6)
    if iop is None:
        return None
    normal = slice_normal(iop)
    return view_of_normal(normal) if np.any(normal) else None


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
                view=view_of_normal(slice_normal(reference)),
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


def _stacks_in_file_order(geometry: list[_SliceGeometry]) -> list[DicomStackInfo]:
    """The stacks of one series; the order the files were given in does not change the numbering."""
    return _group_stacks(sorted(geometry, key=lambda g: _natural_key(g.path)))


def describe_stacks(stacks: Sequence[DicomStackInfo]) -> str:
    """One line per stack for error messages: index, slice count, view and centre S coordinate."""
    parts = []
    for stack in stacks:
        where = "" if stack.centre_ras is None else f", centre S {stack.centre_ras[2]:.1f} mm"
        parts.append(f"stack {stack.index}: {stack.n_files} slice(s), {stack.view}{where}")
    return "; ".join(parts)


# ---- series under a folder ------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _iter_files(folder: Path) -> Iterable[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=_natural_key)


def list_dicom_series(folder: str | Path, *, limits: InputLimits | None = None) -> list[DicomSeriesInfo]:
    """Groups the DICOM image files under a folder (recursively) by SeriesInstanceUID.

    Files that are not DICOM are skipped; so are DICOM files without image geometry (DICOMDIR, reports).

    Args:
        folder: the folder to search.
        limits: the reading budget: a deflated file is inflated with a cap at ``max_decoded_mb`` before pydicom
            reads its header (``lss.data.io.dicom.headers.read_file``); None for the defaults. Series sizes are
            checked when a series is read, not here.

    Returns:
        One ``DicomSeriesInfo`` per series, ordered by SeriesNumber then description then UID.

    Raises:
        StudyError: NOT_FOUND when ``folder`` does not exist; NO_IMAGE when it holds no DICOM image;
            TRUNCATED when a file has the DICOM preamble but its header cannot be parsed; IMAGE_TOO_LARGE for a
            file that alone is over the budget (a deflated one that inflates past ``max_decoded_mb``) and for
            deflated files that inflate past ``max_listing_inflated_mb`` together.
    """
    folder = Path(folder)
    if not folder.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the DICOM folder does not exist.", str(folder))
    files = [folder] if folder.is_file() else list(_iter_files(folder))
    budget = InflateBudget(limits)
    groups: dict[str, DicomSeriesInfo] = {}
    views: dict[str, list[str | None]] = {}
    geometry: dict[str, list[_SliceGeometry]] = {}
    for number, path in enumerate(files, start=1):
        label = f"file {number}" if len(files) > 1 else "the DICOM file"
        ds, stored = read_file_sized(path, stop_before_pixels=True, limits=limits, label=label, budget=budget)
        if ds is None:
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            if cut_short(path, ds):
                raise truncated(path, "its header stops before SeriesInstanceUID / Rows", label)
            continue  # a DICOMDIR, a report, or another non-image object
        uid = text_of(ds, "SeriesInstanceUID")
        info = groups.get(uid)
        if info is None:
            info = groups[uid] = DicomSeriesInfo(
                series_uid=uid,
                study_uid=text_of(ds, "StudyInstanceUID"),
                description=text_of(ds, "SeriesDescription"),
                modality=text_of(ds, "Modality"),
                series_number=int_of(ds, "SeriesNumber"),
            )
            views[uid] = []
            geometry[uid] = []
        info.files.append(path)
        info.footprints[path] = checked_footprint(path, ds, stored, limits, label)
        views[uid].append(_slice_view(ds))
        geometry[uid].append(_slice_geometry(path, ds))
    if not groups:
        raise StudyError(
            ErrorCode.NO_IMAGE, f"no DICOM image among the {len(files)} file(s) in the folder.", str(folder)
        )
    for uid, info in groups.items():
        info.files.sort(key=_natural_key)
        known = Counter(view for view in views[uid] if view is not None)
        info.view = "unknown" if not known else (next(iter(known)) if len(known) == 1 else "mixed")
        info.stacks = _stacks_in_file_order(geometry[uid])
    return sorted(
        groups.values(),
        key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.description, s.series_uid),
    )


def _given_label(number: int, count: int) -> str:
    return f"file {number} of those given" if count > 1 else "the DICOM file"


def _series_of_files(paths: list[Path], limits: InputLimits | None) -> list[DicomSeriesInfo]:
    """The series among given files, in order of first appearance (files in the order given, stacks numbered).

    Unlike ``list_dicom_series`` every file must be DICOM, and ``view`` / ``series_number`` are not filled in.
    """
    series: list[DicomSeriesInfo] = []
    by_uid: dict[str, DicomSeriesInfo] = {}
    geometry: dict[str, list[_SliceGeometry]] = {}
    budget = InflateBudget(limits)
    for number, path in enumerate(paths, start=1):
        label = _given_label(number, len(paths))
        ds, stored = read_file_sized(path, stop_before_pixels=True, limits=limits, label=label, budget=budget)
        if ds is None:
            raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{label} is not a DICOM file.", str(path))
        if "SeriesInstanceUID" not in ds and cut_short(path, ds):
            raise truncated(path, "its header stops before SeriesInstanceUID", label)
        uid = text_of(ds, "SeriesInstanceUID")
        if uid not in by_uid:
            by_uid[uid] = DicomSeriesInfo(
                uid, text_of(ds, "StudyInstanceUID"), text_of(ds, "SeriesDescription"), text_of(ds, "Modality")
            )
            geometry[uid] = []
            series.append(by_uid[uid])
        by_uid[uid].files.append(path)
        by_uid[uid].footprints[path] = checked_footprint(path, ds, stored, limits, label)
        geometry[uid].append(_slice_geometry(path, ds))
    for uid, info in by_uid.items():
        info.stacks = _stacks_in_file_order(geometry[uid])
    return series


def _series_summary(series: Sequence[DicomSeriesInfo]) -> str:
    # By number, view and size only: a SeriesDescription is free text and can hold anything.
    return ", ".join(f"series {n} ({s.n_files} files, {s.view})" for n, s in enumerate(series, start=1))


def select_series(
    source: str | Path | Sequence[str | Path], series_uid: str | None, *, limits: InputLimits | None = None
) -> DicomSeriesInfo:
    """The one series (files and stacks) that ``source`` holds, or the one with ``series_uid``.

    Args:
        source: a folder (searched recursively), one file, or a list of files.
        series_uid: the SeriesInstanceUID to pick; None when ``source`` must hold a single series.
        limits: the reading budget for the headers (see ``list_dicom_series``); None for the defaults.

    Raises:
        StudyError: as ``list_dicom_series``; NO_IMAGE for an empty file list; NOT_FOUND for a missing file or
            ``series_uid``; NOT_AN_IMAGE for a given file that is not DICOM; INCONSISTENT_GEOMETRY for several
            series and no ``series_uid``.
    """
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        series = list_dicom_series(folder, limits=limits)
    else:
        paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
        if not paths:
            raise StudyError(ErrorCode.NO_IMAGE, "no DICOM file was given.")
        for number, path in enumerate(paths, start=1):
            if not path.exists():
                raise StudyError(ErrorCode.NOT_FOUND, f"{_given_label(number, len(paths))} does not exist.",
                                 str(path))
        folder = paths[0].parent
        series = _series_of_files(paths, limits)
    where = str(source) if isinstance(source, (str, Path)) else str(folder)
    if series_uid is not None:
        match = [s for s in series if s.series_uid == str(series_uid)]
        if not match:
            raise StudyError(
                ErrorCode.NOT_FOUND,
                f"no series has the SeriesInstanceUID asked for (found {len(series)} series).",
                where,
            )
        return match[0]
    if len(series) > 1:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"the folder holds {len(series)} DICOM series: {_series_summary(series)}; "
            "choose one with read_dicom_series(folder, series_uid=...) (list them with list_dicom_series).",
            where,
        )
    return series[0]


def list_dicom_stacks(
    folder_or_files: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    *,
    limits: InputLimits | None = None,
) -> list[DicomStackInfo]:
    """The stacks of one DICOM series (from headers only), cranial first (see the package docstring).

    Args:
        folder_or_files: a folder (searched recursively), one file, or a list of files of one series.
        series_uid: the SeriesInstanceUID of the series, when the files hold several.
        limits: the reading budget for the headers (see ``list_dicom_series``); None for the defaults.

    Returns:
        One ``DicomStackInfo`` per distinct ImageOrientationPatient; ``stacks[i]`` is what
        ``read_dicom_series(folder_or_files, series_uid, stack=i)`` reads.

    Raises:
        StudyError: NOT_FOUND, NO_IMAGE, NOT_AN_IMAGE, TRUNCATED as ``list_dicom_series``; INCONSISTENT_GEOMETRY when
            the files hold several series and ``series_uid`` is not given.
    """
    if isinstance(folder_or_files, (str, Path)) and not Path(folder_or_files).exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the DICOM path does not exist.", str(folder_or_files))
    return select_series(folder_or_files, series_uid, limits=limits).stacks
