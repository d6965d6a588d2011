"""Where the lumbar spine is in a sagittal field of view: the geometry of the model's first pass.

A real sagittal series may show anything from the lower thoracic spine to the coccyx, with the spine anywhere in
an abdomen-wide field of view, while the model reads a fixed crop (``preprocess.sagittal_shape``, 300 mm along the
spine at the working spacing). Without a mask, the crop is placed by the model itself: its sagittal branch segments
the middle slices of the whole field of view at the working spacing, window by window
(``lss.inference.locate.SpineLocator``), and ``spine_centre`` turns that mask into the crop's centre:

1. The spine column: the largest connected region of bodies, discs and canal (a stray blob elsewhere, or a bright
   skin fold read as canal, does not move the crop).
2. Where the levels can be counted from the sacrum (``lss.reporting.levels.name_levels``) on the largest connected
   region of bodies and discs (the anterior column, without posterior elements the model mistakes for them), the crop
   is centred between the L5/S1 and L1/L2 discs, so the graded levels, the sacrum below them and the L1 body above
   all stay in view. A field of view from T10 to the coccyx is ~380 mm: centring on the whole column, or anchoring
   at its caudal end, loses L1/L2 (measured on fastcleverseg_vb2: 70% of the L1-L5 bodies in the crop).
3. Else the column's centre, anchored at its caudal end when the column is longer than the crop (the levels are
   counted from the sacrum, so the sacrum must stay inside and the thoracic end is what may be cut).

The model was trained at the working spacing: an earlier first pass shrank the whole field of view into one input
instead, and on real 380 mm fields of view (2.4x smaller than training) it read the spine as one blob and found
"spine" in the padding. Without a locator (or when no spine is found) the crop is centred on the field of view, and
the case's ``info`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lss.anatomy import LEVELS, Structure

__all__ = ["anchor_caudal", "spine_column", "spine_centre", "Locator", "SPINE_STRUCTURES"]

# What the crop is centred on: the column of bodies and discs with the canal behind them.
SPINE_STRUCTURES: tuple[Structure, ...] = (Structure.VERTEBRAL_BODY, Structure.DISC, Structure.CANAL)

# image (X, Y, Z) float in [0, 1] at the working spacing -> voxel centre (3,) or None when no spine is found.
Locator = Callable[[np.ndarray], "np.ndarray | None"]


def anchor_caudal(centre_z: float, z_low: float, z_high: float, crop_z: int, margin_z: int = 8) -> float:
    """The crop's centre along Z for a spine spanning ``[z_low, z_high]`` pixels: ``centre_z`` where the span and
    ``margin_z`` on both sides fit in ``crop_z``, else the centre that keeps ``margin_z`` below the caudal end (levels
    are counted from the sacrum, so the sacrum must stay in the crop; the thoracic end is what may be cut)."""
    if z_high - z_low + 2 * margin_z > crop_z:
        return float(z_low - margin_z + crop_z / 2.0)
    return float(centre_z)


def spine_column(mask: np.ndarray, min_pixels: int = 20,
                 structures: Sequence[Structure] = SPINE_STRUCTURES) -> np.ndarray | None:
    """(Y, Z) bool: the largest connected region of ``structures`` in a mid-sagittal mask, or None when fewer than
    ``min_pixels`` of their pixels are found.

    Bodies, discs and canal touch along the column; small gaps are closed first so that the column is one region.
    """
    from scipy import ndimage

    spine = np.isin(mask, [s.index for s in structures])
    if spine.sum() < min_pixels:
        return None
    closed = ndimage.binary_closing(spine, structure=np.ones((3, 3)), iterations=2)
    labels, count = ndimage.label(closed)
    if count > 1:
        sizes = ndimage.sum(closed, labels, index=np.arange(1, count + 1))
        spine = spine & (labels == 1 + int(np.argmax(sizes)))
    return spine if spine.sum() >= min_pixels else None


def spine_centre(mask: np.ndarray, spacing_mm: Sequence[float], crop_z: int | None = None, margin_z: int = 8,
                 min_pixels: int = 20) -> np.ndarray | None:
    """The (y, z) pixel the sagittal crop should be centred on, or None when too little spine was found.

    Args:
        mask: (Y, Z) structure indices (``anatomy.Structure`` order) of the mid-sagittal slice of the whole field
            of view, at the working spacing; Y posterior -> anterior, Z inferior -> superior.
        spacing_mm: (2,) mm per pixel along Y and Z.
        crop_z: the crop's size along Z in pixels (None: always the column's centre).
        margin_z: pixels kept below the column's caudal end when anchoring there (the fallback of step 3).
        min_pixels: fewer spine pixels than this is "no spine found".
    """
    from lss.reporting.levels import name_levels

    column = spine_column(mask, min_pixels)
    if column is None:
        return None
    points = np.argwhere(column)
    centre = points.mean(axis=0)
    if crop_z is None:
        return centre
    # Counted on the bodies and discs alone: on real scans the canal also touches posterior-element pixels the
    # model reads as bodies or discs, which would join the count.
    bodies_and_discs = spine_column(mask, min_pixels, (Structure.VERTEBRAL_BODY, Structure.DISC))
    naming = name_levels(np.where(bodies_and_discs, mask, 0) if bodies_and_discs is not None else
                         np.zeros_like(mask), spacing_mm)
    lowest, highest = naming.discs[LEVELS[-1]], naming.discs[LEVELS[0]]
    if naming.sacrum_found and lowest is not None:
        z_low = float(np.argwhere(lowest)[:, 1].mean())
        if highest is not None:
            z_high = float(np.argwhere(highest)[:, 1].mean())
        else:  # L1/L2 not found (or not in view): where a typical spine puts it
            z_high = z_low + (len(LEVELS) - 1) * naming.spacing_mm / float(spacing_mm[1])
        lumbar = points[(points[:, 1] >= z_low) & (points[:, 1] <= z_high)]
        return np.array([lumbar[:, 0].mean() if lumbar.size else centre[0], (z_low + z_high) / 2.0])
    centre[1] = anchor_caudal(centre[1], points[:, 1].min(), points[:, 1].max(), crop_z, margin_z)
    return centre
