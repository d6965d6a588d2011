"""Geometry of DICOM slices in patient coordinates (LPS, mm): normals, in-plane axes, slice order, pixel -> patient
and the affine of a stack. Pure numpy on header values; the checks that name files live with the reader.

Index convention: the first pixel index is the column (along the row cosine, ImageOrientationPatient[0:3]), the
second the row (along the column cosine, [3:6]), as DICOM writes them and as ``read_dicom_series`` lays out its
array (``array[i=column, j=row, k=slice]``). In highdicom's terms that is ``index_convention="RD"`` with a
right-handed normal, row_cosine x column_cosine (highdicom's own volume default is "DR", which flips the normal).

From highdicom (``highdicom.spatial``): the slice normal (``get_normal_vector``) and the in-plane part and origin of
the affine (``create_affine_matrix_from_attributes``, DICOM PS3.3 Equation C.7.6.2.1-1). Kept by hand, because
highdicom's versions would change results:

- the slice column of a stack's affine is the measured mean step between slice positions, not highdicom's
  normal x spacing, so a sheared (gantry-tilted) stack keeps its true geometry;
- slices are ordered with a *stable* sort (``highdicom.spatial.get_plane_sort_index`` is not stable, which would
  change which two files a duplicate-position error names);
- ``pixel_to_lps`` takes fractional pixel indices (RSNA annotations); highdicom's ``PixelToReferenceTransformer``
  accepts integers only, and evaluating the affine product instead differs from this formula by up to ~2e-13 mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from highdicom.spatial import create_affine_matrix_from_attributes, get_normal_vector

__all__ = ["INDEX_CONVENTION", "slice_normal", "unit_cosines", "sort_along_normal", "pixel_to_lps", "stack_affine_lps"]

# (column index along the row cosine, row index along the column cosine): DICOM's order and ours.
INDEX_CONVENTION = "RD"
# Cosines whose dot product exceeds this (relative to their lengths) are not orthogonal.
ORTHOGONALITY_TOL = 1e-3


def slice_normal(orientation: np.ndarray | Sequence[float]) -> np.ndarray:
    """row_cosine x column_cosine of an ImageOrientationPatient (6 values); unit length only for unit cosines.

    The direction ``read_dicom_series`` stacks slices along, so the affine is right-handed.
    """
    return get_normal_vector(orientation, index_convention=INDEX_CONVENTION)


def unit_cosines(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The row and column cosines of an ImageOrientationPatient scaled to unit length.

    Args:
        orientation: (6,) ImageOrientationPatient.

    Returns:
        (row_cosine, column_cosine), or None unless they are two non-zero, orthogonal directions (within
        ``ORTHOGONALITY_TOL``).
    """
    row_cos, col_cos = orientation[:3], orientation[3:]
    norms = (np.linalg.norm(row_cos), np.linalg.norm(col_cos))
    if min(norms) < 1e-6 or abs(float(np.dot(row_cos, col_cos))) > ORTHOGONALITY_TOL * norms[0] * norms[1]:
        return None
    return row_cos / norms[0], col_cos / norms[1]


def sort_along_normal(positions: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orders slices by the projection of their ImagePositionPatient on the slice normal.

    Args:
        positions: (N, 3) ImagePositionPatient of each slice.
        normal: (3,) slice normal.

    Returns:
        ``(order, along)``: the stable sort index (ties keep input order) and the sorted projections (mm).
    """
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    return order, along[order]


def pixel_to_lps(
    position: np.ndarray, orientation: np.ndarray, spacing: np.ndarray, column: float, row: float
) -> np.ndarray:
    """Patient position (LPS, mm) of a pixel; pixel centres sit at integer indices.

    ``position + column * PixelSpacing[1] * row_cosine + row * PixelSpacing[0] * column_cosine``.

    Args:
        position: (3,) ImagePositionPatient.
        orientation: (6,) ImageOrientationPatient.
        spacing: (2,) PixelSpacing (between rows, between columns).
        column: x, the column index (may be fractional).
        row: y, the row index (may be fractional).
    """
    return position + float(column) * spacing[1] * orientation[:3] + float(row) * spacing[0] * orientation[3:]


def stack_affine_lps(
    origin: np.ndarray,
    row_cosine: np.ndarray,
    column_cosine: np.ndarray,
    spacing: np.ndarray,
    slice_step: np.ndarray,
) -> np.ndarray:
    """The 4x4 LPS affine of a stack: voxel (i=column, j=row, k=slice) -> patient position (mm).

    Columns: ``row_cosine * PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]`` and origin = ImagePositionPatient of
    slice 0 from ``highdicom.spatial.create_affine_matrix_from_attributes``; the k column is ``slice_step``.

    Args:
        origin: (3,) ImagePositionPatient of slice 0.
        row_cosine: (3,) unit row cosine.
        column_cosine: (3,) unit column cosine.
        spacing: (2,) PixelSpacing, positive.
        slice_step: (3,) displacement from one slice to the next (the mean step for a stack, normal x spacing for
            a single slice).
    """
    affine = create_affine_matrix_from_attributes(
        image_position=origin,
        image_orientation=np.concatenate([row_cosine, column_cosine]),
        pixel_spacing=spacing,
        spacing_between_slices=float(np.linalg.norm(slice_step)),
        index_convention=INDEX_CONVENTION,
    )
    affine[:3, 2] = slice_step
    return affine
