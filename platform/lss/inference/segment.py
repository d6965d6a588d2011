"""Stage 2 of the diagnosis chain: prepared studies -> the model's masks, severity probabilities and attention.

No Ray here: ``lss diagnose`` holds one ``StudySegmenter``; the Serve ``Segmenter`` deployment holds one per replica
and feeds it the batches ``@serve.batch`` collects.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lss.config import PreprocessConfig
from lss.data.cases import model_version
from lss.inference.locate import SpineLocator
from lss.inference.predict import StudyPrediction, disc_centres, predict_cases

__all__ = ["StudySegmenter", "model_version"]


class StudySegmenter:
    """A loaded model that segments and grades prepared studies, one or a batch at a time.

    Args:
        model_path: a model file of ``lss.model.save_model``.
        device: where the model runs.

    Raises:
        FileNotFoundError: when the model file does not exist.
        ValueError: when it is not a model file of this version of ``lss``.
    """

    def __init__(self, model_path: str | Path, device: str | torch.device = "cpu") -> None:
        from lss.model import load_model

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file {self.model_path} does not exist.")
        self.device = torch.device(device)
        self.model = load_model(self.model_path, map_location=self.device).eval()
        self.version = model_version(self.model_path)

    def locator(self, config: PreprocessConfig) -> SpineLocator:
        """The model's first pass that places the sagittal crop of a study without a mask, for the crop size and
        working spacing of ``config``."""
        return SpineLocator(self.model, config.sagittal_shape[1:], config.sagittal_spacing_mm[1:], self.device)

    def locate(self, image: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
        """The spine's voxel centre in a whole sagittal field of view, or None when no spine was found."""
        return self.locator(config)(image)

    def predict(self, studies: Sequence[Any]) -> list[StudyPrediction]:
        """One forward pass over ``lss.inference.prepare.PreparedStudy`` objects of the same shapes.

        Each prediction's ``info`` gains ``model_version``, ``batch_size`` and ``segmentation_s`` (the batch's wall
        time).
        """
        started = time.perf_counter()
        predictions = predict_cases(self.model, [s.arrays for s in studies], [s.study_id for s in studies],
                                    [s.info for s in studies], self.device)
        seconds = time.perf_counter() - started
        for prediction in predictions:
            prediction.info = {**prediction.info, "model_version": self.version, "batch_size": len(studies),
                               "segmentation_s": round(seconds, 4)}
        return predictions

    def predict_one(self, prepared: Any) -> StudyPrediction:
        return self.predict([prepared])[0]

    def disc_centres_one(self, prepared: Any) -> dict[str, tuple[float, float, float] | None]:
        """The sagittal pass of one ``PreparedStudy``: each level's disc centre in RAS mm, or None
        (``lss.inference.predict.disc_centres``)."""
        return disc_centres(self.model, [prepared.arrays], [prepared.info], self.device)[0]

    def describe(self) -> dict[str, Any]:
        """What is served: the model version and file name (never the folder: it can name a person)."""
        return {"model_version": self.version, "model_file": self.model_path.name}
