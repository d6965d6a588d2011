"""The per-worker training loop that Ray Train runs (``train_loop_per_worker``).

Each epoch: train on this worker's shard of the training split (with axial dropout: some levels and studies are
graded from the sagittal view alone, ``lss.training.axial_dropout``), validate (every rank a shard of the validation
split, metrics gathered) and fit the model's severity calibration on it (a temperature per path and the abstention
threshold, ``lss.model.calibration``; saved with the model), log to
TensorBoard (rank 0), and report metrics with a checkpoint holding the model, optimiser, scheduler, the PID
controller state of both segmentation losses, the epoch, the best score and the configuration. On a restart after a
failure, Ray Train hands the last checkpoint back and the loop resumes from the next epoch with everything restored.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lss.anatomy import SEVERITIES, Structure
from lss.config import LSSConfig
from lss.losses import AttentionLocalisationLoss, SeverityLoss, build_segmentation_loss
from lss.model import build_model, collate_samples, save_model
from lss.model.calibration import SeverityCalibration
from lss.model.vlm import LSSModel, ModelOutput
from lss.training.augment import TrainingAugment
from lss.training.axial_dropout import drop_axial
from lss.training.data import CaseDataset, MixtureSampler

__all__ = ["train_loop_per_worker", "compute_losses", "validate", "STATE_FILE", "MODEL_FILE"]

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
NUM_STRUCTURES = len(Structure)
logger = logging.getLogger(__name__)


def _unwrap(model: torch.nn.Module) -> LSSModel:
    return model.module if hasattr(model, "module") else model


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def compute_losses(
    out: ModelOutput,
    batch: dict[str, torch.Tensor],
    seg_sagittal: torch.nn.Module,
    seg_axial: torch.nn.Module,
    severity_loss: torch.nn.Module,
    localise: torch.nn.Module,
    config: LSSConfig,
    level_slice: slice,
) -> dict[str, torch.Tensor]:
    """All loss terms of one batch and their weighted sum ("total")."""
    train = config.train
    labelled = (batch["sagittal_target"] >= 0).flatten(1).any(dim=1)
    terms: dict[str, torch.Tensor] = {}
    zero = out.severity_logits.sum() * 0.0
    if labelled.any():
        partition = batch["sagittal_partition"][labelled] if "sagittal_partition" in batch else None
        terms["seg_sagittal"] = seg_sagittal(out.sagittal_logits[labelled], batch["sagittal_target"][labelled, None],
                                             partition)
        terms["attention"] = localise(out.sagittal_attention[:, level_slice][labelled], batch["level_target"][labelled])
    else:
        terms["seg_sagittal"] = terms["attention"] = zero
    if out.axial_logits is not None:
        present = (batch["axial_target"] >= 0).flatten(2).all(dim=2)  # (B, L)
        if present.any():
            terms["seg_axial"] = seg_axial(out.axial_logits[present], batch["axial_target"][present][:, None])
        else:
            terms["seg_axial"] = zero
    terms["severity"] = severity_loss(out.severity_logits, batch["severity"])
    if out.regression is not None:
        target = torch.stack([batch["area_mm2"] / 100.0, batch["ap_mm"] / 10.0], dim=-1)
        known = torch.isfinite(target)
        terms["regression"] = (F.smooth_l1_loss(out.regression[known], target[known]) if known.any() else zero)
    total = terms["seg_sagittal"] + terms.get("seg_axial", zero)
    total = total + train.severity_weight * terms["severity"] + train.attention_weight * terms["attention"]
    total = total + train.regression_weight * terms.get("regression", zero)
    terms["total"] = total
    return terms


@torch.no_grad()
def validate(model: LSSModel, dataset: CaseDataset, config: LSSConfig, device: torch.device,
             batch_size: int = 4, rank: int = 0, world: int = 1, calibrate: bool = False) -> dict[str, float]:
    """Validation metrics of a model on a dataset (segmentation, severity, attention hit rate).

    Every rank must call it (MONAI's metrics all-gather across the process group): rank r validates studies
    r, r + world, ... and the severity predictions are gathered, so every rank returns the metrics of the whole set.

    With ``calibrate``, every study is also graded sagittal-only (no axial input), and the model's calibration is
    fitted on the gathered logits of both passes (``lss.model.calibration.fit_calibration``) and set as
    ``model.calibration`` (the same on every rank). The metrics then add ``val_calibration_<field>`` (the
    ``SeverityCalibration.metrics()``: temperatures, threshold, ECE per path before/after, validation coverage and
    selective accuracy, ``fitted``) and ``val_sagittal_only_{accuracy,balanced_accuracy,ece}`` (the calibrated
    sagittal-only grades of every level). The severity metrics ``val_<metric>`` stay those of the uncalibrated
    softmax of the first pass (as given).
    """
    import torch.distributed as dist

    from lss.losses import attention_hit_rate
    from lss.metrics import SegmentationMeter, severity_metrics

    model.eval()
    sagittal_meter, axial_meter = SegmentationMeter(), SegmentationMeter()
    probs, targets, hits = [], [], []
    logits, paths, sagittal_logits = [], [], []  # for the calibration
    indices = list(range(rank, len(dataset), world)) or [0]  # an empty shard would leave a collective unmatched
    for start in range(0, len(indices), batch_size):
        batch = _to(collate_samples([dataset[i] for i in indices[start:start + batch_size]]), device)
        use_axial = config.train.use_axial
        out = model(batch["sagittal"], batch["axial"] if use_axial else None,
                    batch["axial_present"] if use_axial else None)
        # Spacing in mm of the 2.5D planes, so that HD95 is in mm here as in evaluation.
        sagittal_meter.update(out.sagittal_logits, batch["sagittal_target"],
                              spacing=tuple(config.preprocess.sagittal_spacing_mm[1:]),
                              partition=batch.get("sagittal_partition"))
        if out.axial_logits is not None:
            present = (batch["axial_target"] >= 0).flatten(2).all(dim=2)
            if present.any():
                axial_meter.update(out.axial_logits[present], batch["axial_target"][present],
                                   spacing=tuple(config.preprocess.axial_spacing_mm))
        probs.append(out.severity_logits.softmax(-1).flatten(0, 1).cpu())
        targets.append(batch["severity"].flatten().cpu())
        if calibrate:
            logits.append(out.severity_logits.detach().float().flatten(0, 1).cpu())
            given = batch["axial_present"] if use_axial else torch.zeros_like(batch["axial_present"])
            paths.append(given.bool().flatten().cpu())
            sagittal_logits.append(model(batch["sagittal"]).severity_logits.detach().float().flatten(0, 1).cpu()
                                   if use_axial else logits[-1])
        hit = attention_hit_rate(out.sagittal_attention[:, model.prompts.level_slice], batch["level_target"])
        if np.isfinite(hit):
            hits.append(hit)
    if world > 1 and dist.is_available() and dist.is_initialized():
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (torch.cat(probs), torch.cat(targets), hits,
                                          [torch.cat(v) for v in (logits, paths, sagittal_logits) if v]))
        probs = [g[0] for g in gathered]
        targets = [g[1] for g in gathered]
        hits = [h for g in gathered for h in g[2]]
        if calibrate:
            logits, paths, sagittal_logits = ([g[3][i] for g in gathered] for i in range(3))
    metrics = {f"val_{k}": v for k, v in sagittal_meter.compute().items() if np.isscalar(v)}
    if config.train.use_axial:
        metrics.update({f"val_axial_{k}": v for k, v in axial_meter.compute().items() if np.isscalar(v)})
    severity = severity_metrics(torch.cat(probs).numpy(), torch.cat(targets).numpy())
    metrics.update({f"val_{k}": v for k, v in severity.items() if np.isscalar(v)})
    metrics["val_attention_hit_rate"] = float(np.mean(hits)) if hits else float("nan")
    if calibrate:
        metrics.update(_calibrate(model, torch.cat(logits), torch.cat(paths), torch.cat(sagittal_logits),
                                  torch.cat(targets), config))
    return {k: float(v) for k, v in metrics.items()}


def _calibrate(model: LSSModel, logits: torch.Tensor, paths: torch.Tensor, sagittal_logits: torch.Tensor,
               targets: torch.Tensor, config: LSSConfig) -> dict[str, float]:
    """Fits ``model.calibration`` on both passes' validation logits (N, 3) and returns its metrics."""
    from lss.metrics import severity_metrics
    from lss.model.calibration import fit_calibration

    calibration = fit_calibration(torch.cat([logits, sagittal_logits]), torch.cat([targets, targets]),
                                  torch.cat([paths, torch.zeros_like(paths)]),
                                  target_accuracy=config.train.abstain_target_accuracy,
                                  min_coverage=config.train.abstain_min_coverage)
    model.calibration = calibration
    if calibration.note:
        logger.info("calibration: %s", calibration.note)
    metrics = {f"val_calibration_{k}": v for k, v in calibration.metrics().items()}
    sagittal = severity_metrics(calibration.probabilities(sagittal_logits).numpy(), targets.numpy())
    metrics.update({f"val_sagittal_only_{k}": sagittal[k] for k in ("accuracy", "balanced_accuracy", "ece")})
    return metrics


def _loss_state(loss: torch.nn.Module) -> dict[str, Any]:
    return loss.state_dict()


def _alpha_beta_metrics(name: str, loss: torch.nn.Module) -> dict[str, float]:
    if not loss.has_controller():
        return {}
    alpha, beta = loss.alpha_beta()
    names = [s.value for s in Structure]
    if len(beta) == len(names) - 1:
        names = names[1:]
    out = {}
    for structure, a, b in zip(names, alpha.tolist(), beta.tolist(), strict=True):
        out[f"alpha_{name}_{structure}"] = float(a)
        out[f"beta_{name}_{structure}"] = float(b)
    return out


def _input_range(paths: list[Path]):
    """``lss.model.input_range.InputRange`` of the mid-sagittal slices of the training cases (unaugmented)."""
    from lss.data.cases import load_case
    from lss.model.input_range import fit_input_range, image_statistics

    rows = []
    for path in paths:
        image = load_case(path)["sagittal_image"]
        rows.append(image_statistics(np.asarray(image[image.shape[0] // 2], dtype=np.float32)))
    return fit_input_range(rows)


def severity_class_weights(name: str, parts: list[CaseDataset]) -> str | tuple[float, ...]:
    """The severity loss's class weights: "rsna", or ("balanced") each grade's inverse frequency among the graded
    levels of the training studies, ``n / (K * n_grade)``; a grade no level has gets weight 1.

    Raises:
        ValueError: for an unknown name.
    """
    if name == "rsna":
        return "rsna"
    if name != "balanced":
        raise ValueError(f"severity_class_weights must be 'rsna' or 'balanced', got {name!r}.")
    grades = np.array([g for part in parts for study in part.severities for g in study], dtype=int)
    counts = np.bincount(grades[grades >= 0], minlength=len(SEVERITIES)).astype(float)
    if counts.sum() == 0:
        return (1.0,) * len(SEVERITIES)
    return tuple(float(counts.sum() / (len(SEVERITIES) * c)) if c else 1.0 for c in counts)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker.

    Args:
        loop_config: {"config": LSSConfig as a dict, "data_dir": preprocessed folder, "split": {"train", "val"}
            study ids, "log_dir": TensorBoard folder, "history_path": a JSON-lines file rank 0 appends each epoch's
            metrics to, "mix": the ``train.mix`` sources as ``lss.training.data.mix_splits`` gives them}.
    """
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    config = LSSConfig.model_validate(loop_config["config"])
    train_cfg = config.train
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(train_cfg.seed)
    np.random.seed(train_cfg.seed + rank)
    device = ray.train.torch.get_device()

    # [1] Model, losses (one PID-Tversky per view: their classes are balanced differently), optimiser.
    model = build_model(config.model, config.preprocess.axial_slices, config.preprocess.axial_spacing_mm)
    level_slice = model.prompts.level_slice
    seg_sagittal = build_segmentation_loss(config.loss, NUM_STRUCTURES)
    seg_axial = build_segmentation_loss(config.loss, NUM_STRUCTURES)
    localise = AttentionLocalisationLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)

    # [2] Data: cached cases. One dataset: shuffled and sharded across workers by prepare_data_loader's distributed
    # sampler. Several (train.mix): each worker draws from their concatenation by the configured weights.
    augment = None
    if train_cfg.augment:
        augment = TrainingAugment(spatial=train_cfg.augment_spatial, intensity=True)
        augment.set_random_state(train_cfg.seed * 100 + rank)
    slices = config.model.sagittal_slices
    sources = [{"data_dir": loop_config["data_dir"], "split": loop_config["split"], "weight": train_cfg.main_weight}]
    sources += list(loop_config.get("mix") or [])
    train_parts = [CaseDataset(s["data_dir"], s["split"]["train"], slices, augment) for s in sources
                   if s["split"]["train"]]
    val_parts = [CaseDataset(s["data_dir"], s["split"]["val"], slices) for s in sources if s["split"]["val"]]
    train_set = torch.utils.data.ConcatDataset(train_parts)
    severity_loss = SeverityLoss(weights=severity_class_weights(train_cfg.severity_class_weights, train_parts))
    # The training images' statistics travel with the model: inference refuses an input far outside them.
    model.input_range = _input_range([path for part in train_parts for path in part.paths])
    val_set = torch.utils.data.ConcatDataset(val_parts) if val_parts else train_parts[0]
    mixture = None
    if len(train_parts) > 1:
        world = context.get_world_size()
        mixture = MixtureSampler([len(p) for p in train_parts],
                                 [s["weight"] for s in sources if s["split"]["train"]],
                                 num_samples=max(len(train_set) // world, train_cfg.batch_size), seed=train_cfg.seed,
                                 rank=rank)
        loader = torch.utils.data.DataLoader(train_set, batch_size=train_cfg.batch_size, sampler=mixture,
                                             collate_fn=collate_samples, drop_last=True)
        loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    else:
        loader = torch.utils.data.DataLoader(train_set, batch_size=train_cfg.batch_size, shuffle=True,
                                             collate_fn=collate_samples,
                                             drop_last=len(train_set) > train_cfg.batch_size)
        loader = ray.train.torch.prepare_data_loader(loader)
    steps_per_epoch = min(len(loader), train_cfg.steps_per_epoch or len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps_per_epoch * train_cfg.epochs, 1))
    # With use_axial off the axial branch never runs: under DDP its parameters get no gradient, which the reducer
    # refuses unless it looks for unused parameters. With it on, every branch runs (absent or dropped axial levels
    # are masked, not skipped), and looking would only cost a graph traversal per step.
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": not train_cfg.use_axial})
    for loss in (seg_sagittal, seg_axial):
        loss.to(device)
    use_amp = bool(train_cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # [3] Resume from the last checkpoint after a failure (or a restart of the run).
    start_epoch, best, best_epoch, resumed = 1, float("-inf"), 0, False
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        seg_sagittal.load_state_dict(state["seg_sagittal"])
        seg_axial.load_state_dict(state["seg_axial"])
        start_epoch, best, resumed = state["epoch"] + 1, state["best"], True
        best_epoch = state.get("best_epoch", state["epoch"])

    writer = None
    if rank == 0 and loop_config.get("log_dir"):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(loop_config["log_dir"])

    global_step = (start_epoch - 1) * steps_per_epoch
    drop_rng = torch.Generator()
    dropping = train_cfg.use_axial and (train_cfg.axial_dropout > 0 or train_cfg.axial_study_dropout > 0)
    for epoch in range(start_epoch, train_cfg.epochs + 1):
        drop_rng.manual_seed(train_cfg.seed * 1_000_003 + rank * 10_007 + epoch)  # the same after a resume
        sampler = mixture or getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        seg_sagittal.train()
        seg_axial.train()
        sums: dict[str, float] = {}
        steps = 0
        started = time.perf_counter()
        for batch in loader:
            if steps >= steps_per_epoch:
                break
            batch = _to(batch, device)
            if dropping:  # the sagittal-only path: the head does not see these levels' axial input
                batch["axial_present"] = drop_axial(batch["axial_present"], train_cfg.axial_dropout,
                                                    train_cfg.axial_study_dropout, drop_rng)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                out = model(batch["sagittal"], batch["axial"] if train_cfg.use_axial else None,
                            batch["axial_present"] if train_cfg.use_axial else None)
                terms = compute_losses(out, batch, seg_sagittal, seg_axial, severity_loss, localise, config,
                                       level_slice)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            steps += 1
            global_step += 1
            if train_cfg.fail_at_epoch == epoch - 1 and rank == 0 and not resumed:
                # Fault injection (tests): mid-epoch, after the previous epoch's checkpoint was reported, this
                # worker process dies as if killed (the pause lets the controller register that checkpoint).
                time.sleep(2.0)
                os.kill(os.getpid(), signal.SIGKILL)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        train_seconds = time.perf_counter() - started
        for loss in (seg_sagittal, seg_axial):
            if config.loss.name == "pid_tversky" and config.loss.update == "epoch":
                loss.end_epoch()
            loss.eval()

        metrics: dict[str, float] = {"epoch": epoch, "lr": scheduler.get_last_lr()[0], "steps": steps,
                                     "start_epoch": start_epoch, "train_seconds": train_seconds}
        if seg_sagittal.has_controller():
            metrics["pid_updates_sagittal"] = int(seg_sagittal.controller.steps)
        metrics.update({f"train_{k}": v / max(steps, 1) for k, v in sums.items()})
        metrics.update(_alpha_beta_metrics("sagittal", seg_sagittal))
        metrics.update(_alpha_beta_metrics("axial", seg_axial))
        # Calibrated on the validation split only: without one, validate() runs on training data, which would make
        # an overconfident model look calibrated, so the model keeps the identity calibration.
        metrics.update(validate(_unwrap(model), val_set, config, device, rank=rank, world=context.get_world_size(),
                                calibrate=bool(val_parts)))
        if not val_parts:
            _unwrap(model).calibration = SeverityCalibration(
                note="no validation split: identity calibration (T = 1 on both paths, no abstention).")
            metrics.update({f"val_calibration_{k}": v for k, v in _unwrap(model).calibration.metrics().items()})
        # Every rank sees the same gathered validation score, so every rank reaches the same stopping decision.
        score = metrics.get("val_dice_macro", float("nan"))
        if np.isfinite(score) and score > best + (train_cfg.early_stopping_min_delta if best_epoch else 0.0):
            best, best_epoch = score, epoch
        metrics["best_val_dice_macro"] = best
        metrics["best_epoch"] = best_epoch
        patience = train_cfg.early_stopping_patience
        stop = patience is not None and epoch - best_epoch >= patience and epoch < train_cfg.epochs
        metrics["early_stopped"] = bool(stop)

        if rank == 0 and loop_config.get("history_path"):
            with open(loop_config["history_path"], "a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        if writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and np.isfinite(value) and key != "epoch":
                    writer.add_scalar(key.replace("_", "/", 1), value, epoch)
            writer.flush()

        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            if rank == 0:
                torch.save({
                    "model": _unwrap(model).state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "seg_sagittal": _loss_state(seg_sagittal),
                    "seg_axial": _loss_state(seg_axial),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "config": config.model_dump(mode="json"),
                }, Path(folder) / STATE_FILE)
                save_model(_unwrap(model), Path(folder) / MODEL_FILE, extra={"epoch": epoch, "metrics": metrics})
                report_checkpoint = Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        if stop:
            if rank == 0:
                logger.info("early stopping after epoch %d: no gain over %.4f (epoch %d) for %d epochs",
                            epoch, best, best_epoch, patience)
            break

    if writer is not None:
        writer.close()

