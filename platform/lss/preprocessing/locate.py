"""Where the spine is in a sagittal field of view: a coarse first pass of the segmentation model.

A real sagittal series may show anything from the lower thoracic spine to the sacrum, with the spine anywhere in
an abdomen-wide field of view. Without a mask, the crop the model reads at full resolution is placed by the model
itself: the whole field of view is shrunk to the model's input size (uniform scale, padded, so anatomy keeps its
shape), segmented once, and the crop is centred on the predicted spine (vertebral bodies, discs and canal).

``coarse_view`` and ``spine_centre`` hold the geometry (no model, numpy only); ``lss.inference.locate.SpineLocator``
runs the model between them. Without a locator (or when the coarse pass finds no spine) the crop is centred on the
field of view, and the case's ``info`` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lss.anatomy import Structure

__all__ = ["CoarseView", "coarse_view", "spine_centre", "Locator", "SPINE_STRUCTURES"]

# What the crop is centred on: the column of bodies and discs with the canal behind them.
SPINE_STRUCTURES: tuple[Structure, ...] = (Structure.VERTEBRAL_BODY, Structure.DISC, Structure.CANAL)

# image (X, Y, Z) float in [0, 1] at the working spacing -> voxel centre (3,) or None when no spine is found.
Locator = Callable[[np.ndarray], "np.ndarray | None"]


@dataclass
class CoarseView:
    """The whole field of view shrunk into the model's sagittal input.

    Attributes:
        image: (S, Y', Z') float32, the middle ``S`` sagittal slices, resized by ``scale`` and zero-padded to the
            model's input shape (Y', Z').
        scale: input voxels per coarse pixel (>= 1: the view never enlarges).
        offset: (2,) where the resized field of view starts in the padded coarse image (pixels).
        centre_x: the sagittal slice the view is centred on (voxel index along X).
    """

    image: np.ndarray
    scale: float
    offset: np.ndarray
    centre_x: int

    def to_voxel(self, yz: np.ndarray) -> np.ndarray:
        """Coarse (y', z') pixel -> (y, z) voxel of the input volume."""
        return (np.asarray(yz, dtype=float) - self.offset + 0.5) * self.scale - 0.5


def coarse_view(image: np.ndarray, shape: tuple[int, int], slices: int) -> CoarseView:
    """Shrinks a sagittal volume so that its whole (Y, Z) field of view fits ``shape``.

    Args:
        image: (X, Y, Z) volume in RAS at the working spacing.
        shape: (Y', Z') the model's sagittal input.
        slices: the model's 2.5D context (odd).

    Raises:
        ValueError: for a volume that is not 3D or an even ``slices``.
    """
    import torch
    import torch.nn.functional as F

    if image.ndim != 3:
        raise ValueError(f"image must be (X, Y, Z), got shape {image.shape}.")
    if slices % 2 == 0:
        raise ValueError(f"slices must be odd, got {slices}.")
    x, y, z = image.shape
    centre_x = x // 2
    index = np.clip(np.arange(centre_x - slices // 2, centre_x + slices // 2 + 1), 0, x - 1)
    scale = max(y / shape[0], z / shape[1], 1.0)
    size = (max(int(round(y / scale)), 1), max(int(round(z / scale)), 1))
    stack = torch.as_tensor(np.ascontiguousarray(image[index], dtype=np.float32))[None]
    resized = F.interpolate(stack, size=size, mode="area" if scale > 1 else "nearest")[0].numpy()
    offset = np.array([(shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2])
    out = np.zeros((slices, *shape), dtype=np.float32)
    out[:, offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]] = resized
    return CoarseView(image=out, scale=float(scale), offset=offset, centre_x=int(centre_x))


def spine_centre(mask: np.ndarray, view: CoarseView, min_pixels: int = 20,
                 crop_z: int | None = None, margin_z: int = 8) -> np.ndarray | None:
    """The voxel centre (x, y, z) of the spine predicted on a coarse view, or None when too little was found.

    The largest connected region of spine structures is kept (a stray blob elsewhere does not move the crop). When
    that region is longer than the crop (``crop_z`` voxels along Z), the crop is anchored at its caudal end instead of
    its middle: the levels are counted from the sacrum (``lss.reporting.levels``), so the sacrum must stay inside,
    and the thoracic end is what may be cut.

    Args:
        mask: (Y', Z') predicted structure indices on ``view.image``.
        view: the coarse view the mask was predicted on.
        min_pixels: fewer spine pixels than this is "no spine found".
        crop_z: the crop's size along Z in voxels (None: always centre on the spine).
        margin_z: voxels kept below the spine's caudal end when anchoring there.
    """
    from scipy import ndimage

    spine = np.isin(mask, [s.index for s in SPINE_STRUCTURES])
    if spine.sum() < min_pixels:
        return None
    # Bodies, discs and canal touch along the column; close small gaps so that the column is one region.
    closed = ndimage.binary_closing(spine, structure=np.ones((3, 3)), iterations=2)
    labels, count = ndimage.label(closed)
    if count > 1:
        sizes = ndimage.sum(closed, labels, index=np.arange(1, count + 1))
        spine = spine & (labels == 1 + int(np.argmax(sizes)))
    if spine.sum() < min_pixels:
        return None
    points = np.argwhere(spine)
    yz = view.to_voxel(points.mean(axis=0))
    if crop_z is not None:
        z_low, z_high = view.to_voxel(points.min(axis=0))[1], view.to_voxel(points.max(axis=0))[1]
        if z_high - z_low + 2 * margin_z > crop_z:
            yz[1] = z_low - margin_z + crop_z / 2.0
    return np.array([float(view.centre_x), float(yz[0]), float(yz[1])])
