"""Geometry given by a dataset rather than by its files: voxel size and orientation overrides.

A PNG slice has no spacing or orientation at all, and some datasets ship NIfTI files whose header is wrong; their
dataset card (``lss.data.adapters.card``) says what the geometry is, the ``SeriesRecord`` carries it
(``spacing_mm``, ``axcodes``) and ``with_geometry`` applies it to the image and to its mask alike.

Axis codes follow nibabel: one letter per array axis, the direction that axis increases towards ("RAS": i towards
the right, j anterior, k superior). A sagittal PNG read as ``(1, rows, cols)`` with anterior to the left of the
picture and superior up is "RIP": rows run inferior, columns posterior.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

from lss.data.io.view import guess_view, through_plane_axis
from lss.data.volume import Volume, affine_from_axes

__all__ = ["axcodes_axes", "axcodes_affine", "with_geometry"]


def axcodes_axes(axcodes: str | Sequence[str]) -> np.ndarray:
    """(3, 3) unit RAS direction of each array axis, one per row, from axis codes ("RIP").

    Raises:
        ValueError: unless the codes name each of L/R, P/A, I/S exactly once.
    """
    codes = tuple(str(c).upper() for c in axcodes)
    try:
        ornt = nib.orientations.axcodes2ornt(codes)
    except ValueError as error:
        raise ValueError(f"axcodes {''.join(codes)!r} are not valid: {error}") from None
    if len(codes) != 3 or np.isnan(ornt).any() or len({int(a) for a in ornt[:, 0]}) != 3:
        raise ValueError(f"axcodes must name each of L/R, P/A, I/S once, got {''.join(codes)!r}.")
    axes = np.zeros((3, 3))
    for row, (world_axis, sign) in enumerate(ornt):
        axes[row, int(world_axis)] = float(sign)
    return axes


def axcodes_affine(
    axcodes: str | Sequence[str], spacing_mm: Sequence[float], shape: Sequence[int] | None = None
) -> np.ndarray:
    """A 4x4 RAS affine from axis codes and voxel size, centred on the world origin when ``shape`` is given.

    Args:
        axcodes: one code per array axis ("RIP").
        spacing_mm: (3,) voxel size per array axis, mm.
        shape: the array shape; the centre voxel is placed at (0, 0, 0). None: voxel (0, 0, 0) is.

    Raises:
        ValueError: for invalid codes or a non-positive spacing.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing_mm must be three positive numbers, got {list(spacing_mm)}.")
    affine = affine_from_axes(np.zeros(3), axcodes_axes(axcodes), spacing)
    if shape is not None:
        centre = (np.asarray(shape, dtype=float) - 1.0) / 2.0
        affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def with_geometry(
    volume: Volume, spacing_mm: Sequence[float] | None = None, axcodes: str | Sequence[str] | None = None
) -> Volume:
    """The volume with its voxel size and / or orientation replaced; the array is unchanged.

    The world position of the centre voxel is kept, so an image and its mask given the same overrides stay on
    one grid. What is not overridden (the spacing, or the axis directions) is kept from the volume's own affine.

    Args:
        volume: as read.
        spacing_mm: (3,) voxel size per array axis, mm (for a 2D slice, the third value is its thickness).
        axcodes: one code per array axis ("RIP").

    Returns:
        ``volume`` itself when nothing is overridden, else a new ``Volume`` whose meta has "geometry":
        "overridden" and "view" / "slice_axis" guessed again from the new geometry.

    Raises:
        ValueError: for invalid codes or a non-positive spacing.
    """
    if spacing_mm is None and axcodes is None:
        return volume
    spacing = volume.spacing if spacing_mm is None else np.asarray(spacing_mm, dtype=float)
    axes = volume.axes if axcodes is None else axcodes_axes(axcodes)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing_mm must be three positive numbers, got {list(spacing)}.")
    centre_index = (np.asarray(volume.shape, dtype=float) - 1.0) / 2.0
    centre_world = volume.world(centre_index)
    affine = affine_from_axes(np.zeros(3), axes, spacing)
    affine[:3, 3] = centre_world - affine[:3, :3] @ centre_index
    slice_axis = through_plane_axis(volume.shape, spacing)
    meta = {**volume.meta, "geometry": "overridden", "slice_axis": slice_axis,
            "view": guess_view(affine, slice_axis=slice_axis)}
    return Volume(volume.array, affine, meta)
