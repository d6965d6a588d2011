"""The coarse first pass: the segmentation model finds the spine in the whole sagittal field of view."""

from __future__ import annotations

import numpy as np
import torch

from lss.preprocessing.locate import coarse_view, spine_centre

__all__ = ["SpineLocator"]


class SpineLocator:
    """A ``lss.preprocessing.locate.Locator`` backed by a model's sagittal branch.

    Args:
        model: an ``lss.model.LSSModel``.
        shape: the model's sagittal input (Y, Z) (``preprocess.sagittal_shape[1:]``).
        device: where the model runs.

    Example::

        case = preprocess_study(record, config.preprocess, locator=SpineLocator(model, (128, 192)))
    """

    def __init__(self, model, shape: tuple[int, int], device: str | torch.device = "cpu") -> None:
        self.model = model
        self.shape = (int(shape[0]), int(shape[1]))
        self.device = torch.device(device)

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> np.ndarray:
        """(S, Y, Z) coarse input -> (Y, Z) predicted structure indices."""
        self.model.eval()
        sagittal = torch.as_tensor(image, dtype=torch.float32, device=self.device)[None]
        return self.model(sagittal, None, None).sagittal_logits[0].argmax(dim=0).cpu().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        view = coarse_view(image, self.shape, self.model.config.sagittal_slices)
        return spine_centre(self.segment(view.image), view, crop_z=self.shape[1])
