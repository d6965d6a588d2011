"""NIfTI-1/2 volumes (.nii, .nii.gz) through nibabel.

NIfTI's affine is already voxel -> RAS+ mm (sform when set, else qform), so it is taken as is; the array keeps the
file's voxel order and dtype (scaled data, scl_slope != 1, comes back as float32).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from lss.data.errors import ErrorCode, StudyError
from lss.data.io.view import guess_view, through_plane_axis
from lss.data.volume import Volume

__all__ = ["NIFTI_SUFFIXES", "read_nifti", "read_nifti_geometry", "write_nifti", "is_nifti_path"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def is_nifti_path(path: str | Path) -> bool:
    """True for a name ending in .nii or .nii.gz (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, f"{path.name} does not exist.", str(path))
    if not path.is_file():
        raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{path.name} is not a file.", str(path))
    try:
        image = nib.load(path)
    except (EOFError, zlib.error) as error:
        raise StudyError(ErrorCode.TRUNCATED, f"{path.name} ends early ({type(error).__name__}).", str(path)) from None
    except (ImageFileError, OSError, ValueError) as error:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"{path.name} is not a readable NIfTI image ({type(error).__name__}).", str(path)
        ) from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} is a {type(image).__name__}, not a NIfTI image.", str(path)
        )
    return image


def _shape3(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} has shape {tuple(shape)}; a 3D volume is needed.", str(path)
        )
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def _checked_affine(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The image's affine, or ABSURD_SPACING when it is not finite or collapses a dimension (an all-zero sform)."""
    affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        raise StudyError(
            ErrorCode.ABSURD_SPACING, f"{path.name} has a degenerate affine (spacing {spacing.tolist()}).", str(path)
        )
    return affine


def read_nifti_geometry(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS+ affine of a NIfTI file from its header only.

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED, UNSUPPORTED_FORMAT (not 3D) or ABSURD_SPACING (degenerate
            affine).
    """
    path = Path(path)
    image = _load(path)
    return _shape3(path, image.shape), _checked_affine(path, image)


def read_nifti(path: str | Path) -> Volume:
    """Reads a 3D NIfTI volume (a 4D file with one volume is accepted).

    Args:
        path: a .nii or .nii.gz file.

    Returns:
        A ``Volume`` with the file's dtype (float32 when the header scales the data), its RAS+ affine and meta
        "format" ("nifti"), "view", "slice_axis" (the guessed through-plane axis).

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED (data ends early), UNSUPPORTED_FORMAT (not 3D),
            ABSURD_SPACING (degenerate affine), NON_FINITE (NaN or infinite voxels).
    """
    path = Path(path)
    image = _load(path)
    shape = _shape3(path, image.shape)
    try:
        array = np.asanyarray(image.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as error:
        raise StudyError(
            ErrorCode.TRUNCATED, f"the voxel data of {path.name} cannot be read ({type(error).__name__}).", str(path)
        ) from None
    array = np.asarray(array).reshape(shape)
    if array.dtype == np.float64 and image.dataobj.dtype != np.float64:  # type: ignore[attr-defined]
        array = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        count = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise StudyError(ErrorCode.NON_FINITE, f"{path.name} has {count} NaN or infinite voxel value(s).", str(path))
    affine = _checked_affine(path, image)
    slice_axis = through_plane_axis(shape, np.linalg.norm(affine[:3, :3], axis=0))
    meta = {"format": "nifti", "view": guess_view(affine, slice_axis=slice_axis), "slice_axis": slice_axis}
    return Volume(array=array, affine=affine, meta=meta)


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Writes a volume as NIfTI-1 with its affine as both sform and qform (code "scanner"), units mm.

    bool arrays are written as uint8, int64 as int32 when the values fit, float16 as float32.

    Args:
        volume: (I, J, K) image or label map.
        path: output file ending in .nii or .nii.gz.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: when ``path`` does not end in .nii or .nii.gz.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"write_nifti writes .nii or .nii.gz files, got {path.name!r}.")
    array = volume.array
    dtype = None
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            array = array.astype(np.int32)
        else:
            dtype = array.dtype
    image = nib.Nifti1Image(array, volume.affine, dtype=dtype)
    image.set_sform(volume.affine, code="scanner")
    image.set_qform(volume.affine, code="scanner")
    image.header.set_xyzt_units(xyz="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path
