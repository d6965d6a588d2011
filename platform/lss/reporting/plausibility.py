"""The plausibility gate: may a level be graded at all?

A grade is only as good as the masks and the image under it. Before any level is graded, what the segmentation
says is checked against adult lumbar anatomy (``shared/reference/clinical_grading.md``: bodies about 25-30 mm high,
discs 8-12 mm, lower when degenerated; canal AP 15-20 mm at mid-lumbar levels):

- per study: the image's statistics lie in the range of the training images (``lss.model.input_range``); the
  levels could be counted from the sacrum (``lss.reporting.levels``); at least two discs; a typical
  disc spacing an adult spine can have; a spinal canal on the slice at all;
- per level: its disc is in the field of view and was found; bodies and discs alternate (a vertebral body between
  it and the disc below); its spacing to the neighbouring discs, its disc height and length and the heights of its
  bodies lie in adult ranges; a canal runs behind the disc, continuous with the canal above and below, with an AP
  diameter a canal can have; an axial area / AP a dural sac can have.

A sac measured below those ranges' lower bounds is either a gap in a mask or the tightest compression there is (an
obliterated sac, Schizas grade D). Where both views agree on severe narrowing (the sagittal canal behind the disc
narrower than Verbiest's 10 mm or interrupted, the axial sac smaller than the severe area) and the canal continues
above and below, it is read as compression: the level stays assessable and the findings flag it for review
(``Assessment.extreme_narrowing``). One view alone below a lower bound stays not assessable: a gap in one mask is
likelier than a block the other view does not show. (Any value below a lower bound used to make the level not
assessable, which hid exactly the complete blocks.)

Every failed check is one reason in words. A level with any reason is not assessable: the findings never state a
grade for it (``lss.reporting.findings``), and the report, API, SR and viewer say "not assessable" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from lss.anatomy import CUTOFFS, LEVELS, Structure
from lss.reporting.levels import FOUND, NOT_IN_FIELD_OF_VIEW, name_levels
from lss.reporting.measurements import LevelMeasurements

__all__ = ["PlausibilityRanges", "Assessment", "assess_study", "RANGES"]


@dataclass(frozen=True)
class PlausibilityRanges:
    """Adult ranges (inclusive) that what was measured must fall in; generous, so only the impossible fails.

    Attributes:
        disc_spacing_mm: disc centre to disc centre (body ~25-30 mm + disc ~8-12 mm, wide for tall patients and
            collapsed discs).
        disc_height_mm: mean disc height on the mid-sagittal slice (a collapsed disc is still > 1.5 mm).
        disc_length_mm: antero-posterior length of a disc on the mid-sagittal slice.
        disc_max_tilt_deg: a disc's long axis runs antero-posteriorly; L5/S1 tilts ~30-45 degrees with the sacrum.
        body_height_mm: superior-inferior extent of a vertebral body fully inside the field of view.
        sagittal_ap_mm: canal AP diameter behind a disc.
        area_mm2: dural sac area on an axial slice.
        axial_ap_mm: dural sac AP diameter on an axial slice.
    """

    disc_spacing_mm: tuple[float, float] = (22.0, 60.0)
    disc_height_mm: tuple[float, float] = (1.5, 20.0)
    disc_length_mm: tuple[float, float] = (15.0, 70.0)
    disc_max_tilt_deg: float = 60.0
    body_height_mm: tuple[float, float] = (12.0, 50.0)
    sagittal_ap_mm: tuple[float, float] = (2.0, 30.0)
    area_mm2: tuple[float, float] = (10.0, 600.0)
    axial_ap_mm: tuple[float, float] = (2.0, 35.0)


RANGES = PlausibilityRanges()


@dataclass
class Assessment:
    """What the gate found.

    Attributes:
        study_reasons: problems with the whole study (every level is then not assessable).
        level_reasons: level -> its own problems (study reasons not repeated).
        naming: the level naming's summary (``LevelNaming.summary()``).
        canal_interrupted: levels where the canal runs above and below the disc but not behind it (no AP measured).
        extreme_narrowing: levels whose sac measures below a lower bound of the ranges while both views agree on
            severe narrowing and the canal continues above and below (read as compression; flagged for review).
    """

    study_reasons: list[str] = field(default_factory=list)
    level_reasons: dict[str, list[str]] = field(default_factory=dict)
    naming: dict[str, Any] = field(default_factory=dict)
    canal_interrupted: set[str] = field(default_factory=set)
    extreme_narrowing: set[str] = field(default_factory=set)

    def reasons(self, level: str) -> list[str]:
        """Every reason that level is not assessable (empty when it is)."""
        return [*self.study_reasons, *self.level_reasons.get(level, [])]

    def assessable(self, level: str) -> bool:
        return not self.reasons(level)


def _outside(value: float | None, bounds: tuple[float, float]) -> bool:
    return value is not None and not bounds[0] <= value <= bounds[1]


def _low_or_high(value: float, bounds: tuple[float, float], low: list[str], high: list[str]) -> list[str]:
    """Where a reason about ``value`` outside ``bounds`` goes: ``low`` when under the lower bound, else ``high``."""
    return low if value < bounds[0] else high


def _range(bounds: tuple[float, float], unit: str) -> str:
    return f"{bounds[0]:g}-{bounds[1]:g} {unit}"


def _canal_passes(canal: np.ndarray, disc: dict[str, Any] | None, spacing: np.ndarray) -> bool:
    """True when the canal has pixels both within ~one disc spacing below and above the disc (it runs past it)."""
    if disc is None:
        return False
    z = np.flatnonzero(canal.any(axis=0))
    lo, hi = disc["z_range_px"]
    reach = int(np.ceil(25.0 / spacing[1]))
    return bool(np.any((z < lo) & (z >= lo - reach)) and np.any((z > hi) & (z <= hi + reach)))


def assess_study(prediction, measurements: list[LevelMeasurements],
                 ranges: PlausibilityRanges = RANGES) -> Assessment:
    """Runs the gate on one ``lss.inference.StudyPrediction`` and its measurements (``LEVELS`` order)."""
    naming = prediction.naming or name_levels(prediction.sagittal_mask, prediction.sagittal_spacing).summary()
    out = Assessment(naming=naming, level_reasons={level: [] for level in LEVELS})
    status = naming.get("status", {})
    chain = naming.get("chain", [])
    spacing = np.asarray(prediction.sagittal_spacing, dtype=np.float64)

    outside = list(getattr(prediction, "input_outside", None) or [])
    if outside:
        out.study_reasons.append("the image is unlike the images the model was trained on (" + "; ".join(outside)
                                 + ")")
    if naming.get("method") != "counted_from_sacrum":
        out.study_reasons.extend(naming.get("reasons") or ["the levels could not be named"])
        return out
    discs = [item for item in chain if item["kind"] == "disc"]
    if len(discs) < 2:
        out.study_reasons.append(f"only {len(discs)} disc was found: too little spine to count the levels reliably")
        return out
    typical = float(naming.get("spacing_mm", 0.0))
    if _outside(typical, ranges.disc_spacing_mm):
        out.study_reasons.append(f"the typical disc spacing ({typical:.0f} mm) is outside the adult range "
                                 f"({_range(ranges.disc_spacing_mm, 'mm')}): not a lumbar spine as expected")
    canal_labels, canal_count = ndimage.label(prediction.sagittal_mask == Structure.CANAL.index,
                                              structure=np.ones((3, 3)))
    if canal_count == 0:
        out.study_reasons.append("no spinal canal was segmented on the mid-sagittal slice")
        return out
    # The canal is one tube; a stenotic level can cut its mask in two, so every long piece counts as the canal, and
    # only a short island (shorter than a disc spacing) does not.
    extents = [(found[1].stop - found[1].start) * spacing[1] for found in ndimage.find_objects(canal_labels)]
    long_pieces = [index for index, extent in enumerate(extents, start=1) if extent >= 0.75 * typical]
    canal = np.isin(canal_labels, long_pieces)

    by_level = {item.get("level"): i for i, item in enumerate(chain)}
    for level, measured in zip(LEVELS, measurements, strict=True):
        reasons = out.level_reasons[level]
        below_range: list[str] = []  # measurements under a lower bound: compression or a gap in a mask
        state = status.get(level)
        if state != FOUND:
            reasons.append("the level's disc is not in the field of view" if state == NOT_IN_FIELD_OF_VIEW
                           else "the level's disc was not found on the mid-sagittal slice")
            continue
        index = by_level.get(level)
        disc = chain[index] if index is not None else None
        if disc is not None:
            below = chain[index - 1] if index > 0 else None
            if below is None or below["kind"] != "body":
                reasons.append("no vertebral body was found between this disc and the one below: discs and bodies "
                               "are not in anatomical order")
            neighbours = [item for item in (below, chain[index + 1] if index + 1 < len(chain) else None)
                          if item is not None and item["kind"] == "body" and not item["cut_by_fov"]
                          and item.get("level") != "sacrum"]
            for body in neighbours:
                height = (body["z_range_px"][1] - body["z_range_px"][0] + 1) * spacing[1]
                if _outside(height, ranges.body_height_mm):
                    reasons.append(f"an adjacent vertebral body is {height:.0f} mm high, outside the adult range "
                                   f"({_range(ranges.body_height_mm, 'mm')})")
            if disc.get("angle_deg", 0.0) > ranges.disc_max_tilt_deg:
                reasons.append(f"the disc's long axis is tilted {disc['angle_deg']:.0f} degrees from the "
                               f"antero-posterior axis (at most {ranges.disc_max_tilt_deg:g}): not the shape of a disc")
            if _outside(disc["length_mm"], ranges.disc_length_mm):
                reasons.append(f"the disc is {disc['length_mm']:.0f} mm long antero-posteriorly, outside "
                               f"{_range(ranges.disc_length_mm, 'mm')}")
            next_disc = next((item for item in chain[index + 1:] if item["kind"] == "disc"), None)
            previous_disc = next((item for item in reversed(chain[:index]) if item["kind"] == "disc"), None)
            for other in (previous_disc, next_disc):
                if other is None:
                    continue
                gap = abs(other["centre_px"][1] - disc["centre_px"][1]) * spacing[1]
                skipped = max(1, int(round(gap / typical))) if typical > 0 else 1
                if _outside(gap / skipped, ranges.disc_spacing_mm):
                    reasons.append(f"the spacing to the neighbouring disc ({gap:.0f} mm) is outside the adult range "
                                   f"({_range(ranges.disc_spacing_mm, 'mm')})")
        if _outside(measured.disc_height_mm, ranges.disc_height_mm):
            reasons.append(f"the disc height ({measured.disc_height_mm:.1f} mm) is outside "
                           f"{_range(ranges.disc_height_mm, 'mm')}")
        if measured.sagittal_ap_mm is None or measured.sagittal_ap_line_px is None:
            if not _canal_passes(canal, disc, spacing):
                reasons.append("no spinal canal was found behind the disc")
            else:
                # The canal runs above and below but not behind this disc: what a compressed canal looks like on a
                # mask. Not a reason to stay silent; the findings flag it for review.
                out.canal_interrupted.add(level)
        else:
            middle = np.round(np.mean(measured.sagittal_ap_line_px, axis=0)).astype(int)
            middle = np.clip(middle, 0, np.array(canal_labels.shape) - 1)
            if not canal[middle[0], middle[1]]:
                reasons.append("the canal behind the disc is not continuous with the canal above and below")
            if _outside(measured.sagittal_ap_mm, ranges.sagittal_ap_mm):
                _low_or_high(measured.sagittal_ap_mm, ranges.sagittal_ap_mm, below_range, reasons).append(
                    f"the sagittal canal AP diameter ({measured.sagittal_ap_mm:.1f} mm) is not one a canal can have "
                    f"({_range(ranges.sagittal_ap_mm, 'mm')})")
        if _outside(measured.area_mm2, ranges.area_mm2):
            _low_or_high(measured.area_mm2, ranges.area_mm2, below_range, reasons).append(
                f"the axial dural sac area ({measured.area_mm2:.0f} mm2) is not one a dural sac can have "
                f"({_range(ranges.area_mm2, 'mm2')})")
        if _outside(measured.ap_mm, ranges.axial_ap_mm):
            _low_or_high(measured.ap_mm, ranges.axial_ap_mm, below_range, reasons).append(
                f"the axial dural sac AP diameter ({measured.ap_mm:.1f} mm) is outside "
                f"{_range(ranges.axial_ap_mm, 'mm')}")
        if below_range:
            sagittal_narrow = level in out.canal_interrupted or (
                measured.sagittal_ap_mm is not None and measured.sagittal_ap_mm < CUTOFFS.absolute_ap_mm)
            axial_narrow = measured.area_mm2 is not None and measured.area_mm2 < CUTOFFS.severe_area_mm2
            if sagittal_narrow and axial_narrow and not reasons:
                out.extreme_narrowing.add(level)
            else:
                reasons.extend(below_range)
        # Spacing reasons can repeat (one per neighbour): keep each once, in order.
        out.level_reasons[level] = list(dict.fromkeys(reasons))
    return out
