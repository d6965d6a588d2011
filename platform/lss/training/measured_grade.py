"""Fitting a saved model's grade from its own measurements (``lss.model.measured_grade``) after training, then its
severity calibration again on validation (the grade of the measured levels changed, so the temperatures and the
abstention threshold fitted during training no longer describe it)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lss.config import TrainConfig
from lss.model.measured_grade import MeasuredGrade, fit_measured_grade, measure_sac
from lss.training.data import forward_studies

__all__ = ["fit_model_measured_grade"]

logger = logging.getLogger(__name__)


def fit_model_measured_grade(model_path: str | Path, data_dir: str | Path, train_ids: list[str], val_ids: list[str],
                             train: TrainConfig | None = None, batch_size: int = 4,
                             save: bool = True) -> MeasuredGrade:
    """Fits the measured grade on the training studies' measured levels, then refits the calibration on validation.

    Run after the canal offset (``lss.training.canal_offset``): the measurements are those of the reports.

    Args:
        model_path: a ``save_model`` file; with ``save`` it is rewritten with the grade and the new calibration.
        data_dir: the ``lss preprocess`` output folder holding the studies.
        train_ids: the studies to fit the grade on (the run's training split).
        val_ids: the studies to refit the calibration on (the run's validation split; empty: the calibration stays).
        train: the abstention rule (``abstain_target_accuracy``, ``abstain_min_coverage``); default settings if None.
        batch_size: studies per forward pass.
        save: write the result into ``model_path``.

    Returns:
        The grade (the identity, with a note, when a grade has fewer than 2 measured training levels).
    """
    from lss.inference.predict import column_spacing
    from lss.model import load_model, save_model
    from lss.model.calibration import fit_calibration

    train = train or TrainConfig()
    data_dir = Path(data_dir)
    model = load_model(model_path).eval()
    model.measured_grade = MeasuredGrade()  # measure with the head alone
    areas, aps, grades, spacing = [], [], [], None
    for cases, batch, out in forward_studies(model, data_dir, train_ids, batch_size):
        if out.axial_logits is None:
            continue
        for b, case in enumerate(cases):
            for li in range(len(case["axial_present"])):
                grade = int(batch["severity"][b, li])
                if not case["axial_present"][li] or grade < 0:
                    continue
                spacing = column_spacing(case["axial_affines"][li], (0, 1))
                measured = measure_sac(out.axial_logits[b, li], model.canal_offset.offset, spacing)
                if measured is not None:
                    areas.append(measured[0])
                    aps.append(measured[1])
                    grades.append(grade)
    grade = fit_measured_grade(areas, aps, grades, spacing or (1.0, 1.0))
    logger.info("measured grade: %s", grade.note)
    model.measured_grade = grade

    if grade.fitted and val_ids:
        logits, paths, sagittal, targets = [], [], [], []
        for _, batch, out in forward_studies(model, data_dir, val_ids, batch_size):
            logits.append(out.severity_logits)
            with torch.no_grad():
                sagittal.append(model(batch["sagittal"]).severity_logits)
            paths.append(batch["axial_present"].bool())
            targets.append(batch["severity"])
        given, alone = torch.cat(logits).flatten(0, 1).float(), torch.cat(sagittal).flatten(0, 1).float()
        present, known = torch.cat(paths).flatten(), torch.cat(targets).flatten()
        model.calibration = fit_calibration(  # both paths, as validation during training fits it
            torch.cat([given, alone]), torch.cat([known, known]), torch.cat([present, torch.zeros_like(present)]),
            target_accuracy=train.abstain_target_accuracy, min_coverage=train.abstain_min_coverage)
        logger.info("measured grade: calibration refitted on %d validation levels: %s", int((known >= 0).sum()),
                    model.calibration.note or "fitted")
    if save:
        extra = torch.load(Path(model_path), map_location="cpu", weights_only=False).get("extra", {})
        save_model(model, model_path, extra=extra)
    return grade
