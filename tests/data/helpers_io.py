"""Small volumes and geometries shared by the reader / writer / adapter tests (tiny: 16x12x6 voxels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from lss.data.io import write_dicom_series
from lss.data.volume import Volume, affine_from_axes

SHAPE = (16, 12, 6)


def tilt_x(degrees: float) -> np.ndarray:
    """Rotation about the left-right (x) axis."""
    t = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])


def axial_axes(tilt_degrees: float = 0.0) -> np.ndarray:
    """RAS axes (rows = i, j, k) of an axial stack as DICOM stores it, tilted about the left-right axis.

    DICOM axial: row cosine +x LPS (= -x RAS, towards the left), column cosine +y LPS (= -y RAS, posterior).
    """
    base = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    return base @ tilt_x(tilt_degrees).T


def sagittal_axes() -> np.ndarray:
    """RAS axes of a sagittal stack as scanners store it: i posterior (-y), j inferior (-z), k = i x j (+x)."""
    i = np.array([0.0, -1.0, 0.0])
    j = np.array([0.0, 0.0, -1.0])
    return np.stack([i, j, np.cross(i, j)])


def affine(axes: np.ndarray, spacing=(0.8, 0.9, 3.0), origin=(12.5, -40.25, 80.0)) -> np.ndarray:
    return affine_from_axes(np.asarray(origin, dtype=float), axes, np.asarray(spacing, dtype=float))


def image_volume(axes: np.ndarray, shape=SHAPE, seed: int = 0, **kwargs) -> Volume:
    """A float32 image with a smooth pattern plus noise (so orientation mistakes show)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    array = (100.0 + 10.0 * i - 3.0 * j + 25.0 * k + rng.normal(0.0, 5.0, shape)).astype(np.float32)
    return Volume(array, affine(axes, **kwargs))


def label_volume(axes: np.ndarray, shape=SHAPE, seed: int = 1, **kwargs) -> Volume:
    """An int16 label map with SPIDER-like values (0, vertebrae, canal 100, discs 201-206)."""
    rng = np.random.default_rng(seed)
    values = np.array([0, 1, 2, 3, 100, 201, 202, 206], dtype=np.int16)
    return Volume(values[rng.integers(0, len(values), shape)], affine(axes, **kwargs))


def write_series(volume: Volume, folder: Path, **kwargs) -> list[Path]:
    """``write_dicom_series`` with a fresh study UID unless one is given."""
    kwargs.setdefault("study_uid", generate_uid())
    return write_dicom_series(volume, folder, **kwargs)


def quantum(volume: Volume) -> float:
    """The largest error 16-bit storage with one slope over the full range may introduce (plus float32 rounding)."""
    array = volume.array.astype(np.float64)
    return (array.max() - array.min()) / 65535.0 + 1e-4 * max(1.0, float(np.abs(array).max()))
