"""Measurements in physical units from segmentation masks: what a radiologist would measure, and where.

Per level:

- **axial** (the level's centre axial slice, H left -> right, W posterior -> anterior): the dural sac
  cross-sectional area (mm2, the largest connected canal region) and its antero-posterior diameter (mm, the longest
  run of canal pixels along W);
- **sagittal** (the mid-sagittal slice, Y posterior -> anterior, Z inferior -> superior): the level's disc (named by
  counting from the sacrum, ``lss.reporting.levels``), its height (mm: area / length along its long axis, which
  holds for a tilted disc) and the canal's AP diameter measured from the disc's centre backwards along the disc
  plane.

Every value comes with the slice it was measured on, so that it can be shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from lss.anatomy import LEVELS, Structure

__all__ = [
    "region_area_mm2",
    "largest_component",
    "ap_diameter_mm",
    "dural_sac_mm",
    "principal_axes",
    "disc_height_mm",
    "ray_run_mm",
    "disc_centre_ras",
    "level_discs_of",
    "LevelMeasurements",
    "measure_study",
]

def _mask(mask: ArrayLike, what: str = "mask") -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2D (H, W), got shape {array.shape}.")
    return array.astype(bool)


def _spacing(spacing_mm: ArrayLike) -> np.ndarray:
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be two positive numbers (mm per pixel along each axis), got {spacing_mm!r}.")
    return spacing


def largest_component(mask: ArrayLike) -> np.ndarray:
    """The largest 8-connected region of a 2D mask (an empty mask stays empty)."""
    mask = _mask(mask)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def region_area_mm2(mask: ArrayLike, spacing_mm: ArrayLike) -> float:
    """Area of a 2D mask in mm2.

    Args:
        mask: (H, W) bool or 0/1.
        spacing_mm: (2,) mm per pixel along H and W.
    """
    spacing = _spacing(spacing_mm)
    return float(_mask(mask).sum() * spacing[0] * spacing[1])


def ap_diameter_mm(mask: ArrayLike, spacing_mm: ArrayLike, axis: int = 1) -> float:
    """The midline antero-posterior diameter of a region in mm (0 for an empty mask).

    The AP diameter of the grading cut-offs (Verbiest) is measured in the midline, not where the region is longest:
    a compressed dural sac is a crescent or a trefoil, longer at its lateral recesses than in the middle. The
    midline is the line along ``axis`` through the middle of the region's extent across it; its mask pixels are
    counted (a midline falling between two pixel lines takes the mean of both).

    Args:
        mask: (H, W) region, e.g. the dural sac on an axial slice.
        spacing_mm: (2,) mm per pixel along H and W.
        axis: the antero-posterior axis (1 for the axial crops, W).
    """
    mask, spacing = _mask(mask), _spacing(spacing_mm)
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis}.")
    lines = mask if axis == 1 else mask.T
    occupied = np.flatnonzero(lines.any(axis=1))
    if occupied.size == 0:
        return 0.0
    middle = (occupied[0] + occupied[-1]) / 2
    counts = [int(lines[i].sum()) for i in sorted({int(np.floor(middle)), int(np.ceil(middle))})]
    return float(np.mean(counts) * spacing[axis])


def dural_sac_mm(canal: ArrayLike, spacing_mm: ArrayLike) -> tuple[float, float] | None:
    """The dural sac of one axial slice as every report, evaluation and the measured grade measure it: the area
    (mm2) and midline AP diameter (mm) of the largest connected region of ``canal``; None when there is none.

    Args:
        canal: (H, W) bool canal mask (predicted or labelled), W posterior -> anterior.
        spacing_mm: (2,) mm per pixel along H and W.
    """
    sac = largest_component(canal)
    if not sac.any():
        return None
    return region_area_mm2(sac, spacing_mm), ap_diameter_mm(sac, spacing_mm, axis=1)


def principal_axes(mask: ArrayLike, spacing_mm: ArrayLike) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre, long-axis direction and length of a region, in physical units.

    Args:
        mask: (H, W) a non-empty region.
        spacing_mm: (2,) mm per pixel.

    Returns:
        centre (2,) in pixels, the unit long-axis direction (2,) in mm space, and the region's length along it (mm,
        pixel extent included).

    Raises:
        ValueError: for an empty mask.
    """
    mask, spacing = _mask(mask), _spacing(spacing_mm)
    points = np.argwhere(mask).astype(np.float64)
    if points.size == 0:
        raise ValueError("principal_axes needs a non-empty mask.")
    centre = points.mean(axis=0)
    mm = (points - centre) * spacing
    if len(mm) < 2:
        return centre, np.array([0.0, 1.0]), float(spacing.min())
    values, vectors = np.linalg.eigh(np.cov(mm.T))
    direction = vectors[:, int(np.argmax(values))]
    projection = mm @ direction
    # One pixel's extent along the direction closes the gap between the first and the last pixel centres.
    pixel = float(np.abs(direction) @ spacing)
    return centre, direction, float(projection.max() - projection.min() + pixel)


def disc_height_mm(mask: ArrayLike, spacing_mm: ArrayLike) -> float:
    """Mean height of a disc on a sagittal slice: its area over its length along the long axis (mm).

    A rectangle of h x w mm gives h at any tilt; a wedge gives its mean height.
    """
    _, _, length = principal_axes(mask, spacing_mm)
    return region_area_mm2(mask, spacing_mm) / length


def ray_run_mm(mask: ArrayLike, start: ArrayLike, direction_mm: ArrayLike, spacing_mm: ArrayLike,
               max_mm: float = 40.0, step_mm: float = 0.1) -> tuple[float, np.ndarray | None]:
    """Walks from ``start`` along a direction and measures the first run of mask pixels met (mm).

    Args:
        mask: (H, W) region.
        start: (2,) start point in pixels.
        direction_mm: (2,) direction in mm space (normalised here).
        spacing_mm: (2,) mm per pixel.
        max_mm: how far to look.
        step_mm: sampling step.

    Returns:
        The run's length in mm (0 when the ray meets no mask) and its (2, 2) end points in pixels, or None.
    """
    mask, spacing = _mask(mask), _spacing(spacing_mm)
    direction = np.asarray(direction_mm, dtype=np.float64)
    norm = np.linalg.norm(direction)
    if norm == 0:
        raise ValueError("direction_mm must not be zero.")
    direction = direction / norm
    distances = np.arange(0.0, max_mm, step_mm)
    points = np.asarray(start, dtype=np.float64)[None] + distances[:, None] * direction[None] / spacing[None]
    inside = ndimage.map_coordinates(mask.astype(np.float32), points.T, order=0, mode="constant", cval=0.0) > 0.5
    if not inside.any():
        return 0.0, None
    first = int(np.argmax(inside))
    after = np.flatnonzero(~inside[first:])
    last = first + (int(after[0]) if after.size else int(inside[first:].size)) - 1
    return float((last - first + 1) * step_mm), np.stack([points[first], points[last]])


@dataclass
class LevelMeasurements:
    """What was measured at one level, and where.

    Attributes:
        level: e.g. "L4/L5".
        area_mm2: dural sac area on the axial slice (None without axial data or without a canal there).
        ap_mm: dural sac AP diameter on the axial slice.
        axial_slice: the axial image used (``{"series": id, "slice": index}`` in the source series), or None.
        sagittal_ap_mm: canal AP diameter on the mid-sagittal slice at the level's disc.
        disc_height_mm: the level's disc height on the mid-sagittal slice.
        sagittal_slice: index of the mid-sagittal slice in the preprocessed crop.
        disc_centre_px: (Y, Z) centre of the level's disc on that slice (None when the disc was not found).
        disc_centre_ras: the same point in RAS mm (None when not found).
        sagittal_ap_line_px: ((Y, Z), (Y, Z)) the canal AP line drawn on the evidence image, or None.
    """

    level: str
    area_mm2: float | None = None
    ap_mm: float | None = None
    axial_slice: dict[str, Any] | None = None
    sagittal_ap_mm: float | None = None
    disc_height_mm: float | None = None
    sagittal_slice: int | None = None
    disc_centre_px: tuple[float, float] | None = None
    disc_centre_ras: tuple[float, float, float] | None = None
    sagittal_ap_line_px: tuple[tuple[float, float], tuple[float, float]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def disc_centre_ras(centre_px: Sequence[float], sagittal_slice: int,
                    sagittal_affine: np.ndarray) -> tuple[float, float, float]:
    """A disc's centre on the mid-sagittal slice, (Y, Z) pixels, as an RAS point in mm (rounded to 0.01 mm)."""
    voxel = np.array([sagittal_slice, float(centre_px[0]), float(centre_px[1]), 1.0])
    return tuple(round(float(v), 2) for v in (np.asarray(sagittal_affine) @ voxel)[:3])


def level_discs_of(prediction) -> dict[str, np.ndarray | None]:
    """Each level's disc on the mid-sagittal slice: the prediction's anatomical naming (counted from the sacrum,
    ``lss.reporting.levels``), or, for a prediction made without one, that naming done here on its mask."""
    from lss.reporting.levels import name_levels

    discs = getattr(prediction, "level_discs", None)
    if discs is not None:
        return {level: (discs[li] if discs[li].any() else None) for li, level in enumerate(LEVELS)}
    return name_levels(prediction.sagittal_mask, prediction.sagittal_spacing).discs


def measure_study(prediction) -> list[LevelMeasurements]:
    """Measures every level of one ``lss.inference.StudyPrediction`` (``LEVELS`` order)."""
    canal = Structure.CANAL.index
    discs = level_discs_of(prediction)
    sagittal_canal = prediction.sagittal_mask == canal
    axial_info = (prediction.info or {}).get("axial", {})
    out = []
    for li, level in enumerate(LEVELS):
        m = LevelMeasurements(level=level, sagittal_slice=int(prediction.sagittal_slice))
        if prediction.axial_present[li]:
            sac = dural_sac_mm(prediction.axial_masks[li] == canal, prediction.axial_spacing[li])
            if sac is not None:
                m.area_mm2, m.ap_mm = _round(sac[0]), _round(sac[1])
            source = axial_info.get(level, {})
            m.axial_slice = {"series": source.get("series"), "slice": source.get("centre_slice")}
        disc = discs[level]
        if disc is not None:
            centre, direction, _ = principal_axes(disc, prediction.sagittal_spacing)
            m.disc_height_mm = _round(disc_height_mm(disc, prediction.sagittal_spacing))
            m.disc_centre_px = (round(float(centre[0]), 1), round(float(centre[1]), 1))
            m.disc_centre_ras = disc_centre_ras(centre, prediction.sagittal_slice, prediction.sagittal_affine)
            # The disc plane runs antero-posteriorly: walk backwards (towards lower Y) out of the disc, past the
            # posterior longitudinal ligament, into the canal; the first canal run met is the AP diameter.
            backwards = direction if direction[0] < 0 else -direction
            length, line = ray_run_mm(sagittal_canal, centre, backwards, prediction.sagittal_spacing)
            if line is not None:
                m.sagittal_ap_mm = _round(length)
                m.sagittal_ap_line_px = tuple(tuple(round(float(v), 1) for v in p) for p in line)
        out.append(m)
    return out
