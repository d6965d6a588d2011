"""NIfTI-1/2 volumes (.nii, .nii.gz) through nibabel.

NIfTI's affine is already voxel -> RAS+ mm (sform when set, else qform), so it is taken as is; the array keeps the
file's voxel order and dtype (scaled data, scl_slope != 1, comes back as float32).

Reading budget (``lss.data.io.limits``): before nibabel parses the file, the raw header is checked so that its
``vox_offset`` stays within ``MAX_VOX_OFFSET`` and every header extension fits before it (nibabel reads each extension
whole, at the size the file states, and a .nii.gz can inflate a few KB into GBs there); then the declared shape and
stored type are checked against ``InputLimits`` before any voxel is read.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError, HeaderTypeError

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.limits import MIB, check_declared_image
from lss.data.io.view import guess_view, through_plane_axis
from lss.data.volume import Volume

__all__ = ["NIFTI_SUFFIXES", "MAX_VOX_OFFSET", "read_nifti", "read_nifti_geometry", "write_nifti", "is_nifti_path"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
# The most a header and its extensions may take before the voxel data (nibabel writes 352; real extensions are KBs).
MAX_VOX_OFFSET = 4 * MIB
_HEADER_DTYPES = {348: nib.nifti1.header_dtype, 540: nib.nifti2.header_dtype}


def is_nifti_path(path: str | Path) -> bool:
    """True for a name ending in .nii or .nii.gz (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _header_of(handle: BinaryIO) -> tuple[int, float, str] | None:
    """(header size, vox_offset, byte order) of a NIfTI-1/2 header read from ``handle``, which is left just after
    it; None when these bytes are no NIfTI header (nibabel then refuses the file itself)."""
    raw = handle.read(348)
    if len(raw) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0])
        if size in _HEADER_DTYPES:
            if size > len(raw):
                raw += handle.read(size - len(raw))
                if len(raw) < size:
                    return None
            fields = np.frombuffer(raw, dtype=_HEADER_DTYPES[size].newbyteorder(order))[0]
            return size, float(fields["vox_offset"]), order
    return None


def _check_header(path: Path) -> None:
    """Refuses a header whose extensions nibabel would read to an unbounded size, before nibabel reads them.

    nibabel reads the extensions between the header and ``vox_offset`` one by one, each at the size it declares
    (even past ``vox_offset``), and to the end of the file when ``vox_offset`` lies before them. Here each extension
    must fit between the header and ``vox_offset``, which may be at most ``MAX_VOX_OFFSET``.

    Raises:
        StudyError: IMAGE_TOO_LARGE for a ``vox_offset`` over ``MAX_VOX_OFFSET``; NOT_AN_IMAGE for extensions that
            do not fit before it.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = _header_of(handle)
            if header is None:
                return
            size, vox_offset, order = header
            if not np.isfinite(vox_offset) or vox_offset > MAX_VOX_OFFSET:
                raise StudyError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"the NIfTI header puts the voxel data {vox_offset:,.0f} bytes into the file (vox_offset), more "
                    f"than the {MAX_VOX_OFFSET // MIB} MB a header and its extensions may take.",
                    str(path),
                )
            flag = handle.read(4)
            if len(flag) < 4 or flag[:1] == b"\x00":
                return  # no extensions: nibabel reads nothing more before the data
            remaining = vox_offset - (size + 4)
            if remaining < 0:
                raise StudyError(ErrorCode.NOT_AN_IMAGE, "the NIfTI header announces extensions but its vox_offset "
                                 "leaves no room for them.", str(path))
            while remaining >= 16:  # nibabel's own loop condition
                head = handle.read(8)
                esize = int(np.frombuffer(head, dtype=f"{order}i4")[0]) if len(head) == 8 else 0
                if esize < 16 or esize > remaining:
                    raise StudyError(ErrorCode.NOT_AN_IMAGE, "a header extension of the NIfTI file does not fit "
                                     "between its header and its voxel data (vox_offset).", str(path))
                handle.seek(esize - 8, 1)
                remaining -= esize
    except (OSError, EOFError, zlib.error):
        return  # not gzip, unreadable, ends early: nibabel meets the same bytes and says which


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the NIfTI file does not exist.", str(path))
    if not path.is_file():
        raise StudyError(ErrorCode.NOT_AN_IMAGE, "the NIfTI path is not a file.", str(path))
    _check_header(path)
    try:
        image = nib.load(path)
    except (EOFError, zlib.error) as error:
        raise StudyError(ErrorCode.TRUNCATED, f"the NIfTI file ends early ({type(error).__name__}).",
                         str(path)) from None
    except (ImageFileError, HeaderDataError, HeaderTypeError, OSError, ValueError) as error:
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, f"the file is not a readable NIfTI image ({type(error).__name__}).", str(path)
        ) from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"the file is a {type(image).__name__}, not a NIfTI image.", str(path)
        )
    return image


def _check_budget(image: nib.Nifti1Image, shape: tuple[int, ...], limits: InputLimits | None) -> None:
    """The declared shape and stored type against the budget, before any voxel is read."""
    check_declared_image(shape, image.get_data_dtype().itemsize, limits, "the NIfTI image")


def _shape3(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"the NIfTI image has shape {tuple(shape)}; a 3D volume is needed.", str(path)
        )
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def _checked_affine(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The image's affine, or ABSURD_SPACING when it is not finite or collapses a dimension (an all-zero sform)."""
    affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        raise StudyError(
            ErrorCode.ABSURD_SPACING, f"the NIfTI image has a degenerate affine (spacing {spacing.tolist()}).",
            str(path),
        )
    return affine


def read_nifti_geometry(
    path: str | Path, *, limits: InputLimits | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS+ affine of a NIfTI file from its header only.

    Args:
        path: a .nii or .nii.gz file.
        limits: the reading budget the declared image must fit (``lss.data.io.limits``); None for the defaults.

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED, UNSUPPORTED_FORMAT (not 3D), ABSURD_SPACING (degenerate
            affine) or IMAGE_TOO_LARGE (over ``limits``, or a header over ``MAX_VOX_OFFSET``).
    """
    path = Path(path)
    image = _load(path)
    shape = _shape3(path, image.shape)
    _check_budget(image, shape, limits)
    return shape, _checked_affine(path, image)


def read_nifti(path: str | Path, *, limits: InputLimits | None = None) -> Volume:
    """Reads a 3D NIfTI volume (a 4D file with one volume is accepted).

    Args:
        path: a .nii or .nii.gz file.
        limits: the reading budget, checked from the header before any voxel is read (``lss.data.io.limits``);
            None for the defaults.

    Returns:
        A ``Volume`` with the file's dtype (float32 when the header scales the data), its RAS+ affine and meta
        "format" ("nifti"), "view", "slice_axis" (the guessed through-plane axis).

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED (data ends early), UNSUPPORTED_FORMAT (not 3D),
            ABSURD_SPACING (degenerate affine), NON_FINITE (NaN or infinite voxels), IMAGE_TOO_LARGE (over
            ``limits``, or a header over ``MAX_VOX_OFFSET``).
    """
    path = Path(path)
    image = _load(path)
    shape = _shape3(path, image.shape)
    _check_budget(image, shape, limits)
    try:
        array = np.asanyarray(image.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as error:
        raise StudyError(
            ErrorCode.TRUNCATED, f"the voxel data of the NIfTI file cannot be read ({type(error).__name__}).",
            str(path),
        ) from None
    array = np.asarray(array).reshape(shape)
    if array.dtype == np.float64 and image.dataobj.dtype != np.float64:  # type: ignore[attr-defined]
        array = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        count = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise StudyError(
            ErrorCode.NON_FINITE, f"the NIfTI image has {count} NaN or infinite voxel value(s).", str(path)
        )
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
