"""The model's first pass: its sagittal branch finds the lumbar spine in the whole sagittal field of view."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lss.preprocessing.locate import spine_centre

__all__ = ["SpineLocator"]


class SpineLocator:
    """A ``lss.preprocessing.locate.Locator`` backed by a model's sagittal branch.

    The middle ``model.config.sagittal_slices`` slices of the whole field of view are segmented at the working
    spacing with MONAI's ``sliding_window_inference`` (windows of the model's input size, Gaussian-weighted
    overlap), the resolution the model was trained at; ``lss.preprocessing.locate.spine_centre`` places the crop.

    Args:
        model: an ``lss.model.LSSModel``.
        shape: the model's sagittal input (Y, Z) (``preprocess.sagittal_shape[1:]``), the window and crop size.
        spacing_mm: the working spacing (Y, Z) of the images it is given (``preprocess.sagittal_spacing_mm[1:]``).
        device: where the model runs.
        overlap: the windows' overlap (MONAI's ``sliding_window_inference``).

    Example::

        locator = SpineLocator(model, (128, 192), (1.25, 1.25))
        case = preprocess_study(record, config.preprocess, locator=locator)
    """

    def __init__(self, model, shape: Sequence[int], spacing_mm: Sequence[float],
                 device: str | torch.device = "cpu", overlap: float = 0.25) -> None:
        if len(shape) != 2 or min(int(s) for s in shape) < 1:
            raise ValueError(f"shape must be the sagittal input (Y, Z), got {tuple(shape)!r}.")
        if len(spacing_mm) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
            raise ValueError(f"spacing_mm must be two positive numbers (Y, Z), got {tuple(spacing_mm)!r}.")
        self.model = model
        self.shape = (int(shape[0]), int(shape[1]))
        self.spacing_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
        self.device = torch.device(device)
        self.overlap = float(overlap)

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> np.ndarray:
        """(X, Y, Z) field of view at the working spacing -> (Y, Z) predicted structure indices of its middle
        slice (``model.config.sagittal_slices`` slices as the 2.5D input; edge slices repeated when fewer)."""
        from monai.inferers import sliding_window_inference

        if image.ndim != 3:
            raise ValueError(f"image must be (X, Y, Z), got shape {image.shape}.")
        self.model.eval()
        slices = int(self.model.config.sagittal_slices)
        middle = image.shape[0] // 2
        index = np.clip(np.arange(middle - slices // 2, middle + slices // 2 + 1), 0, image.shape[0] - 1)
        stack = torch.as_tensor(np.ascontiguousarray(image[index], dtype=np.float32), device=self.device)[None]
        logits = sliding_window_inference(stack, self.shape, 4, lambda x: self.model(x, None, None).sagittal_logits,
                                          overlap=self.overlap, mode="gaussian")
        return logits[0].argmax(dim=0).cpu().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        yz = spine_centre(self.segment(image), self.spacing_mm, crop_z=self.shape[1])
        return None if yz is None else np.array([float(image.shape[0] // 2), float(yz[0]), float(yz[1])])
