"""Reading one DICOM MR series, or one stack of it, into a ``Volume``; and the patient position of one pixel.

``read_dicom_series`` runs in steps, each a function below, and each step's checks fail with a coded
``StudyError`` before the next step starts:

1. choose the files (``_stack_files``): the series, then the stack, then the slice count; check their size against
   the reading budget from the headers the listing read (``_check_budget``, ``lss.data.io.limits``), before any
   pixel data is read;
2. read them and check what kind of image they are (``_read_slices``, ``_check_image_type``);
3. the in-plane grid the slices share (``_in_plane_grid``);
4. sort the slices along the normal and find the slice step (``_sort_slices``);
5. decode and rescale the pixels (``_pixels``);
6. the affine (``geometry.stack_affine_lps``) and the non-identifying meta (``_series_meta``).

Messages name a file by its number in the series ("file 3 of the series": the series' files in natural order), never
by its name, and quote no DICOM text value (a Modality only when it is one of DICOM's defined terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.dicom.geometry import pixel_to_lps, slice_normal, sort_along_normal, stack_affine_lps, unit_cosines
from lss.data.io.dicom.headers import (
    DicomFootprint,
    cut_short,
    float_of,
    footprint_of,
    int_of,
    quoted_modality,
    read_file,
    read_file_sized,
    required_floats,
    text_of,
    truncated,
)
from lss.data.io.dicom.listing import DicomSeriesInfo, check_stack_index, describe_stacks, select_series
from lss.data.io.limits import check_declared_size
from lss.data.io.view import view_of_normal
from lss.data.volume import LPS_TO_RAS, Volume

__all__ = ["GAP_FACTOR", "ORIENTATION_TOL", "SPACING_TOL", "read_dicom_series", "dicom_pixel_to_ras"]

# A step between sorted slice positions larger than this times the median step is a missing slice.
GAP_FACTOR = 1.5
# Tolerances for "the same geometry" across the slices of one series.
ORIENTATION_TOL = 1e-4
SPACING_TOL = 1e-4


class _Slice(NamedTuple):
    """One file of the series, read with its pixel data."""

    path: Path
    ds: Dataset
    label: str  # how messages name it: "file 3 of the series"


class _Grid(NamedTuple):
    """The in-plane geometry every slice of the series shares."""

    row_cosine: np.ndarray  # unit, LPS
    column_cosine: np.ndarray  # unit, LPS
    normal: np.ndarray  # row_cosine x column_cosine
    spacing: np.ndarray  # PixelSpacing: (between rows, between columns), mm
    rows: int
    columns: int


class _Stepping(NamedTuple):
    """Where the sorted slices lie along the normal."""

    origin: np.ndarray  # ImagePositionPatient of slice 0 (LPS, mm)
    step: np.ndarray  # displacement from one slice to the next (LPS, mm)
    spacing: float  # slice spacing, mm


def read_dicom_series(
    folder_or_files: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    *,
    stack: int | None = None,
    min_slices: int = 1,
    limits: InputLimits | None = None,
) -> Volume:
    """Reads one single-frame MR DICOM series, or one stack of it, into a ``Volume`` (float32, RAS+ affine).

    Slices are sorted by the projection of ImagePositionPatient on the slice normal (the cross product of the two
    ImageOrientationPatient cosines); pixel values are rescaled with RescaleSlope/RescaleIntercept. Before any pixel
    data is read, the files to read are checked against ``limits`` from their headers: Rows x Columns x frames summed
    over them, their decoded bytes (SamplesPerPixel, BitsAllocated; a deflated file's inflated size), the largest
    Rows or Columns and the number of frames.

    Args:
        folder_or_files: a folder (searched recursively), one file, or a list of files of one series.
        series_uid: the SeriesInstanceUID to read when the files hold several series.
        stack: the stack to read when the series holds several (``DicomStackInfo.index``: 0 is the most cranial;
            see ``list_dicom_stacks``). ``stack=0`` of a single-orientation series is the whole series.
        min_slices: the fewest slices accepted (in the stack, when ``stack`` is given).
        limits: the reading budget (``lss.data.io.limits``); None for the defaults.

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
            in positions), TOO_FEW_SLICES (fewer than ``min_slices``), NON_FINITE (NaN or infinite values),
            IMAGE_TOO_LARGE (over ``limits``, or a deflated file that inflates past ``max_decoded_mb``).
        ValueError: when ``min_slices`` is below 1 or ``stack`` is not an integer >= 0.
    """
    if int(min_slices) < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices!r}.")
    stack_index = None if stack is None else check_stack_index(stack)
    if isinstance(folder_or_files, (str, Path)) and not Path(folder_or_files).exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the DICOM path does not exist.", str(folder_or_files))
    info = select_series(folder_or_files, series_uid, limits=limits)
    where = str(folder_or_files) if isinstance(folder_or_files, (str, Path)) else str(info.files[0].parent)
    labels = {path: f"file {number} of the series" for number, path in enumerate(info.files, start=1)}

    files = _stack_files(info, stack_index, min_slices, where, labels)
    _check_budget(info, files, stack_index, where, limits)
    slices = _read_slices(files, labels, limits)
    _check_image_type(slices)
    if stack_index is None and info.n_stacks > 1:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"the series mixes orientations: it holds {info.n_stacks} stacks of different ImageOrientationPatient "
            f"({describe_stacks(info.stacks)}); read one with read_dicom_series(..., stack=i), i from 0 (the most "
            f"cranial) to {info.n_stacks - 1} (list them with list_dicom_stacks).",
            where,
        )
    grid = _in_plane_grid(slices, where)
    first = slices[0].ds  # in file order: the series-level attributes come from here
    slices, stepping = _sort_slices(slices, grid.normal, float_of(first, "SliceThickness"), where)
    array = _pixels(slices, grid, where)
    affine_lps = stack_affine_lps(stepping.origin, grid.row_cosine, grid.column_cosine, grid.spacing, stepping.step)
    meta = _series_meta(first, slices, grid, stepping, stack_index, info.n_stacks)
    return Volume(array=array, affine=LPS_TO_RAS @ affine_lps, meta=meta)


def _stack_files(
    info: DicomSeriesInfo, stack_index: int | None, min_slices: int, where: str, labels: dict[Path, str]
) -> list[Path]:
    """The files to read: the whole series, or stack ``stack_index`` of it; at least ``min_slices`` of them."""
    files = info.files
    if stack_index is not None:
        grouped = {path for item in info.stacks for path in item.files}
        lost = [path for path in files if path not in grouped]
        if lost:
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"{labels[lost[0]]} lacks a valid ImageOrientationPatient; its stack is unknown.",
                str(lost[0]),
            )
        if stack_index >= info.n_stacks:
            raise StudyError(
                ErrorCode.NOT_FOUND,
                f"stack {stack_index} does not exist: the series has {info.n_stacks} stack(s) "
                f"({describe_stacks(info.stacks)}).",
                where,
            )
        files = info.stacks[stack_index].files
    if len(files) < min_slices:
        what = "the series" if stack_index is None else f"stack {stack_index} of the series"
        raise StudyError(
            ErrorCode.TOO_FEW_SLICES, f"{what} has {len(files)} slice(s); at least {min_slices} are needed.", where
        )
    return files


def _check_budget(
    info: DicomSeriesInfo, files: Sequence[Path], stack_index: int | None, where: str, limits: InputLimits | None
) -> None:
    """The files about to be read against the reading budget, from the headers the listing read (no pixel data).

    Raises:
        StudyError: IMAGE_TOO_LARGE (``lss.data.io.limits.check_declared_size``).
    """
    prints: list[DicomFootprint] = []
    for path in files:
        footprint = info.footprints.get(path)
        if footprint is None:  # a DicomSeriesInfo built elsewhere: read the header again
            ds, stored = read_file_sized(path, stop_before_pixels=True, limits=limits)
            footprint = footprint_of(ds, stored) if ds is not None else footprint_of(Dataset(), 0)
        prints.append(footprint)
    what = "the series" if stack_index is None else f"stack {stack_index} of the series"
    try:
        check_declared_size(
            voxels=sum(p.voxels for p in prints),
            decoded_bytes=sum(p.decoded_bytes for p in prints),
            matrix=max((max(p.rows, p.columns) for p in prints), default=0),
            frames=sum(p.frames for p in prints),
            limits=limits,
            what=what,
        )
    except StudyError as error:
        error.path = where
        raise


def _read_slices(files: Sequence[Path], labels: dict[Path, str], limits: InputLimits | None) -> list[_Slice]:
    """Each file with its pixel data (not decoded yet)."""
    slices = []
    for path in files:
        ds = read_file(path, stop_before_pixels=False, limits=limits, label=labels[path])
        if ds is None:
            raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{labels[path]} is not a DICOM file.", str(path))
        slices.append(_Slice(path, ds, labels[path]))
    return slices


def _check_image_type(slices: Sequence[_Slice]) -> None:
    """Single-frame greyscale MR images with pixel data, each of them."""
    for path, ds, label in slices:
        modality = text_of(ds, "Modality")
        if modality and modality != "MR":
            raise StudyError(
                ErrorCode.WRONG_MODALITY,
                f"{label} has Modality {quoted_modality(modality)}; only MR images are supported.",
                str(path),
            )
        frames = int_of(ds, "NumberOfFrames")
        if frames is not None and frames > 1:
            raise StudyError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"{label} is a multi-frame image (NumberOfFrames {frames}); only single-frame series are supported.",
                str(path),
            )
        samples = int_of(ds, "SamplesPerPixel")
        if samples is not None and samples != 1:
            raise StudyError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"{label} has SamplesPerPixel {samples}; only greyscale images are supported.",
                str(path),
            )
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            if cut_short(path, ds):
                raise truncated(path, "it stops before its pixel data", label)
            raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{label} has no pixel data.", str(path))


def _in_plane_grid(slices: Sequence[_Slice], where: str) -> _Grid:
    """One orientation, one pixel grid (Rows, Columns, PixelSpacing) for all slices, as the first slice has it."""
    first_path, first, first_label = slices[0]
    iop = required_floats(first, "ImageOrientationPatient", 6, first_path, first_label)
    spacing = required_floats(first, "PixelSpacing", 2, first_path, first_label)
    rows, columns = int_of(first, "Rows") or 0, int_of(first, "Columns") or 0
    for path, ds, label in slices:
        other = required_floats(ds, "ImageOrientationPatient", 6, path, label)
        if not np.allclose(other, iop, atol=ORIENTATION_TOL):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"{label} has ImageOrientationPatient {np.round(other, 4).tolist()}, "
                f"{first_label} {np.round(iop, 4).tolist()}; the series mixes orientations.",
                str(path),
            )
        size = (int_of(ds, "Rows") or 0, int_of(ds, "Columns") or 0)
        if size != (rows, columns):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"{label} is {size[0]}x{size[1]} (Rows x Columns), {first_label} {rows}x{columns}.",
                str(path),
            )
        other_spacing = required_floats(ds, "PixelSpacing", 2, path, label)
        if not np.allclose(other_spacing, spacing, atol=SPACING_TOL):
            raise StudyError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"{label} has PixelSpacing {other_spacing.tolist()}, {first_label} {spacing.tolist()}.",
                str(path),
            )
    if rows < 1 or columns < 1:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"{first_label} has Rows {rows} and Columns {columns}.", where
        )
    if np.any(spacing <= 0):
        raise StudyError(ErrorCode.ABSURD_SPACING, f"PixelSpacing {spacing.tolist()} is not positive.", where)
    cosines = unit_cosines(iop)
    if cosines is None:
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"ImageOrientationPatient {np.round(iop, 4).tolist()} is not two orthogonal directions.",
            where,
        )
    row_cos, col_cos = cosines
    normal = slice_normal(np.concatenate([row_cos, col_cos]))
    return _Grid(row_cos, col_cos, normal, spacing, rows, columns)


def _sort_slices(
    slices: Sequence[_Slice], normal: np.ndarray, thickness: float | None, where: str
) -> tuple[list[_Slice], _Stepping]:
    """The slices in increasing position along ``normal``, and their step.

    Several slices: the step is the mean displacement between consecutive positions (``normal * spacing`` for an
    unsheared stack) and the spacing the median step; one slice: ``normal`` times SpacingBetweenSlices, else
    ``thickness`` (SliceThickness), else 1 mm.

    Raises:
        StudyError: INCONSISTENT_GEOMETRY for a slice without ImagePositionPatient or two slices at one position;
            MISSING_SLICES for a step over ``GAP_FACTOR`` times the median.
    """
    positions = np.stack([required_floats(ds, "ImagePositionPatient", 3, path, label) for path, ds, label in slices])
    order, along = sort_along_normal(positions, normal)
    slices = [slices[index] for index in order]
    positions = positions[order]
    if len(slices) == 1:
        spacing = float_of(slices[0].ds, "SpacingBetweenSlices") or thickness or 1.0
        if spacing <= 0:
            spacing = 1.0
        return slices, _Stepping(positions[0], normal * spacing, float(spacing))
    steps = np.diff(along)
    median = float(np.median(steps))
    duplicate = int(np.argmin(steps))
    if steps[duplicate] <= max(1e-4, 1e-3 * median):
        names = (slices[duplicate].label, slices[duplicate + 1].label)
        raise StudyError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"{names[0]} and {names[1]} share the position {along[duplicate]:.3f} mm along the normal "
            "(several acquisitions in one series?).",
            where,
        )
    gap = int(np.argmax(steps))
    if steps[gap] > GAP_FACTOR * median:
        raise StudyError(
            ErrorCode.MISSING_SLICES,
            f"a gap of {steps[gap]:.3f} mm between {slices[gap].label} and {slices[gap + 1].label} "
            f"is more than {GAP_FACTOR}x the median slice step {median:.3f} mm; slices are missing.",
            where,
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    return slices, _Stepping(positions[0], step, median)


def _slice_pixels(path: Path, ds: Dataset, label: str, grid: _Grid) -> np.ndarray:
    """One slice's pixels as float64 (Rows, Columns), rescaled with RescaleSlope / RescaleIntercept."""
    try:
        pixels = ds.pixel_array
    except Exception as error:  # noqa: BLE001 - any decoder failure means the pixels cannot be used
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        # Named only when DICOM defines it: the element is text in the file and could hold anything.
        known = syntax is not None and UID(str(syntax)).type == "Transfer Syntax"
        syntax_name = UID(str(syntax)).name if known else "not one DICOM defines"
        raise StudyError(
            ErrorCode.TRUNCATED,
            f"the pixel data of {label} cannot be decoded ({type(error).__name__}; transfer syntax {syntax_name}).",
            str(path),
        ) from None
    if pixels.shape != (grid.rows, grid.columns):
        raise StudyError(
            ErrorCode.TRUNCATED,
            f"the pixel data of {label} has shape {pixels.shape}, expected ({grid.rows}, {grid.columns}).",
            str(path),
        )
    slope = float_of(ds, "RescaleSlope", 1.0)
    intercept = float_of(ds, "RescaleIntercept", 0.0)
    return pixels.astype(np.float64) * slope + intercept


def _pixels(slices: Sequence[_Slice], grid: _Grid, where: str) -> np.ndarray:
    """The (Columns, Rows, slices) float32 array: ``array[:, :, k]`` is slice k's pixels transposed."""
    array = np.stack([_slice_pixels(path, ds, label, grid).T for path, ds, label in slices], axis=2).astype(np.float32)
    if not np.all(np.isfinite(array)):
        count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise StudyError(ErrorCode.NON_FINITE, f"the series has {count} NaN or infinite voxel value(s).", where)
    return array


def _series_meta(
    first: Dataset,
    slices: Sequence[_Slice],
    grid: _Grid,
    stepping: _Stepping,
    stack_index: int | None,
    n_stacks: int,
) -> dict[str, Any]:
    """``Volume.meta``: series-level, non-identifying attributes only (no patient name, id or date)."""
    return {
        "format": "dicom",
        "view": view_of_normal(grid.normal),
        "slice_axis": 2,
        "modality": text_of(first, "Modality"),
        "series_description": text_of(first, "SeriesDescription"),
        "series_uid": text_of(first, "SeriesInstanceUID"),
        "study_uid": text_of(first, "StudyInstanceUID"),
        "slice_thickness": float_of(first, "SliceThickness"),
        "slice_spacing": float(stepping.spacing),
        "n_slices": len(slices),
        "instance_numbers": [int_of(item.ds, "InstanceNumber") for item in slices],
        "stack": stack_index,
        "n_stacks": n_stacks,
    }


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
    position = required_floats(header, "ImagePositionPatient", 3, where)
    iop = required_floats(header, "ImageOrientationPatient", 6, where)
    spacing = required_floats(header, "PixelSpacing", 2, where)
    return LPS_TO_RAS[:3, :3] @ pixel_to_lps(position, iop, spacing, column, row)
