"""One entry point for reading any supported image: ``read_volume`` picks the reader from what the path is.

=====================================  ==========  =====================================
path                                   format      reader
=====================================  ==========  =====================================
a folder                               "dicom"     ``read_dicom_series`` (one series)
``*.dcm`` / ``*.ima`` / DICM preamble  "dicom"     ``read_dicom_series`` (one slice)
``*.nii`` / ``*.nii.gz``               "nifti"     ``read_nifti``
``*.mha`` / ``*.mhd`` / ``*.nrrd``     "mha"       ``read_itk`` (SimpleITK)
``*.png``                              "png"       ``read_png`` (Pillow; one-slice volume)
=====================================  ==========  =====================================

``read_series`` and ``read_series_mask`` read a manifest ``SeriesRecord``'s image and mask and apply its geometry
overrides (``spacing_mm``, ``axcodes``; ``lss.data.io.geometry.with_geometry``) to both, so they stay on one grid.

Every entry point takes ``limits`` (``lss.config.InputLimits``; None for its defaults, so reading is bounded
whoever calls): each reader checks what the headers declare against it before decoding any voxel
(``lss.data.io.limits``) and refuses an image over it with IMAGE_TOO_LARGE. Messages name no file or folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.dicom import is_dicom_file, list_dicom_series, read_dicom_series, split_stack_series_id
from lss.data.io.geometry import with_geometry
from lss.data.io.itk import ITK_SUFFIXES, read_itk, read_itk_geometry
from lss.data.io.limits import check_declared_image
from lss.data.io.nifti import is_nifti_path, read_nifti, read_nifti_geometry
from lss.data.io.png import is_png_path, read_png, read_png_geometry
from lss.data.manifest import SeriesRecord
from lss.data.volume import Volume

__all__ = ["detect_format", "read_volume", "read_series", "read_series_mask", "read_image_geometry"]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def detect_format(path: str | Path) -> str:
    """The image format of a path: "dicom", "nifti", "mha" (MetaImage and NRRD) or "png".

    Raises:
        StudyError: NOT_FOUND when the path does not exist; UNSUPPORTED_FORMAT for any other file.
    """
    path = Path(path)
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the image path does not exist.", str(path))
    if path.is_dir():
        return "dicom"
    if is_nifti_path(path):
        return "nifti"
    if path.suffix.lower() in ITK_SUFFIXES:
        return "mha"
    if is_png_path(path):
        return "png"
    if path.suffix.lower() in _DICOM_SUFFIXES or is_dicom_file(path):
        return "dicom"
    raise StudyError(
        ErrorCode.UNSUPPORTED_FORMAT,
        "the file is no DICOM, NIfTI (.nii, .nii.gz), MetaImage/NRRD (.mha, .mhd, .nrrd) or PNG file.",
        str(path),
    )


def read_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    stack: int | None = None,
    limits: InputLimits | None = None,
) -> Volume:
    """Reads a DICOM series folder, a DICOM file, a NIfTI file, a MetaImage/NRRD file or a PNG slice.

    Args:
        path: what to read (see the module table).
        series_uid: for a DICOM folder that holds several series, the SeriesInstanceUID of the one to read.
        stack: for a DICOM series of several stacks (one ImageOrientationPatient each), the stack to read
            (0 = the most cranial; see ``lss.data.io.dicom``).
        limits: the reading budget, checked from the headers before any voxel is decoded
            (``lss.data.io.limits``); None for ``InputLimits()``'s defaults.

    Returns:
        A ``Volume`` (RAS+ affine); ``meta`` holds "format" and "view" ("sagittal", "coronal" or "axial") and,
        for DICOM, "modality", "series_description", "series_uid", "slice_thickness" (see ``read_dicom_series``).
        A PNG is a ``(1, rows, cols)`` volume with an assumed geometry (see ``lss.data.io.png``).

    Raises:
        StudyError: NOT_FOUND, UNSUPPORTED_FORMAT, and every code of the chosen reader; a folder holding several
            DICOM series without ``series_uid`` (or a series of several stacks without ``stack``) raises
            INCONSISTENT_GEOMETRY naming the series (stack) count; IMAGE_TOO_LARGE for an image over ``limits``.
        ValueError: when ``stack`` is given for a file that is not DICOM, or is not an integer >= 0.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom_series(path if path.is_dir() else [path], series_uid, stack=stack, limits=limits)
    if stack is not None:
        raise ValueError(f"stack={stack!r} applies to DICOM series only; the file is {fmt}.")
    if fmt == "nifti":
        return read_nifti(path, limits=limits)
    if fmt == "png":
        _check_png(path, limits)
        return read_png(path)
    return read_itk(path, limits=limits)


# Bytes per pixel a PNG may decode to (RGBA, or a 32-bit integer mode): its header alone does not say which it is.
_PNG_BYTES_PER_PIXEL = 4


def _check_png(path: Path, limits: InputLimits | None) -> None:
    """A PNG's size from its header (Pillow reads no pixel before ``load``) against the budget."""
    shape, _ = read_png_geometry(path)
    check_declared_image(shape, _PNG_BYTES_PER_PIXEL, limits, "the PNG image")


def read_series(series: SeriesRecord, root: str | Path | None = None, *, limits: InputLimits | None = None) -> Volume:
    """Reads the image of a manifest ``SeriesRecord``.

    A DICOM folder holding one series is read whatever its ``series_id``; one holding several is read for the
    series whose SeriesInstanceUID equals ``series_id`` (as the generic adapter records them). A DICOM
    ``series_id`` of the form ``f"{id}#stack{i}"`` (``lss.data.io.stack_series_id``) reads only stack ``i`` of
    that series (series of several angled stacks, as the adapters record them); ``id`` is matched as above.
    The series' geometry overrides (``spacing_mm``, ``axcodes``) replace what the file says (``with_geometry``).

    Args:
        series: the record.
        root: the folder a relative ``series.path`` is relative to (``StudyRecord.root``).
        limits: the reading budget (see ``read_volume``); None for the defaults.

    Raises:
        StudyError: as ``read_volume``.
    """
    return _overridden(_read_series_image(series, root, limits), series)


def read_series_mask(
    series: SeriesRecord, root: str | Path | None = None, *, limits: InputLimits | None = None
) -> Volume:
    """Reads the mask of a manifest ``SeriesRecord`` (its values as stored: ``label_map`` is not applied here),
    with the same geometry overrides as its image (``read_series``).

    Args:
        series: the record; it must have a ``mask_path``.
        root: the folder a relative ``mask_path`` is relative to (``StudyRecord.root``).
        limits: the reading budget (see ``read_volume``); None for the defaults.

    Raises:
        ValueError: when the series has no mask.
        StudyError: as ``read_volume``.
    """
    if not series.mask_path:
        raise ValueError(f"series {series.series_id!r} has no mask_path.")
    return _overridden(read_volume(_resolve(series.mask_path, root), limits=limits), series)


def _resolve(path: str, root: str | Path | None) -> Path:
    resolved = Path(path)
    if not resolved.is_absolute() and root is not None:
        resolved = Path(root) / resolved
    return resolved


def _overridden(volume: Volume, series: SeriesRecord) -> Volume:
    try:
        return with_geometry(volume, series.spacing_mm, series.axcodes)
    except ValueError as error:  # SeriesRecord validates both; a volume may still not fit (e.g. 4 values)
        raise StudyError(ErrorCode.INCONSISTENT_GEOMETRY, f"the geometry override does not apply: {error}") from None


def _read_series_image(series: SeriesRecord, root: str | Path | None, limits: InputLimits | None) -> Volume:
    path = _resolve(series.path, root)
    if series.format != "dicom":
        return read_volume(path, limits=limits)
    series_id, stack = split_stack_series_id(series.series_id)
    if path.is_dir():
        found = list_dicom_series(path, limits=limits)
        chosen = next((info for info in found if info.series_uid == series_id), None)
        if chosen is None and len(found) == 1:
            chosen = found[0]
        if chosen is None:
            # raises NOT_FOUND naming the series count
            return read_dicom_series(path, series_id, stack=stack, limits=limits)
        return read_dicom_series(chosen.files, stack=stack, limits=limits)
    return read_volume(path, stack=stack, limits=limits)


def read_image_geometry(
    path: str | Path, *, limits: InputLimits | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS+ affine of a NIfTI, MetaImage/NRRD or PNG file (assumed geometry), from its header only.

    Args:
        path: the file.
        limits: the reading budget the declared image must fit; None for the defaults.

    Raises:
        StudyError: NOT_FOUND, UNSUPPORTED_FORMAT (DICOM or unknown), the reader's header errors, and
            IMAGE_TOO_LARGE for an image over ``limits``.
    """
    fmt = detect_format(path)
    if fmt == "nifti":
        return read_nifti_geometry(path, limits=limits)
    if fmt == "mha":
        return read_itk_geometry(path, limits=limits)
    if fmt == "png":
        _check_png(Path(path), limits)
        return read_png_geometry(path)
    raise StudyError(
        ErrorCode.UNSUPPORTED_FORMAT, "the file is DICOM; use list_dicom_series for its geometry.", str(path)
    )
