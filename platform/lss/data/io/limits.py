"""The reading budget: what one image or series may cost to read, checked from its headers before any voxel is
decoded (``lss.config.InputLimits``, ``preprocess.limits`` in the settings).

A small upload can declare a huge image: a NIfTI header of 1024^3 voxels over a few bytes of gzip, a MetaImage
whose compressed data inflates to GBs, a deflated DICOM file, coarse voxels over a wide field of view that resampling
to the model's grid turns into billions of voxels. The readers (``lss.data.io``) call these functions with what the
headers declare and refuse the image with ``ErrorCode.IMAGE_TOO_LARGE`` before allocating anything of that size;
preprocessing (``lss.preprocessing.transforms``) calls ``check_resampled`` before ``Spacingd`` runs.

Messages name the limit and its settings key, and the image only by kind or number ("the image", "series 2",
"file 3"): never a file or folder name, nor a DICOM text value.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError

__all__ = [
    "CONFIG_KEY",
    "MIB",
    "resolve_limits",
    "check_declared_size",
    "check_declared_image",
    "resampled_shape",
    "check_resampled",
    "check_inflated_size",
    "InflateBudget",
]

CONFIG_KEY = "preprocess.limits"  # where the limits live in the settings, as messages name them
MIB = 1 << 20  # the "mb" of max_decoded_mb
_INFLATE_CHUNK = 1 << 16  # bytes read, and at most bytes produced, per inflate step


def resolve_limits(limits: InputLimits | None) -> InputLimits:
    """``limits``, or the defaults when None: a reader called without limits is still bounded.

    Args:
        limits: the caller's limits, or None.

    Returns:
        ``limits`` itself, or ``InputLimits()``.
    """
    return InputLimits() if limits is None else limits


def _refuse(what: str, declares: str, key: str, limit: str) -> StudyError:
    return StudyError(ErrorCode.IMAGE_TOO_LARGE, f"{what} {declares}, more than {CONFIG_KEY}.{key} ({limit}).")


def check_declared_size(
    *, voxels: int, decoded_bytes: int, matrix: int, frames: int, limits: InputLimits | None, what: str
) -> None:
    """Refuses an image or series whose declared size is over one of the limits.

    Args:
        voxels: voxels as declared (for a DICOM series: Rows x Columns x frames summed over its files).
        decoded_bytes: bytes once decoded (voxels x samples x bytes per sample of the stored type).
        matrix: the largest in-plane side, in pixels.
        frames: the number of slices (frames).
        limits: the budget; None for the defaults.
        what: the subject of the message, e.g. "the image" or "stack 1 of the series" (no file name).

    Raises:
        StudyError: IMAGE_TOO_LARGE naming the first limit exceeded (voxels, decoded size, matrix, frames) and its
            settings key.
    """
    limits = resolve_limits(limits)
    if voxels > limits.max_voxels:
        raise _refuse(what, f"declares {voxels:,} voxels", "max_voxels", f"{limits.max_voxels:,}")
    if decoded_bytes > limits.max_decoded_mb * MIB:
        raise _refuse(what, f"decodes to {decoded_bytes / MIB:,.0f} MB", "max_decoded_mb",
                      f"{limits.max_decoded_mb:,} MB")
    if matrix > limits.max_matrix:
        raise _refuse(what, f"has an in-plane side of {matrix:,} pixels", "max_matrix", f"{limits.max_matrix:,}")
    if frames > limits.max_frames:
        raise _refuse(what, f"has {frames:,} slices", "max_frames", f"{limits.max_frames:,}")


def check_declared_image(
    shape: Sequence[int], bytes_per_voxel: int, limits: InputLimits | None, what: str = "the image"
) -> None:
    """Refuses an image whose header declares a shape over the budget (NIfTI, MetaImage/NRRD, PNG).

    The two largest dimensions are the in-plane matrix (``max_matrix``), the smallest of a 3D shape the slices
    (``max_frames``); any further dimension (time, a 4D file with one volume) counts into the voxels only.

    Args:
        shape: the dimensions the header declares.
        bytes_per_voxel: bytes of one voxel of the stored type, all components together.
        limits: the budget; None for the defaults.
        what: the subject of the message (no file name).

    Raises:
        StudyError: IMAGE_TOO_LARGE (see ``check_declared_size``).
    """
    dims = [max(int(n), 0) for n in shape]
    voxels = int(np.prod(dims, dtype=object)) if dims else 0  # object: no int64 overflow on absurd headers
    spatial = sorted(dims[:3], reverse=True)
    matrix = spatial[0] if spatial else 0
    frames = spatial[2] if len(spatial) == 3 else (1 if spatial else 0)
    check_declared_size(voxels=voxels, decoded_bytes=voxels * max(int(bytes_per_voxel), 1), matrix=matrix,
                        frames=frames, limits=limits, what=what)


def resampled_shape(
    shape: Sequence[int], affine: np.ndarray, target_mm: Sequence[float | None]
) -> tuple[int, int, int]:
    """The shape of a volume once reoriented to RAS and resampled to a target voxel size, as MONAI's
    ``Orientationd(axcodes="RAS")`` followed by ``Spacingd(pixdim=target_mm)`` computes it (without allocating).

    Args:
        shape: (3,) the volume's shape.
        affine: (4, 4) its voxel -> world affine (the voxel sizes are the lengths of its first three columns).
        target_mm: (3,) the voxel size per RAS axis (left-right, posterior-anterior, inferior-superior); None or a
            value <= 0 keeps that axis as it is (``Spacingd``'s ``pixdim=-1``).

    Returns:
        The resampled shape, in RAS axis order.
    """
    from nibabel.orientations import io_orientation

    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    try:
        axes = io_orientation(affine)[:, 0]
    except ValueError:  # a degenerate affine (the readers refuse these): keep the voxel order
        axes = np.arange(3, dtype=float)
    if not np.all(np.isfinite(axes)) or sorted(axes.astype(int).tolist()) != [0, 1, 2]:
        axes = np.arange(3, dtype=float)
    out = [0, 0, 0]
    for index, (n, step) in enumerate(zip(shape, spacing, strict=True)):
        axis = int(axes[index])
        target = target_mm[axis]
        if target is None or target <= 0:
            out[axis] = int(n)
        else:
            # Spacingd keeps the distance between the first and last voxel centres: (n - 1) * step / target + 1.
            out[axis] = int(np.round((int(n) - 1) * float(step) / float(target) + 1.0))
    return tuple(out)  # type: ignore[return-value]


def check_resampled(
    shape: Sequence[int],
    affine: np.ndarray,
    target_mm: Sequence[float | None],
    limits: InputLimits | None,
    what: str,
) -> tuple[int, int, int]:
    """Refuses a volume that resampling to the model's grid would blow up (coarse voxels over a wide field of view).

    Args:
        shape: (3,) the volume's shape, before resampling.
        affine: (4, 4) its affine.
        target_mm: (3,) the voxel size per RAS axis; None or <= 0 keeps that axis (see ``resampled_shape``).
        limits: the budget; None for the defaults.
        what: the subject of the message, e.g. "the sagittal series" (no file name).

    Returns:
        The resampled shape (``resampled_shape``), when it is within ``max_resampled_voxels``.

    Raises:
        StudyError: IMAGE_TOO_LARGE naming ``max_resampled_voxels``.
    """
    limits = resolve_limits(limits)
    out = resampled_shape(shape, affine, target_mm)
    voxels = int(np.prod(out, dtype=object))
    if voxels > limits.max_resampled_voxels:
        grid = " x ".join("kept" if t is None or t <= 0 else f"{float(t):g}" for t in target_mm)
        raise _refuse(what, f"resamples to {' x '.join(f'{n:,}' for n in out)} = {voxels:,} voxels on the model's "
                      f"grid ({grid} mm)", "max_resampled_voxels", f"{limits.max_resampled_voxels:,}")
    return out


class InflateBudget:
    """What the deflated files read in one folder listing may still inflate to, together
    (``max_listing_inflated_mb``); ``check_inflated_size`` draws on it.

    Args:
        limits: the budget; None for the defaults.
    """

    def __init__(self, limits: InputLimits | None) -> None:
        self.limits = resolve_limits(limits)
        self.remaining = self.limits.max_listing_inflated_mb * MIB

    def refusal(self) -> StudyError:
        return StudyError(ErrorCode.IMAGE_TOO_LARGE, "the deflated DICOM files of the folder inflate to more than "
                          f"{CONFIG_KEY}.max_listing_inflated_mb ({self.limits.max_listing_inflated_mb:,} MB) "
                          "together; they are not read.")


def check_inflated_size(stream: BinaryIO, limits: InputLimits | None, what: str, *, wbits: int = -zlib.MAX_WBITS,
                        budget: InflateBudget | None = None) -> int:
    """Inflates a deflate stream piece by piece, keeping nothing, and refuses it as soon as its output passes
    ``max_decoded_mb``: a few KB of deflate can declare GBs, which a one-go ``zlib.decompress`` would allocate.

    Reading starts at the stream's current position and stops at the end of the deflate data (anything after it
    is not read). At most ``_INFLATE_CHUNK`` bytes are held at a time.

    Args:
        stream: a binary file positioned at the start of the compressed data.
        limits: the budget; None for the defaults.
        what: the subject of the message, e.g. "file 3 (deflated DICOM)" (no file name).
        wbits: zlib's window bits: negative for raw deflate (DICOM's Deflated Explicit VR Little Endian), 15 for
            a zlib stream, 31 for gzip.
        budget: a budget shared with other files (one folder listing): the output counts against it too, and is
            taken from it.

    Returns:
        The inflated size in bytes.

    Raises:
        StudyError: IMAGE_TOO_LARGE when the output passes ``max_decoded_mb`` (or what is left of ``budget``);
            TRUNCATED when the data is not a complete deflate stream.
    """
    limits = resolve_limits(limits)
    limit = limits.max_decoded_mb * MIB
    if budget is not None:
        limit = min(limit, budget.remaining)
    inflater = zlib.decompressobj(wbits)
    total = 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail or stream.read(_INFLATE_CHUNK)
            # With no input left zlib may still hold output: b"" asks for it, a chunk at a time.
            produced = len(inflater.decompress(data, _INFLATE_CHUNK))
            total += produced
            if total > limit:
                if budget is not None and limit < limits.max_decoded_mb * MIB:
                    raise budget.refusal()
                raise StudyError(ErrorCode.IMAGE_TOO_LARGE, f"{what} inflates to more than {CONFIG_KEY}.max_decoded_mb "
                                 f"({limits.max_decoded_mb:,} MB); it is not read.")
            if not data and not produced:
                raise StudyError(ErrorCode.TRUNCATED, f"the compressed data of {what} ends early.")
    except zlib.error:
        raise StudyError(ErrorCode.TRUNCATED, f"the compressed data of {what} is damaged.") from None
    if budget is not None:
        budget.remaining -= total
    return total
