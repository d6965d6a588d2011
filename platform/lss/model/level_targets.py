"""Where each level's disc is on a mid-sagittal label slice: the attention target of the level prompts.

A phantom (and SPIDER) labels every disc with its level (``lss.anatomy.disc_label_for_level``): the target is that
label. A dataset that labels only the vertebral bodies with their identity (``fastcleverseg_vb2``: T11-L5) still
says where a disc is: between its two bodies. ``disc_between_bodies`` derives it, so that the counted level positions
supervise the attention on such scans too:

- both bodies are expressed in a frame along the line joining their centroids (``s``, inferior -> superior) and
  across it (``t``, posterior <-> anterior), both in mm;
- for each strip of ``t`` where both bodies have pixels (their shared antero-posterior extent), the disc is what lies
  between the lower body's superior-most pixel and the upper body's inferior-most pixel of that strip (the gap
  follows both endplates, wedge-shaped discs included);
- the disc stays inside the convex hull of the two bodies (nothing beside a body that is shifted forwards);
- strips that only graze a body's corner (less than half its usual height) and gaps far wider than the usual one
  are left out; pixels of either body are never disc;
- when no gap is left (touching bodies, no shared extent), a disc of ``radius_mm`` at the midpoint between the
  facing endplates on the centroid line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from lss.anatomy import LEVELS, disc_label_for_level, parse_level, vertebra_label

__all__ = ["disc_between_bodies", "level_disc_targets"]


def _check_mask(name: str, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a (Y, Z) mask, got shape {mask.shape}.")
    return mask.astype(bool)


def disc_between_bodies(
    upper: np.ndarray,
    lower: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0),
    radius_mm: float = 4.0,
    max_gap_mm: float = 25.0,
) -> np.ndarray:
    """The disc between two adjacent vertebral bodies on one sagittal slice.

    Args:
        upper: (Y, Z) bool, the cranial body (Z runs inferior -> superior, Y posterior -> anterior).
        lower: (Y, Z) bool, the caudal body, same shape.
        spacing_mm: (2,) pixel spacing of Y and Z in mm.
        radius_mm: radius of the fallback disc when the bodies leave no gap between them.
        max_gap_mm: a strip whose gap is wider than this is not disc (a body partly cut by the slice).

    Returns:
        (Y, Z) bool, the disc; all False when either body is empty or the upper body is not above the lower one.

    Raises:
        ValueError: for masks of different or non-2D shapes, or a non-positive spacing or radius.
    """
    upper, lower = _check_mask("upper", upper), _check_mask("lower", lower)
    if upper.shape != lower.shape:
        raise ValueError(f"upper and lower must have one shape, got {upper.shape} and {lower.shape}.")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (2,) or not np.all(spacing > 0):
        raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm!r}.")
    if radius_mm <= 0 or max_gap_mm <= 0:
        raise ValueError(f"radius_mm and max_gap_mm must be positive, got {radius_mm!r} and {max_gap_mm!r}.")
    disc = np.zeros(upper.shape, dtype=bool)
    if not upper.any() or not lower.any():
        return disc
    yy, zz = np.meshgrid(np.arange(upper.shape[0]), np.arange(upper.shape[1]), indexing="ij")
    points = np.stack([yy * spacing[0], zz * spacing[1]], axis=-1)  # (Y, Z, 2) mm
    c_upper, c_lower = points[upper].mean(axis=0), points[lower].mean(axis=0)
    axis = c_upper - c_lower
    length = float(np.linalg.norm(axis))
    if length == 0 or axis[1] <= 0:  # the "upper" body must lie superior to the lower one
        return disc
    axis /= length
    normal = np.array([axis[1], -axis[0]])  # across the spine, roughly posterior -> anterior
    s = (points - c_lower) @ axis  # (Y, Z) mm along the centroid line
    # Strips across the line, one pixel wide, aligned on a pixel of the lower body (so that on a straight spine
    # each strip is one column of pixels).
    lower_points = points[lower]
    anchor = lower_points[np.argmin(np.linalg.norm(lower_points - c_lower, axis=-1))]
    t = (points - anchor) @ normal
    step = float(spacing.min())
    strip = np.rint(t / step).astype(np.int64)
    offset = int(strip.min())
    strip -= offset
    n_strips = int(strip.max()) + 1
    top_lower, bottom_lower = _extent(strip[lower], s[lower], n_strips)
    top_upper, bottom_upper = _extent(strip[upper], s[upper], n_strips)
    shared = np.isfinite(top_lower) & np.isfinite(bottom_upper)
    if shared.any():
        # Strips that only graze a body's corner run alongside it: keep those that cross both bodies fully enough.
        # Such a strip ends far from the body's endplate (the endplate's own tilt stays within the tolerance).
        height_lower, height_upper = top_lower - bottom_lower, top_upper - bottom_upper
        tolerance = max(2.0 * step, 0.25 * min(np.median(height_lower[shared]), np.median(height_upper[shared])))
        shared &= top_lower >= np.median(top_lower[shared]) - tolerance
        shared &= bottom_upper <= np.median(bottom_upper[shared]) + tolerance
    gap = bottom_upper - top_lower
    valid = shared & (gap > 0) & (gap <= max_gap_mm)
    if valid.any():
        valid &= gap <= 2.0 * np.median(gap[valid]) + 2.0 * step
    body = upper | lower
    disc = valid[strip] & (s > top_lower[strip]) & (s < bottom_upper[strip]) & ~body
    if disc.any():
        disc[disc] = _inside_hull(points[body], points[disc])
    if disc.any():
        return disc
    # No gap between the bodies (touching labels): a disc of radius_mm at the midpoint between their facing
    # endplates on the centroid line, bodies included (the labels, not the anatomy, leave no room for it).
    on_line = np.abs((points - c_lower) @ normal) <= step
    lower_top = float(s[lower & on_line].max()) if (lower & on_line).any() else float(s[lower].max())
    upper_bottom = float(s[upper & on_line].min()) if (upper & on_line).any() else float(s[upper].min())
    centre = c_lower + axis * 0.5 * (lower_top + upper_bottom)
    return np.linalg.norm(points - centre, axis=-1) <= radius_mm


def _inside_hull(hull_points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Which of the (N, 2) queries lie inside (or on) the convex hull of the (M, 2) hull points (all, if degenerate)."""
    try:
        equations = ConvexHull(hull_points).equations  # (F, 3): normal . p + offset <= 0 inside
    except QhullError:
        return np.ones(len(queries), dtype=bool)
    return np.all(queries @ equations[:, :2].T + equations[:, 2] <= 1e-6, axis=1)


def _extent(strips: np.ndarray, values: np.ndarray, n_strips: int) -> tuple[np.ndarray, np.ndarray]:
    """Per strip, the largest and the smallest value (-inf / inf where the strip holds none)."""
    top, bottom = np.full(n_strips, -np.inf), np.full(n_strips, np.inf)
    np.maximum.at(top, strips, values)
    np.minimum.at(bottom, strips, values)
    return top, bottom


def level_disc_targets(
    labels: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0),
    levels: Sequence[str] = LEVELS,
    derive_from_bodies: bool = True,
    radius_mm: float = 4.0,
) -> np.ndarray:
    """Each level's disc on one native label slice (``lss.anatomy`` label values).

    A level's disc label (201..225) is its target where present; otherwise, with ``derive_from_bodies``, the disc
    between its two labelled vertebral bodies (``disc_between_bodies``, labels 1..25 as vertebral bodies: set it
    False where those labels cover whole vertebrae). A level with neither stays all False (unknown to the loss).

    Args:
        labels: (Y, Z) int native label slice.
        spacing_mm: (2,) pixel spacing in mm.
        levels: the levels, in output order.
        derive_from_bodies: derive discs that are not labelled from the bodies around them.
        radius_mm: fallback disc radius (``disc_between_bodies``).

    Returns:
        (L, Y, Z) bool.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be one (Y, Z) slice, got shape {labels.shape}.")
    out = np.zeros((len(levels), *labels.shape), dtype=bool)
    for i, level in enumerate(levels):
        disc = labels == disc_label_for_level(level)
        if disc.any() or not derive_from_bodies:
            out[i] = disc
            continue
        upper_name, lower_name = parse_level(level).split("/")
        upper, lower = labels == vertebra_label(upper_name), labels == vertebra_label(lower_name)
        if upper.any() and lower.any():
            out[i] = disc_between_bodies(upper, lower, spacing_mm, radius_mm=radius_mm)
    return out
