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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lss.data.errors import ErrorCode, StudyError
from lss.data.io.dicom import is_dicom_file, list_dicom_series, read_dicom_series, split_stack_series_id
from lss.data.io.geometry import with_geometry
from lss.data.io.itk import ITK_SUFFIXES, read_itk, read_itk_geometry
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
        raise StudyError(ErrorCode.NOT_FOUND, f"{path.name} does not exist.", str(path))
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
        f"{path.name} is no DICOM, NIfTI (.nii, .nii.gz), MetaImage/NRRD (.mha, .mhd, .nrrd) or PNG file.",
        str(path),
    )


def read_volume(path: str | Path, *, series_uid: str | None = None, stack: int | None = None) -> Volume:
    """Reads a DICOM series folder, a DICOM file, a NIfTI file, a MetaImage/NRRD file or a PNG slice.

    Args:
        path: what to read (see the module table).
        series_uid: for a DICOM folder that holds several series, the SeriesInstanceUID of the one to read.
        stack: for a DICOM series of several stacks (one ImageOrientationPatient each), the stack to read
            (0 = the most cranial; see ``lss.data.io.dicom``).

    Returns:
        A ``Volume`` (RAS+ affine); ``meta`` holds "format" and "view" ("sagittal", "coronal" or "axial") and,
        for DICOM, "modality", "series_description", "series_uid", "slice_thickness" (see ``read_dicom_series``).
        A PNG is a ``(1, rows, cols)`` volume with an assumed geometry (see ``lss.data.io.png``).

    Raises:
        StudyError: NOT_FOUND, UNSUPPORTED_FORMAT, and every code of the chosen reader; a folder holding several
            DICOM series without ``series_uid`` (or a series of several stacks without ``stack``) raises
            INCONSISTENT_GEOMETRY naming the series (stack) count.
        ValueError: when ``stack`` is given for a file that is not DICOM, or is not an integer >= 0.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom_series(path if path.is_dir() else [path], series_uid, stack=stack)
    if stack is not None:
        raise ValueError(f"stack={stack!r} applies to DICOM series only; {path.name} is {fmt}.")
    if fmt == "nifti":
        return read_nifti(path)
    if fmt == "png":
        return read_png(path)
    return read_itk(path)


def read_series(series: SeriesRecord, root: str | Path | None = None) -> Volume:
    """Reads the image of a manifest ``SeriesRecord``.

    A DICOM folder holding one series is read whatever its ``series_id``; one holding several is read for the
    series whose SeriesInstanceUID equals ``series_id`` (as the generic adapter records them). A DICOM
    ``series_id`` of the form ``f"{id}#stack{i}"`` (``lss.data.io.stack_series_id``) reads only stack ``i`` of
    that series (series of several angled stacks, as the adapters record them); ``id`` is matched as above.
    The series' geometry overrides (``spacing_mm``, ``axcodes``) replace what the file says (``with_geometry``).

    Args:
        series: the record.
        root: the folder a relative ``series.path`` is relative to (``StudyRecord.root``).

    Raises:
        StudyError: as ``read_volume``.
    """
    return _overridden(_read_series_image(series, root), series)


def read_series_mask(series: SeriesRecord, root: str | Path | None = None) -> Volume:
    """Reads the mask of a manifest ``SeriesRecord`` (its values as stored: ``label_map`` is not applied here),
    with the same geometry overrides as its image (``read_series``).

    Args:
        series: the record; it must have a ``mask_path``.
        root: the folder a relative ``mask_path`` is relative to (``StudyRecord.root``).

    Raises:
        ValueError: when the series has no mask.
        StudyError: as ``read_volume``.
    """
    if not series.mask_path:
        raise ValueError(f"series {series.series_id!r} has no mask_path.")
    return _overridden(read_volume(_resolve(series.mask_path, root)), series)


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


def _read_series_image(series: SeriesRecord, root: str | Path | None) -> Volume:
    path = _resolve(series.path, root)
    if series.format != "dicom":
        return read_volume(path)
    series_id, stack = split_stack_series_id(series.series_id)
    if path.is_dir():
        found = list_dicom_series(path)
        chosen = next((info for info in found if info.series_uid == series_id), None)
        if chosen is None and len(found) == 1:
            chosen = found[0]
        if chosen is None:
            return read_dicom_series(path, series_id, stack=stack)  # raises NOT_FOUND naming the series count
        return read_dicom_series(chosen.files, stack=stack)
    return read_volume(path, stack=stack)


def read_image_geometry(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS+ affine of a NIfTI, MetaImage/NRRD or PNG file (assumed geometry), from its header only.

    Raises:
        StudyError: NOT_FOUND, UNSUPPORTED_FORMAT (DICOM or unknown), and the reader's header errors.
    """
    fmt = detect_format(path)
    if fmt == "nifti":
        return read_nifti_geometry(path)
    if fmt == "mha":
        return read_itk_geometry(path)
    if fmt == "png":
        return read_png_geometry(path)
    raise StudyError(
        ErrorCode.UNSUPPORTED_FORMAT, f"{Path(path).name} is DICOM; use list_dicom_series for its geometry.", str(path)
    )
