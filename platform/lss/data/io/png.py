"""2D PNG slices (8- or 16-bit greyscale) through Pillow, read as one-slice volumes.

A PNG holds pixels only: no spacing, no orientation. ``read_png`` returns the array ``(rows, cols)`` as shape
``(1, rows, cols)`` with an assumed geometry, a mid-sagittal slice as radiology displays it (anterior to the left
of the picture, superior up: axis codes "RIP"), 1 mm pixels and a 1 mm thick slice, centred on the world origin.
The real geometry comes from the dataset card: ``SeriesRecord.spacing_mm`` / ``axcodes``, applied by
``lss.data.io.read_series`` (``lss.data.io.geometry.with_geometry``). Never measure on the assumed geometry.

Modes: "L" (8-bit), "I;16*" and "I" (16/32-bit integers), "1" (binary), "P" (a palette image: its palette
indices, the usual way label masks are stored), and RGB(A) / LA pictures whose colour channels are equal (grey
saved as colour); any other colour image is ``unsupported_format``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lss.data.errors import ErrorCode, StudyError
from lss.data.io.geometry import axcodes_affine
from lss.data.volume import Volume

__all__ = ["PNG_SUFFIXES", "DEFAULT_PNG_AXCODES", "is_png_path", "read_png", "read_png_geometry"]

PNG_SUFFIXES: tuple[str, ...] = (".png",)
DEFAULT_PNG_AXCODES = "RIP"  # a sagittal slice as displayed: columns run posterior, rows inferior
_DEFAULT_SPACING_MM = (1.0, 1.0, 1.0)


def is_png_path(path: str | Path) -> bool:
    """True for a name ending in .png (case-insensitive)."""
    return Path(path).suffix.lower() in PNG_SUFFIXES


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, f"{path.name} does not exist.", str(path))
    if not path.is_file():
        raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{path.name} is not a file.", str(path))
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise StudyError(ErrorCode.NOT_AN_IMAGE, f"{path.name} is not a readable PNG image.", str(path)) from None
    except OSError as error:
        raise StudyError(
            ErrorCode.TRUNCATED, f"{path.name} cannot be read ({type(error).__name__}).", str(path)
        ) from None
    if image.format != "PNG":
        image.close()
        raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} is a {image.format} file, not a PNG.", str(path))
    return image


def _pixels(image, path: Path) -> np.ndarray:
    """(rows, cols) integer pixels of a greyscale (or grey-as-colour) PNG."""
    mode = image.mode
    try:
        array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise StudyError(
            ErrorCode.TRUNCATED, f"the pixel data of {path.name} cannot be decoded ({type(error).__name__}).", str(path)
        ) from None
    if mode in ("L", "P", "I") or mode.startswith("I;16"):
        return np.array(array)
    if mode == "1":
        return np.asarray(array, dtype=np.uint8)
    if mode in ("LA", "RGB", "RGBA"):
        colour = array[..., :1] if mode == "LA" else array[..., :3]
        if np.all(colour == colour[..., :1]):
            return np.array(colour[..., 0])
        raise StudyError(
            ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} is a colour picture ({mode}); a greyscale PNG is needed.",
            str(path),
        )
    raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} has PNG mode {mode!r}; a greyscale PNG is needed.",
                     str(path))


def read_png_geometry(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape ``(1, rows, cols)`` and the assumed affine of a PNG (see the module docstring), from its header only.

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED or UNSUPPORTED_FORMAT.
    """
    path = Path(path)
    with _open(path) as image:
        cols, rows = image.size
    shape = (1, int(rows), int(cols))
    return shape, axcodes_affine(DEFAULT_PNG_AXCODES, _DEFAULT_SPACING_MM, shape)


def read_png(
    path: str | Path, spacing_mm: Sequence[float] | None = None, axcodes: str | None = None
) -> Volume:
    """Reads a greyscale PNG as a one-slice volume.

    Args:
        path: a .png file.
        spacing_mm: (3,) voxel size per array axis of the ``(1, rows, cols)`` volume (slice thickness first);
            default 1 mm (an assumption: PNG stores none).
        axcodes: orientation of the ``(1, rows, cols)`` axes; default "RIP" (a sagittal slice, anterior left).

    Returns:
        A ``Volume`` of shape ``(1, rows, cols)`` with the file's integer dtype; meta "format" ("png"), "view",
        "slice_axis" (0), "geometry" ("assumed" without overrides, else "given").

    Raises:
        StudyError: NOT_FOUND, NOT_AN_IMAGE, TRUNCATED (pixel data ends early), UNSUPPORTED_FORMAT (not a PNG, or
            a colour picture).
        ValueError: for invalid ``axcodes`` or a non-positive ``spacing_mm``.
    """
    from lss.data.io.view import guess_view

    path = Path(path)
    with _open(path) as image:
        pixels = _pixels(image, path)
    if pixels.ndim != 2:
        raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, f"{path.name} has pixel shape {pixels.shape}; 2D is needed.",
                         str(path))
    array = pixels[None]
    given = spacing_mm is not None or axcodes is not None
    affine = axcodes_affine(axcodes or DEFAULT_PNG_AXCODES, spacing_mm or _DEFAULT_SPACING_MM, array.shape)
    meta = {
        "format": "png",
        "view": guess_view(affine, slice_axis=0),
        "slice_axis": 0,
        "geometry": "given" if given else "assumed",
    }
    return Volume(array=array, affine=affine, meta=meta)
