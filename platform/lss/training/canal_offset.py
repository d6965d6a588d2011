"""Fitting a saved model's dural sac logit offset on labelled validation studies (``lss.model.canal_offset``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lss.anatomy import Structure
from lss.model.canal_offset import CanalOffset, canal_margin, fit_canal_offset

__all__ = ["fit_model_canal_offset"]

logger = logging.getLogger(__name__)


def fit_model_canal_offset(model_path: str | Path, data_dir: str | Path, study_ids: list[str],
                           batch_size: int = 4, save: bool = True) -> CanalOffset:
    """Fits the canal offset of a model file on the axial levels of the given (validation) studies.

    The target of each level is its labelled sac, measured as the prediction is (largest connected region of the
    centre slice), so any labelled axial data serves, phantom or real.

    Args:
        model_path: a ``save_model`` file; with ``save`` it is rewritten with the fitted offset.
        data_dir: a ``lss preprocess`` output folder holding the studies.
        study_ids: the studies to fit on (the run's validation split); unknown ids are skipped.
        batch_size: studies per forward pass.
        save: write the offset into ``model_path``.

    Returns:
        The offset (the identity, with a note, when no study has a labelled axial sac).
    """
    from lss.inference.predict import column_spacing
    from lss.model import load_model, save_model
    from lss.reporting.measurements import largest_component, region_area_mm2
    from lss.training.data import forward_studies

    model = load_model(model_path).eval()
    margins, spacings, areas = [], [], []
    for cases, batch, out in forward_studies(model, data_dir, study_ids, batch_size):
        if out.axial_logits is None:
            continue
        for b, case in enumerate(cases):
            for li in range(batch["axial_target"].shape[1]):
                target = batch["axial_target"][b, li].numpy()
                if not case["axial_present"][li] or not (target == Structure.CANAL.index).any():
                    continue
                spacing = column_spacing(case["axial_affines"][li], (0, 1))
                margins.append(canal_margin(out.axial_logits[b, li], channel_dim=0))
                spacings.append(spacing)
                areas.append(region_area_mm2(largest_component(target == Structure.CANAL.index), spacing))
    offset = fit_canal_offset(margins, spacings, areas)
    logger.info("canal offset: %+.3f on %d validation levels, sac area bias %s -> %s mm2", offset.offset,
                offset.n_levels, _mm2(offset.bias_before_mm2), _mm2(offset.bias_after_mm2))
    if save:
        model.canal_offset = offset
        extra = torch.load(Path(model_path), map_location="cpu", weights_only=False).get("extra", {})
        save_model(model, model_path, extra=extra)
    return offset


def _mm2(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.1f}"
