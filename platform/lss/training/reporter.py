"""Trains the learned report generator on a trained model's per-level features (``lss train-reporter``).

    model file + preprocessed studies with reference reports + a split (a training run's split.json)
        -> the frozen model's level features of the train and val studies (lss.inference.predict_cases)
        -> lss.reporting.generator.train_generator (every reference style of a study is a training pair)
        -> OUT/ (the generator, loadable offline) + OUT/history.json

The vision-language model stays frozen: the generator learns to write from what the model already extracts, so a
report is only as right as the features it reads. This is a training stage, beside the model's own: it reads the
preprocessed cases (``lss.data.cases``) and runs the model (``lss.inference.predict``); the generator itself and
how it writes are ``lss.reporting.generator``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lss.config import LSSConfig
from lss.data.cases import INDEX_NAME, load_case, read_jsonl, select_indexed_studies

__all__ = ["study_features", "fit_report_generator"]

logger = logging.getLogger(__name__)


def study_features(
    model: torch.nn.Module,
    data_dir: str | Path,
    study_ids: list[str] | None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
    """The model's per-level features and the reference reports of studies that have reports.

    Returns:
        Study ids, (N, L, F) features, and N mappings style -> reference report.
    """
    from lss.inference.predict import predict_cases

    data_dir = Path(data_dir)
    rows, _ = select_indexed_studies(read_jsonl(data_dir / INDEX_NAME), study_ids, data_dir / INDEX_NAME)
    rows = [r for r in rows if (r.get("record") or {}).get("reports")]
    ids, features, reports = [], [], []
    for start in range(0, len(rows), int(batch_size)):
        chunk = rows[start:start + int(batch_size)]
        predictions = predict_cases(model, [load_case(data_dir / r["path"]) for r in chunk],
                                    [str(r["study_id"]) for r in chunk], device=device)
        for row, prediction in zip(chunk, predictions, strict=True):
            ids.append(prediction.study_id)
            features.append(prediction.level_features)
            reports.append(dict(row["record"]["reports"]))
    if not ids:
        raise ValueError(f"no study of {data_dir} (in the split) has reference reports to learn from.")
    return ids, np.stack(features).astype(np.float32), reports


def fit_report_generator(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    config: LSSConfig | None = None,
    split: dict[str, list[str]] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Trains and saves a report generator.

    Args:
        model_path: the trained model (``lss.model.save_model``); frozen here.
        data_dir: preprocessed studies with reference reports.
        out_dir: where the generator is saved (``save_generator``) with ``history.json``.
        config: ``report`` holds the generator's size and training settings; default ``LSSConfig()``.
        split: ``{"train": [...], "val": [...]}`` study ids; None trains on every study (no validation).
        device: where the model computes the features.

    Returns:
        The saved folder and the training history.
    """
    from lss.model import load_model
    from lss.reporting.generator import save_generator, train_generator

    config = config or LSSConfig()
    model = load_model(model_path, map_location=device).eval()
    train_ids = None if split is None else list(split["train"])
    _, features, reports = study_features(model, data_dir, train_ids, device=device)
    val_features = val_reports = None
    if split is not None and split.get("val"):
        _, val_features, val_reports = study_features(model, data_dir, list(split["val"]), device=device)
    logger.info("train-reporter: %d training studies, %d validation studies", len(features),
                0 if val_features is None else len(val_features))
    generator, history = train_generator(features, reports, config.report, val_features, val_reports, log_every=5)
    out_dir = Path(out_dir)
    save_generator(generator, out_dir)
    history = {**history, "train_studies": len(features), "val_studies": 0 if val_features is None else
               len(val_features), "model": str(Path(model_path).resolve())}
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return out_dir, history
