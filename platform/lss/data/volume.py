"""A 3D image (or label map) with its geometry: the one in-memory form every reader returns and every writer takes.

Geometry follows NIfTI/nibabel and MONAI: ``affine`` maps voxel indices ``(i, j, k, 1)`` to RAS+ world coordinates
in millimetres (+x towards the patient's right, +y anterior, +z superior). DICOM stores LPS+ (+x left, +y
posterior); readers and writers convert at the edge with ``LPS_TO_RAS``, so the rest of the code sees RAS+ only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Volume", "LPS_TO_RAS", "affine_from_axes"]

# Diagonal flip between DICOM's LPS+ and NIfTI's RAS+ world frames (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_axes(origin: np.ndarray, axes: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Builds a 4x4 voxel-to-world affine.

    Args:
        origin: (3,) world position of voxel (0, 0, 0).
        axes: (3, 3) unit direction of each voxel axis, one per row (row 0 = direction of index i).
        spacing: (3,) voxel size along each axis, mm.
    """
    axes = np.asarray(axes, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = (axes * np.asarray(spacing, dtype=float)[:, None]).T
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass
class Volume:
    """A 3D array with a voxel-to-world (RAS+, mm) affine and non-identifying metadata.

    Attributes:
        array: (I, J, K) voxel values; images are float or int, label maps int.
        affine: (4, 4) voxel index -> RAS+ world millimetres (nibabel/MONAI convention).
        meta: free-form, non-identifying metadata (modality, series description, view, level). Never patient tags.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        self.affine = np.asarray(self.affine, dtype=float)
        if self.array.ndim != 3:
            raise ValueError(f"a Volume holds a 3D array, got shape {self.array.shape}.")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}.")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-9:
            raise ValueError("affine is singular: voxel axes are degenerate.")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size along i, j, k in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def axes(self) -> np.ndarray:
        """(3, 3) unit world direction of the i, j, k voxel axes, one per row."""
        return (self.affine[:3, :3] / self.spacing).T

    def world(self, index: np.ndarray) -> np.ndarray:
        """World (RAS, mm) coordinates of voxel indices, (..., 3) -> (..., 3)."""
        index = np.asarray(index, dtype=float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def index(self, world: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of world (RAS, mm) points, (..., 3) -> (..., 3)."""
        inverse = np.linalg.inv(self.affine)
        world = np.asarray(world, dtype=float)
        return world @ inverse[:3, :3].T + inverse[:3, 3]

    def axcodes(self) -> tuple[str, str, str]:
        """Orientation codes of the voxel axes, e.g. ("R", "A", "S")."""
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def slice_normal(self) -> np.ndarray:
        """Unit world direction of the slice (k) axis."""
        return self.axes[2]
