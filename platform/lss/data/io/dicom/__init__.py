"""DICOM MR series: list the series in a folder, read one into a ``Volume``, write a ``Volume`` as a series.

Modules: ``listing`` (find series and stacks from headers), ``reading`` (``read_dicom_series``,
``dicom_pixel_to_ras``), ``writing`` (``write_dicom_series``), ``geometry`` (slice normal, order, affine, pixel ->
patient; highdicom where it gives the same numbers) and ``headers`` (one file: read it, typed attribute access).

Array convention of ``read_dicom_series`` (and of ``write_dicom_series``, its inverse)::

    array[i, j, k]   i = column index (along the row direction cosine, ImageOrientationPatient[0:3]),
                     j = row index (along the column direction cosine, ImageOrientationPatient[3:6]),
                     k = slice, ordered by increasing position along the normal row_cosine x column_cosine.

So ``array[:, :, k] == pixel_array.T`` of the k-th slice, and ``affine`` columns are, in LPS before the flip to
RAS: ``row_cosine * PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]``, the mean step between consecutive
ImagePositionPatient values (``normal * slice spacing`` for an unsheared stack), origin = ImagePositionPatient of
slice 0. This is what nibabel/dcm2niix-style readers give before any reorientation, and the affine is always
right-handed. Nothing here reads or returns patient identifiers: ``Volume.meta`` holds only series-level,
non-identifying attributes, and error messages name files by number ("file 3 of the series"), never by name, and
DICOM attributes by keyword. Reading budget: every file is read through ``headers.read_file`` (a deflated file is
inflated with a cap first) and a series is checked against ``lss.config.InputLimits`` from its headers before any
pixel data is read (``read_dicom_series(..., limits=...)``; ``lss.data.io.limits``).

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

from lss.data.io.dicom.headers import is_dicom_file
from lss.data.io.dicom.listing import (
    STACK_ORIENTATION_TOL,
    DicomSeriesInfo,
    DicomStackInfo,
    list_dicom_series,
    list_dicom_stacks,
    split_stack_series_id,
    stack_series_id,
)
from lss.data.io.dicom.reading import GAP_FACTOR, ORIENTATION_TOL, SPACING_TOL, dicom_pixel_to_ras, read_dicom_series
from lss.data.io.dicom.writing import write_dicom_series

__all__ = [
    "DicomSeriesInfo",
    "DicomStackInfo",
    "STACK_ORIENTATION_TOL",
    "GAP_FACTOR",
    "ORIENTATION_TOL",
    "SPACING_TOL",
    "list_dicom_series",
    "list_dicom_stacks",
    "read_dicom_series",
    "stack_series_id",
    "split_stack_series_id",
    "write_dicom_series",
    "dicom_pixel_to_ras",
    "is_dicom_file",
]
