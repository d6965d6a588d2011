"""Image readers and writers: DICOM series, NIfTI, MetaImage/NRRD (and PNG slices, read only), all to and from
``lss.data.volume.Volume``.

``read_volume`` reads any of them; the per-format modules hold the details (``dicom``, ``nifti``, ``itk``, ``png``),
``view`` guesses the acquisition plane and ``geometry`` applies a dataset's spacing / orientation overrides. Every
reader raises ``StudyError`` with an ``ErrorCode`` and never puts a patient identifier, a file or folder name in
``Volume.meta`` or in a message. Every reader takes ``limits`` (``lss.config.InputLimits``, defaults when None) and
checks what the headers declare against it before decoding any voxel (``limits``: IMAGE_TOO_LARGE).
"""

from __future__ import annotations

from lss.data.io.detect import detect_format, read_image_geometry, read_series, read_series_mask, read_volume
from lss.data.io.dicom import (
    DicomSeriesInfo,
    DicomStackInfo,
    dicom_pixel_to_ras,
    is_dicom_file,
    list_dicom_series,
    list_dicom_stacks,
    read_dicom_series,
    split_stack_series_id,
    stack_series_id,
    write_dicom_series,
)
from lss.data.io.geometry import axcodes_affine, axcodes_axes, with_geometry
from lss.data.io.itk import ITK_SUFFIXES, read_itk, read_itk_geometry, write_mha
from lss.data.io.nifti import NIFTI_SUFFIXES, is_nifti_path, read_nifti, read_nifti_geometry, write_nifti
from lss.data.io.png import PNG_SUFFIXES, is_png_path, read_png, read_png_geometry
from lss.data.io.view import VIEWS, guess_view, through_plane_axis, view_of_normal

__all__ = [
    "read_volume",
    "read_series",
    "read_series_mask",
    "detect_format",
    "read_image_geometry",
    "DicomSeriesInfo",
    "DicomStackInfo",
    "list_dicom_series",
    "list_dicom_stacks",
    "read_dicom_series",
    "stack_series_id",
    "split_stack_series_id",
    "write_dicom_series",
    "dicom_pixel_to_ras",
    "is_dicom_file",
    "read_nifti",
    "read_nifti_geometry",
    "write_nifti",
    "is_nifti_path",
    "NIFTI_SUFFIXES",
    "read_itk",
    "read_itk_geometry",
    "write_mha",
    "ITK_SUFFIXES",
    "read_png",
    "read_png_geometry",
    "is_png_path",
    "PNG_SUFFIXES",
    "with_geometry",
    "axcodes_affine",
    "axcodes_axes",
    "VIEWS",
    "view_of_normal",
    "through_plane_axis",
    "guess_view",
]
