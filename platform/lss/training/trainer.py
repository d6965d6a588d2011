"""Launching a training run: the split, Ray Train's ``TorchTrainer``, fault tolerance and the best checkpoint.

    result = run_training(load_config(), "outputs/demo/preprocessed", name="baseline")
    result.best_model   # a ``save_model`` file: load it with ``lss.model.load_model``
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lss.config import LSSConfig
from lss.ray_session import init_ray
from lss.training.data import load_split, mix_splits, write_split
from lss.training.loop import MODEL_FILE, train_loop_per_worker

__all__ = ["TrainingResult", "run_training", "make_trainer", "storage_uri"]

logger = logging.getLogger(__name__)
SCORE = "val_dice_macro"


@dataclass
class TrainingResult:
    """Where a run put its outputs and what it reached.

    Attributes:
        run_dir: the run's folder under the storage path.
        best_model: the model file of the best checkpoint by validation macro Dice (copied to ``run_dir``), with its
            canal offset fitted on the validation split (``lss.training.canal_offset``).
        metrics: the last reported metrics.
        best_metrics: the metrics of the best checkpoint.
        split: the study split (also in ``run_dir/split.json``).
        history: every epoch's reported metrics (rank 0), in order (``run_dir/history.jsonl``).
        calibration: the best checkpoint's severity calibration as fitted on the validation split
            (``val_calibration_<field>`` of ``best_metrics`` without the prefix: temperatures, abstention threshold,
            ECE per path before/after, coverage, selective accuracy, ``fitted`` 0/1); it is saved in ``best_model``.
    """

    run_dir: Path
    best_model: Path | None
    metrics: dict[str, Any]
    best_metrics: dict[str, Any]
    split: dict[str, list[str]]
    history: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, float] = field(default_factory=dict)


def storage_uri(path: str) -> str:
    """An absolute local path (Ray Train needs one), or a URI such as s3://bucket/runs as it is."""
    return path if "://" in path else str(Path(path).resolve())


def make_trainer(config: LSSConfig, data_dir: str | Path, name: str, split: dict[str, list[str]],
                 log_dir: str | None = None, history_path: str | None = None, mix: list[dict] | None = None):
    """The ``TorchTrainer`` of a run (not started); ``mix``: the ``train.mix`` sources with their splits."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = config.train
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "data_dir": str(Path(data_dir).resolve()),
                           "split": split, "log_dir": log_dir, "history_path": history_path,
                           "mix": mix or []},
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker={"CPU": train.cpus_per_worker}),
        run_config=RunConfig(
            name=name,
            storage_path=storage_uri(train.storage_path),
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=train.checkpoints_to_keep, checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
        ),
    )


def _read_history(path: Path) -> list[dict[str, Any]]:
    """Each epoch's metrics, the last report of an epoch winning (an epoch re-run after a failure reports twice)."""
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_training(config: LSSConfig, data_dir: str | Path, name: str = "train") -> TrainingResult:
    """Trains on the labelled cases of a preprocessed folder; returns where the best model is.

    The split (train / val / test by ``train.split_seed``) is written to the run folder; the test studies are never
    trained or validated on. Fails over up to ``train.max_failures`` worker failures from the last checkpoint.
    """
    init_ray(config.ray)
    split = load_split(data_dir, config.train.val_fraction, config.train.test_fraction, config.train.split_seed)
    mix = mix_splits(config.train.mix, config.train.split_seed)
    run_dir = Path(storage_uri(config.train.storage_path)) / name
    local = "://" not in str(run_dir)
    if local:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split({**split, "mix": {m["name"]: m["split"] for m in mix}} if mix else split, run_dir / "split.json")
        (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1))
    log_dir = str(run_dir / "tensorboard") if local else None
    history_path = run_dir / "history.jsonl" if local else None
    if history_path is not None and history_path.exists():
        history_path.unlink()
    logger.info("train: %d train / %d val / %d test studies, %d worker(s), %d epochs -> %s", len(split["train"]),
                len(split["val"]), len(split["test"]), config.train.num_workers, config.train.epochs, run_dir)
    for m in mix:
        logger.info("train: + %s: %d train / %d val / %d held out, weight %.2f", m["name"], len(m["split"]["train"]),
                    len(m["split"]["val"]), len(m["split"]["test"]), m["weight"])
    result = make_trainer(config, data_dir, name, split, log_dir,
                          str(history_path) if history_path else None, mix).fit()
    best_model, best_metrics = None, {}
    best = result.get_best_checkpoint(metric=SCORE, mode="max") if result.best_checkpoints else None
    if best is not None:
        best_metrics = next((m for c, m in result.best_checkpoints if c.path == best.path), {})
        with best.as_directory() as folder:
            if local:
                best_model = run_dir / "best_model.pt"
                shutil.copy(Path(folder) / MODEL_FILE, best_model)
    if best_model is not None and split["val"]:
        # The argmax masks are not calibrated: shift the canal logit so that the sac area is unbiased on validation.
        from lss.training.canal_offset import fit_model_canal_offset

        fit_model_canal_offset(best_model, data_dir, list(split["val"]))
    refitted = False
    if best_model is not None and config.train.grade_from_measurements and config.train.use_axial:
        # The head reads less than the mask holds: where a level's sac is measured, grade it from the measurement.
        from lss.training.measured_grade import fit_model_measured_grade

        refitted = fit_model_measured_grade(best_model, data_dir, list(split["train"]), list(split["val"]),
                                            config.train).fitted and bool(split["val"])
    history = _read_history(history_path) if history_path else []
    prefix = "val_calibration_"
    calibration = {k[len(prefix):]: v for k, v in best_metrics.items() if k.startswith(prefix)}
    if best_model is not None and refitted:
        from lss.model import load_model

        calibration = load_model(best_model).calibration.metrics()
    if calibration:
        if calibration.get("fitted"):
            logger.info("train: calibration on validation: T axial %.3f, T sagittal %.3f, abstain below %.3f "
                        "(coverage %.3f, selective accuracy %.3f)", calibration["temperature_axial"],
                        calibration["temperature_sagittal"], calibration["abstain_threshold"],
                        calibration["coverage"], calibration["selective_accuracy"])
        else:
            logger.info("train: identity calibration (no validation split, or no validation level with a known "
                        "severity)")
    return TrainingResult(run_dir=run_dir, best_model=best_model, metrics=dict(result.metrics or {}),
                          best_metrics=dict(best_metrics), split=split, history=history, calibration=calibration)
