"""MetaImage (.mha/.mhd) and NRRD volumes through SimpleITK, the format of the SPIDER dataset.

ITK stores geometry in LPS+: ``itk_affine[:3, :3] = Direction @ diag(Spacing)``, ``itk_affine[:3, 3] = Origin``, in
ITK index order (x, y, z). The ``Volume`` keeps that index order (``array[i, j, k]`` = ITK index (i, j, k), i.e. the
transpose of ``sitk.GetArrayFromImage``) and flips the world frame to RAS+: ``affine = LPS_TO_RAS @ itk_affine``.

Reading budget (``lss.data.io.limits``): the size, pixel type and components come from
``ImageFileReader.ReadImageInformation`` (the header only) and are checked against ``InputLimits`` before
``Execute`` decodes (and, for compressed data, inflates) the voxels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lss.config import InputLimits
from lss.data.errors import ErrorCode, StudyError
from lss.data.io.limits import check_declared_image
from lss.data.io.view import guess_view, through_plane_axis
from lss.data.volume import LPS_TO_RAS, Volume

if TYPE_CHECKING:
    import SimpleITK as sitk


def _sitk():
    """SimpleITK, imported on first use: only MetaImage/NRRD need it, and its wheel is large."""
    import SimpleITK

    return SimpleITK

__all__ = ["ITK_SUFFIXES", "read_itk", "read_itk_geometry", "write_mha"]

ITK_SUFFIXES: tuple[str, ...] = (".mha", ".mhd", ".nrrd", ".nhdr")


def _itk_affine(direction: tuple[float, ...], spacing: tuple[float, ...], origin: tuple[float, ...]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return LPS_TO_RAS @ affine


def _check_path(path: Path) -> None:
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the MetaImage/NRRD file does not exist.", str(path))
    if not path.is_file():
        raise StudyError(ErrorCode.NOT_AN_IMAGE, "the MetaImage/NRRD path is not a file.", str(path))


_HEADER_BYTES = 1 << 16  # a MetaImage / NRRD header is a few hundred bytes of text
_METAIMAGE_DATA_KEY = "elementdatafile"
_NRRD_DATA_KEYS = ("data file", "datafile")


def _external_data_file(path: Path) -> str | None:
    """The data file a MetaImage / NRRD header points to, or None when the voxels follow the header in this file.

    MetaImage: ``ElementDataFile = LOCAL`` (inline) or a file name / ``LIST`` / a printf pattern. NRRD: a
    ``data file:`` (or ``datafile:``) field; none means inline.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        for line in head.split(b"\n\n", 1)[0].decode("latin-1").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in _NRRD_DATA_KEYS:
                return value.lstrip("=").strip()
        return None
    for line in head.decode("latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == _METAIMAGE_DATA_KEY:
            value = value.strip()
            return None if value.upper() == "LOCAL" else value
    return None


def _check_external_data(path: Path) -> None:
    """Refuses a header whose voxel data lives outside its own folder.

    A header can name any file as its voxel data (``ElementDataFile = /etc/passwd``, ``data file: ../../x``): read
    as it says, an upload would make the server load one of its own files as the image. Data files are allowed only
    as a plain file in the header's own folder (resolved, so no link or ``..`` leads out), never as a list or a
    file-name pattern.

    Raises:
        StudyError: UNSUPPORTED_FORMAT (naming neither the header nor the data file).
    """
    target = _external_data_file(path)
    if target is None:
        return
    folder = path.parent.resolve()
    reason = None
    if not target or target.upper() == "LIST" or "%" in target or " " in target.strip():
        reason = "a list or pattern of data files"
    else:
        candidate = Path(target)
        resolved = (folder / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
        if candidate.is_absolute() or resolved.parent != folder or (folder / candidate).is_symlink():
            reason = "a data file outside its own folder"
        elif not resolved.is_file():
            raise StudyError(ErrorCode.TRUNCATED, "the data file the MetaImage/NRRD header names is missing.",
                             str(path))
    if reason is not None:
        raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, f"the MetaImage/NRRD header points to {reason}; only voxel "
                         "data in the header's file or a file beside it is read.", str(path))


def _declared_dimensions(path: Path) -> list[str]:
    """The values of every dimension field of a MetaImage (``NDims``) or NRRD (``dimension``) header, as text."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        lines, separator, key = head.split(b"\n\n", 1)[0].decode("latin-1").splitlines(), ":", "dimension"
    else:
        lines, separator, key = head.decode("latin-1").splitlines(), "=", "ndims"
    values = []
    for line in lines:
        name, sep, value = line.partition(separator)
        if sep and name.strip().lower() == key:
            values.append(value.lstrip("=").strip())
    return values


def _check_declared_dimension(path: Path) -> None:
    """Refuses a header that declares anything but 3 dimensions before SimpleITK parses it: ITK's MetaImage reader
    corrupts its heap (and the process dies) on an ``NDims`` beyond its fixed arrays."""
    for value in _declared_dimensions(path):
        if value != "3":
            shown = value if value.isdigit() and len(value) <= 3 else "another number of"
            raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, f"the MetaImage/NRRD header declares {shown} dimensions; "
                             "a 3D volume is needed.", str(path))


def _reader(path: Path) -> sitk.ImageFileReader:
    """A reader whose header has been read (and whose data file, if separate, is beside it): NOT_AN_IMAGE when
    SimpleITK cannot parse it."""
    _check_external_data(path)
    _check_declared_dimension(path)
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        # SimpleITK's message carries no reason worth showing (and the full path).
        raise StudyError(
            ErrorCode.NOT_AN_IMAGE, "SimpleITK cannot read the header of the MetaImage/NRRD file.", str(path)
        ) from None
    return reader


def _bytes_per_voxel(pixel_id: int, components: int) -> int:
    """Bytes of one voxel of a SimpleITK pixel type (all components), from a one-voxel image of that type."""
    components = max(int(components), 1)
    try:
        sitk_ = _sitk()
        probe = sitk_.Image([1, 1, 1], pixel_id, components) if components > 1 else sitk_.Image([1, 1, 1], pixel_id)
        return int(probe.GetSizeOfPixelComponent()) * components
    except (RuntimeError, TypeError, ValueError):  # an unknown pixel type: assume the widest scalar
        return 16 * components


def _checked_affine(path: Path, reader: sitk.ImageFileReader) -> np.ndarray:
    """The RAS+ affine of the header, or ABSURD_SPACING when it is not finite or collapses a dimension."""
    affine = _itk_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin())
    with np.errstate(all="ignore"):
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        det = np.linalg.det(affine[:3, :3]) if np.all(np.isfinite(affine)) else np.nan
    if not np.all(np.isfinite(affine)) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or not (
        np.isfinite(det) and abs(det) >= 1e-9
    ):
        raise StudyError(
            ErrorCode.ABSURD_SPACING, f"the MetaImage/NRRD image has degenerate spacing {spacing.tolist()}.", str(path)
        )
    return affine


def _check_budget(reader: sitk.ImageFileReader, limits: InputLimits | None) -> None:
    """The size and pixel type the header declares against the budget, before ``Execute`` reads any voxel."""
    bytes_per_voxel = _bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())
    check_declared_image(tuple(reader.GetSize()), bytes_per_voxel, limits, "the MetaImage/NRRD image")


def _check_dimension(path: Path, dimension: int, components: int) -> None:
    if dimension != 3:
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"the MetaImage/NRRD image is {dimension}D; a 3D volume is needed.",
            str(path),
        )
    if components != 1:
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"the MetaImage/NRRD image has {components} components per voxel; only scalar images are supported.",
            str(path),
        )


def read_itk_geometry(
    path: str | Path, *, limits: InputLimits | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS+ affine of an ITK image from its header only (no voxel data is read).

    Args:
        path: a .mha, .mhd, .nrrd or .nhdr file.
        limits: the reading budget the declared image must fit (``lss.data.io.limits``); None for the defaults.

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, UNSUPPORTED_FORMAT (not 3D scalar), ABSURD_SPACING (degenerate
            geometry) or IMAGE_TOO_LARGE (over ``limits``).
    """
    path = Path(path)
    _check_path(path)
    reader = _reader(path)
    _check_dimension(path, reader.GetDimension(), reader.GetNumberOfComponents())
    _check_budget(reader, limits)
    shape = tuple(int(n) for n in reader.GetSize())
    return shape, _checked_affine(path, reader)  # type: ignore[return-value]


def read_itk(path: str | Path, *, limits: InputLimits | None = None) -> Volume:
    """Reads a 3D scalar MetaImage / NRRD file.

    Args:
        path: a .mha, .mhd, .nrrd or .nhdr file.
        limits: the reading budget, checked from the header before any voxel is read or inflated
            (``lss.data.io.limits``); None for the defaults.

    Returns:
        A ``Volume`` with the file's dtype (label maps stay integer), array (I, J, K) in ITK index order, RAS+
        affine, and meta "format" ("mha" or "nrrd"), "view", "slice_axis" (the guessed through-plane axis).

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE (header not readable), TRUNCATED (header
            reads, voxel data does not), UNSUPPORTED_FORMAT (not 3D
            scalar), ABSURD_SPACING (degenerate geometry), NON_FINITE (NaN or infinite voxels), IMAGE_TOO_LARGE
            (over ``limits``).
    """
    path = Path(path)
    _check_path(path)
    reader = _reader(path)
    _check_dimension(path, reader.GetDimension(), reader.GetNumberOfComponents())
    _check_budget(reader, limits)
    affine = _checked_affine(path, reader)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise StudyError(
            ErrorCode.TRUNCATED,
            "the MetaImage/NRRD header reads but its voxel data does not (file ends early?).",
            str(path),
        ) from None
    array = np.ascontiguousarray(_sitk().GetArrayFromImage(image).transpose(2, 1, 0))
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        count = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise StudyError(
            ErrorCode.NON_FINITE, f"the MetaImage/NRRD image has {count} NaN or infinite voxel value(s).", str(path)
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    slice_axis = through_plane_axis(array.shape, spacing)
    meta = {
        "format": "nrrd" if path.suffix.lower() in (".nrrd", ".nhdr") else "mha",
        "view": guess_view(affine, slice_axis=slice_axis),
        "slice_axis": slice_axis,
    }
    return Volume(array=array, affine=affine, meta=meta)


def write_mha(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Writes a volume as MetaImage (.mha/.mhd) or NRRD (.nrrd), converting the RAS+ affine to ITK's LPS+ geometry.

    Args:
        volume: (I, J, K) image or label map; its i, j, k axes must be orthogonal (ITK stores no shear).
        path: output file; the suffix chooses the format (.mha, .mhd, .nrrd).
        compress: compress the voxel data.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: for an unsupported suffix or sheared axes.
    """
    path = Path(path)
    if path.suffix.lower() not in (".mha", ".mhd", ".nrrd"):
        raise ValueError(f"write_mha writes .mha, .mhd or .nrrd files, got {path.name!r}.")
    affine_lps = LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(3), atol=1e-5):
        raise ValueError(
            f"the volume's axes are not orthogonal (cosines {np.round(gram[np.triu_indices(3, 1)], 6).tolist()}); "
            "ITK cannot store shear."
        )
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = _sitk().GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)), isVector=False)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in direction.reshape(-1)])
    image.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    path.parent.mkdir(parents=True, exist_ok=True)
    _sitk().WriteImage(image, str(path), useCompression=compress)
    return path
