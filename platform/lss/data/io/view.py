"""Which anatomical plane a stack of slices was acquired in ("sagittal", "coronal" or "axial").

Readers use it to fill ``Volume.meta["view"]`` and adapters to sort series into sagittal and axial ones. The plane
is the one whose normal is closest to the slice normal: a normal along x (left-right) means sagittal slices, along y
(anterior-posterior) coronal, along z (inferior-superior) axial; an axial stack tilted 15 degrees stays axial.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["VIEWS", "view_of_normal", "through_plane_axis", "guess_view"]

# Index = the world axis (x, y, z; RAS or LPS alike, only magnitudes count) the slice normal is closest to.
VIEWS: tuple[str, str, str] = ("sagittal", "coronal", "axial")


def view_of_normal(normal: np.ndarray | Sequence[float]) -> str:
    """The plane of slices with a given normal.

    Args:
        normal: (3,) slice normal in world coordinates (RAS or LPS; the sign does not matter).

    Raises:
        ValueError: when ``normal`` is not 3 finite numbers or is zero.
    """
    normal = np.asarray(normal, dtype=float).reshape(-1)
    if normal.shape != (3,) or not np.all(np.isfinite(normal)) or not np.any(normal):
        raise ValueError(f"a slice normal must be 3 finite numbers, not all zero, got {normal.tolist()!r}.")
    return VIEWS[int(np.argmax(np.abs(normal)))]


def through_plane_axis(shape: Sequence[int], spacing: Sequence[float], rel_tol: float = 0.05) -> int:
    """The voxel axis most likely to be the slice axis of a 3D image that does not say which one it is.

    The axis with the largest spacing (2D acquisitions have thick slices); among axes whose spacing is within
    ``rel_tol`` of the largest (isotropic images), the one with the fewest voxels.

    Args:
        shape: (3,) voxel counts along i, j, k.
        spacing: (3,) voxel sizes along i, j, k, mm.
        rel_tol: relative tolerance under which two spacings count as equal.
    """
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have 3 entries, got {tuple(shape)!r} and {tuple(spacing)!r}.")
    spacing_arr = np.asarray(spacing, dtype=float)
    largest = float(spacing_arr.max())
    candidates = [axis for axis in range(3) if spacing_arr[axis] >= largest * (1.0 - rel_tol)]
    return min(candidates, key=lambda axis: (int(shape[axis]), axis))


def guess_view(affine: np.ndarray, shape: Sequence[int] | None = None, *, slice_axis: int | None = None) -> str:
    """The plane of the slices of a volume.

    Args:
        affine: (4, 4) voxel-to-world affine (RAS+ or LPS+).
        shape: (3,) voxel counts; with it (and no ``slice_axis``) the slice axis is guessed by ``through_plane_axis``.
        slice_axis: the voxel axis that indexes the slices (2 for a DICOM series); default: guessed from ``shape``,
            or 2 when ``shape`` is not given.
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}.")
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if slice_axis is None:
        slice_axis = 2 if shape is None else through_plane_axis(shape, spacing)
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
    return view_of_normal(columns[:, slice_axis])
