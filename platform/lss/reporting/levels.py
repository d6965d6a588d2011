"""Level naming by anatomy: find the sacrum and count the discs upwards from it.

A disc's name cannot come from where it sits in the picture: fields of view start anywhere from the lower thoracic
spine to L2, so "the third disc from the top" is a different disc on every scanner. Like SPINEPS and the RSNA 2024
winners, the levels are counted from the sacrum, the one landmark every lumbar field of view holds:

1. The disc and vertebral-body regions of the mid-sagittal segmentation are found (8-connected, with minimum sizes;
   a disc-labelled island much smaller than the study's typical disc is noise or a rudimentary sacral disc).
2. The discs are ordered from caudal to cranial along Z. A gap far larger than the study's typical disc spacing
   means a disc was missed there (its level is "not found", and the count skips it); discs much closer than that
   are one disc cut in two, or noise (the smaller one is dropped).
3. The sacrum: a bony mass among the lowest bodies clearly larger than the study's lumbar bodies (its fused
   segments, with any rudimentary sacral disc inside it left uncounted), else the body directly below the lowest
   disc. The lowest disc is L5/S1 when a vertebral body lies directly below it (the sacrum); the discs above it are
   L4/L5, L3/L4, ... Without a body below the lowest disc nothing is counted: every level is "not found" and the
   study says why. A body that the image's lower edge cuts is the sacrum only when more of it shows than a lumbar
   body is high: a cut L5 above an unseen sacrum looks the same as the top of the sacrum.
4. A level above the highest disc found is "not in the field of view" when the acquired image ends within one disc
   spacing above that disc, else "not found" (the image goes on but no disc was segmented there).

The result also lists the counted chain (discs and bodies with their sizes), which the plausibility gate
(``lss.reporting.plausibility``) checks against adult anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from lss.anatomy import LEVELS, Structure

__all__ = ["LevelNaming", "name_levels", "FOUND", "NOT_IN_FIELD_OF_VIEW", "NOT_FOUND", "MIN_DISC_AREA_MM2",
           "MIN_BODY_AREA_MM2"]

FOUND = "found"
NOT_IN_FIELD_OF_VIEW = "not_in_field_of_view"
NOT_FOUND = "not_found"

MIN_DISC_AREA_MM2 = 15.0  # smaller disc-labelled islands are segmentation noise, not discs
MIN_BODY_AREA_MM2 = 60.0  # a vertebral body cut by the field of view still shows more than this
TYPICAL_SPACING_MM = 38.0  # disc centre to disc centre in an adult lumbar spine (body ~28 mm + disc ~10 mm)
SACRUM_MIN_VISIBLE_MM = 36.0  # a body below the lowest disc cut by the image's edge is the sacrum only if longer
SACRUM_SIZE_RATIO = 1.35  # a body this much larger (area or length) than the lumbar bodies is the sacral mass
SMALL_DISC_FRACTION = 0.35  # a disc region below this share of the study's median disc area is not a level's disc
MISSED_DISC_GAP = 1.6  # a gap above this many typical spacings holds a disc that was not segmented
SPLIT_GAP_MM = 4.0  # disc pieces closer than this along Z are one disc


@dataclass
class LevelNaming:
    """Which disc on the mid-sagittal slice is which level.

    Attributes:
        discs: level -> (Y, Z) bool region of its disc, or None where the level was not found.
        status: level -> ``FOUND``, ``NOT_IN_FIELD_OF_VIEW`` or ``NOT_FOUND``.
        sacrum_found: True when a vertebral body (the sacrum) lies directly below the lowest disc.
        method: "counted_from_sacrum", or "none" when nothing could be counted.
        reasons: why levels could not be named (empty when every level was found).
        chain: the counted discs and bodies, caudal to cranial: dicts with "kind" ("disc" / "body"), "level" (for
            a disc), "centre_px" (Y, Z), "z_range_px", "height_mm", "length_mm", "area_mm2" and "cut_by_fov".
        spacing_mm: the study's typical disc spacing (median centre-to-centre distance, or the adult prior).
    """

    discs: dict[str, np.ndarray | None]
    status: dict[str, str]
    sacrum_found: bool
    method: str
    reasons: list[str] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)
    spacing_mm: float = TYPICAL_SPACING_MM

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (no masks)."""
        return {"method": self.method, "sacrum_found": self.sacrum_found, "status": dict(self.status),
                "reasons": list(self.reasons), "spacing_mm": round(float(self.spacing_mm), 1),
                "chain": [dict(item) for item in self.chain]}


@dataclass
class _Region:
    mask: np.ndarray
    centre: np.ndarray  # (Y, Z) px
    z_lo: int
    z_hi: int
    area_mm2: float
    height_mm: float  # area / length along the long axis
    length_mm: float
    cut_by_fov: bool
    angle_deg: float  # between the long axis and the antero-posterior axis (a disc lies near 0, tilted up to ~45)

    def describe(self, kind: str, level: str | None = None) -> dict[str, Any]:
        out = {"kind": kind, "centre_px": [round(float(v), 1) for v in self.centre],
               "z_range_px": [int(self.z_lo), int(self.z_hi)], "height_mm": round(self.height_mm, 1),
               "length_mm": round(self.length_mm, 1), "area_mm2": round(self.area_mm2, 1),
               "cut_by_fov": bool(self.cut_by_fov), "angle_deg": round(self.angle_deg, 1)}
        if level is not None:
            out["level"] = level
        return out


def _regions(mask: np.ndarray, spacing: np.ndarray, min_area_mm2: float, fov_z: tuple[int, int]) -> list[_Region]:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    out = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        region = labels == index
        points = np.argwhere(region).astype(np.float64)
        area = float(len(points) * spacing[0] * spacing[1])
        if area < min_area_mm2:
            continue
        centre = points.mean(axis=0)
        mm = (points - centre) * spacing
        if len(points) > 2:
            values, vectors = np.linalg.eigh(np.cov(mm.T))
            direction = vectors[:, int(np.argmax(values))]
        else:
            direction = np.array([1.0, 0.0])
        projection = mm @ direction
        length = float(projection.max() - projection.min() + np.abs(direction) @ spacing)
        z_lo, z_hi = int(points[:, 1].min()), int(points[:, 1].max())
        cut = z_lo <= fov_z[0] or z_hi >= fov_z[1]
        angle = float(np.degrees(np.arccos(min(abs(direction[0]), 1.0))))
        out.append(_Region(region, centre, z_lo, z_hi, area, area / max(length, 1e-6), length, cut, angle))
    return out


def _clean_discs(discs: list[_Region], spacing_z: float) -> tuple[list[_Region], float]:
    """Drops noise and joins split pieces; returns the discs (caudal to cranial) and the typical spacing (mm).

    Two disc pieces are one disc when they overlap along Z or less than ``SPLIT_GAP_MM`` of something else lies
    between them (a disc cut in two by a mis-labelled strip); discs separated by more are kept apart, however close,
    so that an implausibly short spacing is measured and reported rather than hidden by merging. The typical spacing
    is the median centre-to-centre distance; with a single disc, the adult prior.
    """
    if not discs:
        return [], TYPICAL_SPACING_MM
    median_area = float(np.median([d.area_mm2 for d in discs]))
    discs = [d for d in discs if d.area_mm2 >= SMALL_DISC_FRACTION * median_area]
    discs.sort(key=lambda d: d.centre[1])
    kept: list[_Region] = []
    for disc in discs:
        if kept and (disc.z_lo - kept[-1].z_hi) * spacing_z < SPLIT_GAP_MM:
            previous = kept[-1]
            joined = previous.mask | disc.mask
            weight = previous.area_mm2 + disc.area_mm2
            centre = (previous.centre * previous.area_mm2 + disc.centre * disc.area_mm2) / weight
            kept[-1] = _Region(joined, centre, min(previous.z_lo, disc.z_lo), max(previous.z_hi, disc.z_hi), weight,
                               max(previous.height_mm, disc.height_mm), max(previous.length_mm, disc.length_mm),
                               previous.cut_by_fov or disc.cut_by_fov, max(previous.angle_deg, disc.angle_deg))
            continue
        kept.append(disc)
    gaps = np.diff([d.centre[1] * spacing_z for d in kept])
    spacing = float(np.median(gaps)) if gaps.size else TYPICAL_SPACING_MM
    return kept, spacing


def _adjacent(lower: _Region, upper: _Region, spacing_z: float, spacing_typical: float) -> bool:
    return (upper.z_lo - lower.z_hi) * spacing_z < 0.5 * spacing_typical and lower.centre[1] < upper.centre[1]


def _sacral_mass(discs: list[_Region], bodies: list[_Region], spacing_typical: float,
                 spacing_z: float) -> _Region | None:
    """The sacrum, when it shows as a bony mass larger than the study's lumbar bodies, among the three lowest bodies.

    The sacrum's fused segments come out of a segmentation as one long body region, often with the thin rudimentary
    S1/S2 disc labelled as disc below its top: counting from the lowest disc would then call S1/S2 "L5/S1". A lumbar
    body lies between two discs and has the study's typical size; a body among the lowest three whose area or length
    exceeds that by ``SACRUM_SIZE_RATIO`` (with a disc directly above it) is taken for the sacrum. None when the
    study has fewer than two lumbar-like bodies to compare with, or no such mass.
    """
    between = [b for b in bodies
               if any(_adjacent(d, b, spacing_z, spacing_typical) for d in discs)
               and any(_adjacent(b, d, spacing_z, spacing_typical) for d in discs)]
    if len(between) < 2:
        return None
    area = float(np.median([b.area_mm2 for b in between]))
    length = float(np.median([b.length_mm for b in between]))
    for body in sorted(bodies[:3], key=lambda b: -b.centre[1]):  # the highest candidate first
        oversized = body.area_mm2 >= SACRUM_SIZE_RATIO * area or body.length_mm >= SACRUM_SIZE_RATIO * length
        # A lumbar-sized body between two discs below the candidate means the candidate is not the sacrum (two
        # lumbar bodies merged over a missed disc are oversized too).
        lumbar_below = [b for b in between if b.centre[1] < body.centre[1]
                        and b.area_mm2 < SACRUM_SIZE_RATIO * area and b.length_mm < SACRUM_SIZE_RATIO * length]
        if oversized and not lumbar_below and any(_adjacent(body, d, spacing_z, spacing_typical) for d in discs):
            return body
    return None


def name_levels(
    sagittal_mask: ArrayLike,
    spacing_mm: ArrayLike,
    fov_z: tuple[int, int] | None = None,
    levels: tuple[str, ...] = LEVELS,
) -> LevelNaming:
    """Names the discs of a mid-sagittal segmentation by counting upwards from the sacrum.

    Args:
        sagittal_mask: (Y, Z) structure indices (``anatomy.Structure`` order); Y posterior -> anterior, Z inferior ->
            superior.
        spacing_mm: (2,) mm per pixel along Y and Z.
        fov_z: (first, last) Z pixel of the crop that lies inside the acquired image (the rest is padding); default
            the whole crop.
        levels: the graded levels, cranial to caudal (``anatomy.LEVELS``); the last must be "L5/S1".

    Returns:
        The naming; see ``LevelNaming``.

    Raises:
        ValueError: for a mask that is not 2D or a bad spacing.
    """
    mask = np.asarray(sagittal_mask)
    if mask.ndim != 2:
        raise ValueError(f"sagittal_mask must be 2D (Y, Z), got shape {mask.shape}.")
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm!r}.")
    if levels[-1] != "L5/S1":
        raise ValueError(f"levels must end with L5/S1 (counted from the sacrum), got {levels}.")
    fov = (0, mask.shape[1] - 1) if fov_z is None else (max(int(fov_z[0]), 0), min(int(fov_z[1]), mask.shape[1] - 1))

    discs, spacing_typical = _clean_discs(
        _regions(mask == Structure.DISC.index, spacing, MIN_DISC_AREA_MM2, fov), float(spacing[1]))
    bodies = sorted(_regions(mask == Structure.VERTEBRAL_BODY.index, spacing, MIN_BODY_AREA_MM2, fov),
                    key=lambda b: b.centre[1])
    found: dict[str, np.ndarray | None] = {level: None for level in levels}
    status = {level: NOT_FOUND for level in levels}
    naming = LevelNaming(found, status, sacrum_found=False, method="none", spacing_mm=spacing_typical)
    if not discs:
        naming.reasons.append("no intervertebral disc was found on the mid-sagittal slice")
        return naming

    sacral = _sacral_mass(discs, bodies, spacing_typical, float(spacing[1]))
    if sacral is not None:
        # The rudimentary S1/S2, S2/S3 "discs" inside the sacrum are not levels; L5/S1 is the disc above it.
        remnants = [d for d in discs if d.centre[1] < sacral.centre[1]]
        for remnant in remnants:
            naming.chain.append(remnant.describe("disc", "sacral remnant (not a level)"))
        discs = [d for d in discs if d.centre[1] >= sacral.centre[1]]
        if not discs:
            naming.reasons.append("no intervertebral disc was found above the sacrum")
            return naming
    lowest = discs[0]
    below = [b for b in bodies if b.centre[1] < lowest.centre[1]
             and (lowest.z_lo - b.z_hi) * spacing[1] < 0.5 * spacing_typical]
    if not below:
        naming.reasons.append("no vertebral body (the sacrum) was found below the lowest disc, so the levels cannot be "
                              "counted from the sacrum")
        return naming
    sacrum = max(below, key=lambda b: b.centre[1])
    visible_mm = (sacrum.z_hi - sacrum.z_lo + 1) * spacing[1]
    if sacrum.z_lo <= fov[0] and visible_mm < SACRUM_MIN_VISIBLE_MM:
        # A body cut by the lower edge of the image, no taller than a lumbar body: L5 cut off above the sacrum looks
        # the same as the top of the sacrum, so nothing can be counted from it.
        naming.reasons.append(
            f"the image ends {visible_mm:.0f} mm below the lowest disc, inside a vertebra: the sacrum is not in the "
            "field of view, so the levels cannot be counted from it")
        return naming
    naming.sacrum_found = True
    naming.method = "counted_from_sacrum"
    naming.chain.append(sacrum.describe("body", "sacrum"))

    # Count upwards: index 0 is L5/S1; a gap of k typical spacings skips k - 1 discs that were not segmented.
    caudal_first = list(reversed(levels))  # L5/S1, L4/L5, ..., L1/L2
    count = 0
    previous = None
    for disc in discs:
        if previous is not None:
            gap = (disc.centre[1] - previous.centre[1]) * spacing[1]
            count += max(1, int(round(gap / spacing_typical))) if gap > MISSED_DISC_GAP * spacing_typical else 1
        previous = disc
        name = caudal_first[count] if count < len(caudal_first) else None
        naming.chain.append(disc.describe("disc", name or "above L1/L2"))
        upper_body = [b for b in bodies if disc.centre[1] < b.centre[1]
                      and (b.z_lo - disc.z_hi) * spacing[1] < 0.5 * spacing_typical]
        if upper_body:
            naming.chain.append(min(upper_body, key=lambda b: b.centre[1]).describe("body"))
        if name is not None:
            found[name] = disc.mask
            status[name] = FOUND
    top = discs[-1]
    room_above_mm = (fov[1] - top.z_hi) * spacing[1]
    for level in caudal_first[count + 1:]:
        status[level] = NOT_IN_FIELD_OF_VIEW if room_above_mm < spacing_typical else NOT_FOUND
        room_above_mm -= spacing_typical
    missing = [lv for lv in levels if status[lv] == NOT_FOUND]
    if missing:
        naming.reasons.append(f"no disc was segmented at {', '.join(missing)}")
    outside = [lv for lv in levels if status[lv] == NOT_IN_FIELD_OF_VIEW]
    if outside:
        naming.reasons.append(f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in the field of view")
    return naming
