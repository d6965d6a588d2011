"""A hand-built ``StudyPrediction`` of known geometry: a straight spine of adult proportions (discs 10 mm high every
37.5 mm, 27.5 mm vertebral bodies between them, the sacrum below L5/S1), a canal band behind them, posterior elements
behind the canal, and one round dural sac per axial slice, so that every measurement has a known true value."""

from __future__ import annotations

import numpy as np

from lss.anatomy import LEVELS, Structure
from lss.inference.predict import StudyPrediction

SAGITTAL_SHAPE = (128, 192)  # (Y posterior -> anterior, Z inferior -> superior)
SAGITTAL_SPACING = (0.5, 1.25)
DISC_Z = (170, 140, 110, 80, 50)  # L1/L2 (cranial) .. L5/S1 (caudal), pixel rows along Z (37.5 mm apart)
DISC_HEIGHT_PX = 8  # 10 mm at 1.25 mm
BODY_PX = 22  # 27.5 mm
DISC_Y = (70, 110)  # discs span Y 70..109 (20 mm deep)
CANAL_Y = (40, 64)  # canal band Y 40..63: 24 px = 12 mm AP
POSTERIOR_Y = (16, 36)  # posterior elements behind the canal, level with each vertebral body
AXIAL_SHAPE = (112, 112)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius_mm: float,
         spacing: tuple[float, float]) -> np.ndarray:
    """A filled circle of ``radius_mm`` on a grid of ``spacing``."""
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return ((ii - centre[0]) * spacing[0]) ** 2 + ((jj - centre[1]) * spacing[1]) ** 2 <= radius_mm**2


def known_prediction(sac_radius_mm=(9.0, 8.0, 6.0, 4.5, 8.5), probs=None, axial_present=None,
                     attention_on_discs: bool = True) -> StudyPrediction:
    n = len(LEVELS)
    mask = np.zeros(SAGITTAL_SHAPE, dtype=np.int16)
    mask[CANAL_Y[0]:CANAL_Y[1], :] = Structure.CANAL.index
    attention = np.full((n, *SAGITTAL_SHAPE), 1e-6, dtype=np.float32)
    half = DISC_HEIGHT_PX // 2
    mask[DISC_Y[0]:DISC_Y[1], DISC_Z[-1] - half - BODY_PX - 10:DISC_Z[-1] - half] = Structure.VERTEBRAL_BODY.index
    for li, z in enumerate(DISC_Z):
        mask[DISC_Y[0]:DISC_Y[1], z - half:z + half] = Structure.DISC.index
        mask[DISC_Y[0]:DISC_Y[1], z + half:z + half + BODY_PX] = Structure.VERTEBRAL_BODY.index
        mask[POSTERIOR_Y[0]:POSTERIOR_Y[1], z + half:z + half + BODY_PX] = Structure.POSTERIOR_ELEMENTS.index
        if attention_on_discs:
            attention[li] += disc(SAGITTAL_SHAPE, (90, z), 4.0, SAGITTAL_SPACING)
    attention /= attention.sum(axis=(1, 2), keepdims=True)
    axial_spacing = np.tile([0.9, 0.9], (n, 1))
    axial_masks = np.zeros((n, *AXIAL_SHAPE), dtype=np.int16)
    for li, radius in enumerate(sac_radius_mm):
        axial_masks[li][disc(AXIAL_SHAPE, (56, 40), radius, (0.9, 0.9))] = Structure.CANAL.index
    present = np.ones(n, bool) if axial_present is None else np.asarray(axial_present, bool)
    axial_masks[~present] = 0
    if probs is None:
        probs = np.tile([0.9, 0.07, 0.03], (n, 1))
    sagittal_affine = np.diag([3.0, *SAGITTAL_SPACING, 1.0])
    return StudyPrediction(
        study_id="known",
        sagittal_image=np.zeros(SAGITTAL_SHAPE, np.float32),
        sagittal_mask=mask,
        sagittal_spacing=SAGITTAL_SPACING,
        sagittal_slice=6,
        sagittal_affine=sagittal_affine,
        level_attention=attention,
        axial_present=present,
        axial_images=np.zeros((n, *AXIAL_SHAPE), np.float32),
        axial_masks=axial_masks,
        axial_spacing=axial_spacing,
        axial_attention=np.zeros((n, *AXIAL_SHAPE), np.float32),
        axial_affines=np.tile(np.diag([0.9, 0.9, 4.0, 1.0]), (n, 1, 1)),
        severity_probs=np.asarray(probs, dtype=np.float64),
        canal_area_mm2=np.zeros(n, np.float32),
        level_features=np.zeros((n, 8), np.float32),
        info={"sagittal_series": "sag", "axial": {lv: {"series": f"ax{li}", "centre_slice": 2}
                                                  for li, lv in enumerate(LEVELS)}},
    )
