"""Hyperparameter search with Ray Tune: Optuna's TPE proposes the PID-Tversky gains, the loss weights and the
learning rate; ASHA stops weak trials early; each trial is one Ray Train run.

    summary = run_tuning(load_config(), "outputs/demo/preprocessed", name="pid_sweep")
    summary.best_config      # {"kp": 0.04, "ki": 0.0, "kd": 0.002, "beta": 0.61, ...}
    summary.table_path       # <tune.storage_path>/pid_sweep/results.md

Ray Train V2 inside Ray Tune (Ray docs, "Hyperparameter Tuning with Ray Tune", train/user-guides/
hyperparameter-optimization): the Tune trial is a plain function that builds the run's ``TorchTrainer``
(``lss.training.make_trainer``) and fits it. The trial only drives the run; the Train workers do the work, with
``train.cpus_per_worker`` each. ``TuneReportCallback`` forwards every epoch's report (rank 0's metrics, which hold
the validation scores) to Tune, so the searcher and the scheduler see ``tune.metric`` once per epoch. A trial
that ASHA stops is killed with its run: ``ReleaseStoppedRuns`` frees the CPUs its workers held.

Folders, under ``<tune.storage_path>/<name>/``: Tune's trial folders and experiment state, ``train_runs/trial_<id>``
(each trial's Ray Train run: checkpoints with the PID state), ``split.json``, ``results.md``, ``results.json`` and
the figures.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from lss.config import LSSConfig
from lss.ray_session import init_ray
from lss.training.data import load_split, write_split
from lss.training.trainer import make_trainer, storage_uri
from lss.tuning.report import format_best, trial_row, write_report

__all__ = ["TuneSummary", "run_tuning", "pid_tversky_config", "search_space", "trial_settings", "apply_trial",
           "smoke_config", "make_smoke_dataset", "train_run", "release_orphaned_placement_groups",
           "ReleaseStoppedRuns", "GAINS", "TRAIN_RUNS"]

logger = logging.getLogger(__name__)

GAINS: tuple[str, ...] = ("kp", "ki", "kd")
GAIN_LOG10_RANGE = (-3.0, 0.0)  # a gain that is on lies in [1e-3, 1]
BETA_RANGE = (0.3, 0.8)
BETA_LOW_RANGE = (0.1, 0.4)
BETA_HIGH_RANGE = (0.7, 0.95)
FOCAL_GAMMA_RANGE = (1.0, 2.0)
LEARNING_RATE_RANGE = (3e-4, 5e-3)
# A trial only drives its Train run (the workers hold train.cpus_per_worker each). Tune rejects a zero request,
# and its default (1 CPU) would leave nothing for the worker on a 2-CPU machine.
TRIAL_CPUS = 0.01
TRAIN_RUNS = "train_runs"
SPLIT_FILE = "split.json"


@dataclass
class TuneSummary:
    """What a sweep found and where it wrote it.

    Attributes:
        best_config: the best trial's settings (``kp``, ``ki``, ``kd``, ``beta``, ``alpha``, ``beta_bounds``,
            ``focal_gamma``, ``learning_rate``) and ``overrides``, the same as ``--set`` strings for ``lss train``.
        best_metric: the best trial's best ``tune.metric`` over its epochs.
        table_path: ``results.md`` (``results.json`` lies beside it).
        plots: figure name -> PNG path.
        trials: one dict per trial (see ``lss.tuning.report.trial_row``).
        experiment_dir: the sweep's folder (a path, or a URI for remote storage).
        restored: whether this call continued an existing sweep instead of starting one.
    """

    best_config: dict[str, Any]
    best_metric: float
    table_path: Path | str
    plots: dict[str, Path | str]
    trials: list[dict[str, Any]] = field(default_factory=list)
    experiment_dir: Path | str = ""
    restored: bool = False


def search_space() -> dict[str, Any]:
    """The Tune search space (converted to Optuna distributions by ``OptunaSearch``).

    Optuna's log-uniform cannot include 0 and ``OptunaSearch`` cannot nest a distribution in ``tune.choice``, so
    each gain is two parameters: ``<gain>_on`` (a categorical) and ``<gain>_log10`` (uniform over
    ``GAIN_LOG10_RANGE``); the gain is ``10 ** <gain>_log10`` when on and 0 when off. TPE models both, so it can
    learn that a term is better off as well as its scale. The beta bounds are drawn as fractions and mapped by
    ``trial_settings`` so that ``low <= beta <= high <= alpha + beta = 1`` holds by construction.
    """
    space: dict[str, Any] = {}
    for gain in GAINS:
        space[f"{gain}_on"] = tune.choice([True, False])
        space[f"{gain}_log10"] = tune.uniform(*GAIN_LOG10_RANGE)
    space["beta"] = tune.uniform(*BETA_RANGE)
    space["beta_low_frac"] = tune.uniform(0.0, 1.0)
    space["beta_high_frac"] = tune.uniform(0.0, 1.0)
    space["focal_gamma"] = tune.uniform(*FOCAL_GAMMA_RANGE)
    space["learning_rate"] = tune.loguniform(*LEARNING_RATE_RANGE)
    return space


def trial_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The loss and optimiser settings of a trial from its sampled parameters (see ``search_space``).

    The low bound is drawn in ``[BETA_LOW_RANGE[0], min(BETA_LOW_RANGE[1], beta)]`` and the high bound in
    ``[max(BETA_HIGH_RANGE[0], beta), BETA_HIGH_RANGE[1]]``; alpha = 1 - beta.

    Raises:
        KeyError: when a parameter of ``search_space`` is missing.
    """
    settings: dict[str, Any] = {gain: 10.0 ** float(params[f"{gain}_log10"]) if params[f"{gain}_on"] else 0.0
                                for gain in GAINS}
    beta = float(params["beta"])
    low_top = min(BETA_LOW_RANGE[1], beta)
    high_bottom = max(BETA_HIGH_RANGE[0], beta)
    low = BETA_LOW_RANGE[0] + float(params["beta_low_frac"]) * (low_top - BETA_LOW_RANGE[0])
    high = high_bottom + float(params["beta_high_frac"]) * (BETA_HIGH_RANGE[1] - high_bottom)
    settings.update(beta=beta, alpha=1.0 - beta, beta_bounds=[low, high], focal_gamma=float(params["focal_gamma"]),
                    learning_rate=float(params["learning_rate"]))
    return settings


def _overrides(settings: dict[str, Any]) -> list[str]:
    low, high = settings["beta_bounds"]
    loss = [f"loss.{key}={settings[key]:.6g}" for key in (*GAINS, "alpha", "beta", "focal_gamma")]
    return [*loss, f"loss.beta_bounds=[{low:.6g}, {high:.6g}]", f"train.learning_rate={settings['learning_rate']:.6g}"]


def apply_trial(config: LSSConfig, settings: dict[str, Any]) -> LSSConfig:
    """``config`` with a trial's settings in ``loss`` and ``train.learning_rate`` (validated)."""
    data = config.model_dump(mode="json")
    data["loss"].update({key: settings[key] for key in (*GAINS, "alpha", "beta", "focal_gamma")})
    data["loss"]["beta_bounds"] = list(settings["beta_bounds"])
    data["train"]["learning_rate"] = settings["learning_rate"]
    return LSSConfig.model_validate(data)


def smoke_config(config: LSSConfig) -> LSSConfig:
    """``config`` capped to finish in a few minutes on 2 CPU cores; smaller settings are kept.

    At most 3 trials of 2 epochs of 2 steps of batch 2, one Train worker of at most half a CPU, a small model
    (base_channels 8, attention_dim 32), the sagittal branch only. The text encoder is the configured one (the
    default MiniLM is frozen and its prompts are embedded once per run).
    """
    data = config.model_dump(mode="json")
    train, model = config.train, config.model
    data["tune"]["num_samples"] = min(config.tune.num_samples, 3)
    data["train"].update(epochs=min(train.epochs, 2), steps_per_epoch=min(train.steps_per_epoch or 2, 2),
                         batch_size=min(train.batch_size, 2), num_workers=1, use_axial=False,
                         cpus_per_worker=min(train.cpus_per_worker, 0.5))
    data["model"].update(base_channels=min(model.base_channels, 8), attention_dim=min(model.attention_dim, 32))
    return LSSConfig.model_validate(data)


def make_smoke_dataset(config: LSSConfig, name: str, cases: int = 8) -> Path:
    """A small labelled synthetic set for a smoke sweep without data, made and preprocessed in this process.

    It goes to ``<tune.storage_path>/<name>_data/`` (``synth/`` -> ``preprocessed/``, reused when there).

    Returns:
        The preprocessed folder.

    Raises:
        ValueError: when ``tune.storage_path`` is a URI (the set is written with local file I/O).
    """
    from lss.config import PreprocessConfig, SynthConfig
    from lss.data.cases import INDEX_NAME
    from lss.data.synth.generate import generate_dataset
    from lss.preprocessing.pipeline import run_preprocessing

    if "://" in config.tune.storage_path:
        raise ValueError(f"a smoke dataset needs a local tune.storage_path, got {config.tune.storage_path!r}; "
                         f"pass a preprocessed folder instead.")
    root = Path(storage_uri(config.tune.storage_path)) / f"{name}_data"
    out = root / "preprocessed"
    if (out / INDEX_NAME).is_file():
        return out
    synth = SynthConfig(cases=cases, seed=config.synth.seed, format="nifti", sagittal_inplane_mm=(0.9, 0.9),
                        axial_inplane_mm=(0.9, 0.9), through_slice_samples=1, class_balance="uniform")
    generate_dataset(synth, root / "synth")
    run_preprocessing(root / "synth", out, PreprocessConfig(), engine="serial")
    return out


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def train_run(params: dict[str, Any], base: dict[str, Any], data_dir: str, split: dict[str, list[str]],
              runs_dir: str) -> None:
    """One Tune trial: a Ray Train run with the trial's settings, its reports forwarded to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    config = apply_trial(LSSConfig.model_validate(base), trial_settings(params))
    config.train.storage_path = runs_dir
    # The run name holds the trial id only: a restarted trial finds its Train run (and its last checkpoint) again.
    trainer = make_trainer(config, data_dir, f"trial_{tune.get_context().get_trial_id()}", split)
    # make_trainer has no callbacks argument: attach Tune's reporter to the run's RunConfig before fitting.
    trainer.run_config.callbacks = [*(trainer.run_config.callbacks or []), TuneReportCallback()]
    trainer.fit()


def release_orphaned_placement_groups() -> tuple[int, int]:
    """Removes this job's placement groups whose creating actor is dead.

    A Train run's workers live in a placement group made by its controller actor. When Tune stops a trial early,
    the trial actor and its controller die without shutting the run down; Ray Train V2 leaves the clean-up to a
    ``PlacementGroupCleaner`` actor that asks the State API whether the controller lives. Without the dashboard
    (the embedded local Ray) or with several Ray instances on one machine that query fails, and the group keeps
    its CPUs until the sweep's driver exits: on 2 CPUs the next trials would wait for ever. A group made by an
    actor that is now dead has no user left, so removing it is safe (groups the driver made, such as Tune's own
    trial groups, are never touched). Reads the GCS table through Ray internals (Ray is pinned).

    Returns:
        (removed, live): groups removed now, and groups of this job still held by a live actor.
    """
    import ray
    from ray._private.state import state
    from ray._raylet import ActorID, PlacementGroupID
    from ray.core.generated.gcs_pb2 import PlacementGroupTableData
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    removed = live = 0
    for hex_id, entry in ray.util.placement_group_table().items():
        if entry["state"] == "REMOVED" or not hex_id.endswith(job):  # a group's id ends with its job's id
            continue
        group_id = PlacementGroupID(bytes.fromhex(hex_id))
        data = PlacementGroupTableData.FromString(state._global_state_accessor.get_placement_group_info(group_id))
        made_by_actor = bool(data.creator_actor_id) and not ActorID(data.creator_actor_id).is_nil()
        if not made_by_actor or data.is_detached or data.creator_job_id.hex() != job:
            continue  # the driver's own groups (Tune's trials) and detached ones are left alone
        if not data.creator_actor_dead:
            live += 1
            continue
        remove_placement_group(PlacementGroup(group_id))
        removed += 1
    if removed:
        logger.info("tune: released %d placement group(s) of stopped Train runs", removed)
    return removed, live


class ReleaseStoppedRuns(tune.Callback):
    """A Tune callback: ``release_orphaned_placement_groups`` every ``interval_s`` of the tuning loop, and at the
    end of the sweep until the last stopped run's controller is gone (at most ``end_wait_s``)."""

    def __init__(self, interval_s: float = 2.0, end_wait_s: float = 15.0):
        self.interval_s, self.end_wait_s = interval_s, end_wait_s
        self._last, self._failed = 0.0, False

    def _release(self) -> int:
        if self._failed:
            return 0
        try:
            return release_orphaned_placement_groups()[1]
        except Exception as error:  # noqa: BLE001 - Ray's internals moved: say so once, leave it to Ray
            self._failed = True
            logger.warning("tune: cannot release the placement groups of stopped runs (%s)", error)
            return 0

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            self._release()

    def on_experiment_end(self, trials: list, **info) -> None:
        deadline = time.monotonic() + self.end_wait_s
        while self._release() and time.monotonic() < deadline:
            time.sleep(0.5)


def _brief(error: BaseException | None) -> str | None:
    """The last line of an error (a trial's error carries the whole remote traceback), at most 300 characters."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _params(result) -> dict[str, Any] | None:
    """A trial's sampled parameters; read from its params.json when it failed before reporting anything."""
    if result.config:
        return result.config
    try:
        with result.filesystem.open_input_stream(f"{result.path}/params.json") as handle:
            return json.loads(handle.read().decode())
    except (OSError, ValueError):
        return None


def _history(result) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    keep = [c for c in frame.columns if c in ("epoch", "training_iteration") or c.startswith(("val_", "best_val_",
                                                                                              "alpha_", "beta_"))]
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in frame[keep].to_dict("records"):
        epoch = row.get("epoch", row.get("training_iteration"))
        if epoch is not None and not (isinstance(epoch, float) and math.isnan(epoch)):
            by_epoch[int(epoch)] = row  # an epoch re-run after a worker failure reports twice: the last wins
    return [by_epoch[e] for e in sorted(by_epoch)]


def pid_tversky_config(config: LSSConfig) -> LSSConfig:
    """The config a sweep trains with: the PID-Tversky loss, whose gains and bounds it searches. The default loss
    (Dice + CE, which the ablation found better and steadier) is replaced; a loss chosen explicitly is an error.

    Raises:
        ValueError: when ``loss.name`` was set to a loss other than "pid_tversky".
    """
    if config.loss.name == "pid_tversky":
        return config
    if "name" in config.loss.model_fields_set:
        raise ValueError(f"tuning searches the PID-Tversky loss; loss.name must be 'pid_tversky', got "
                         f"{config.loss.name!r}.")
    return config.model_copy(update={"loss": config.loss.model_copy(update={"name": "pid_tversky"})})


def run_tuning(config: LSSConfig, data_dir: str | Path, name: str = "tune", smoke: bool = False,
               resume: bool = True) -> TuneSummary:
    """Runs (or continues) a sweep over the PID-Tversky loss and the learning rate; writes the results table.

    Args:
        config: the base configuration; trials change ``loss.kp/ki/kd/alpha/beta/beta_bounds/focal_gamma`` and
            ``train.learning_rate``. ``tune`` sets the samples, the concurrency, the metric, the mode, the seed of
            the TPE sampler and the storage path; ASHA's budget is ``train.epochs``.
        data_dir: a preprocessed folder with labelled cases (split by ``train.split_seed`` as in ``run_training``).
        name: the sweep's folder under ``tune.storage_path``.
        smoke: cap the sizes (see ``smoke_config``) to finish in a few minutes on 2 CPU cores.
        resume: when ``<storage>/<name>`` holds a sweep, continue it (``Tuner.restore``): finished trials are
            kept, unfinished and errored ones run again; no trial beyond the saved ``num_samples`` is added.

    Returns:
        The best settings and metric, the results table, the figures and one row per trial.

    Raises:
        ValueError: when ``loss.name`` was set to another loss (the gains and bounds would do nothing).
        FileExistsError: when the sweep exists and ``resume`` is False.
        RuntimeError: when no trial reported ``tune.metric``.
    """
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    config = pid_tversky_config(config)
    if smoke:
        config = smoke_config(config)
    init_ray(config.ray)
    data_dir = Path(data_dir).resolve()  # trials run in their own working directory
    split = load_split(data_dir, config.train.val_fraction, config.train.test_fraction, config.train.split_seed)
    storage = storage_uri(config.tune.storage_path)
    experiment = _join(storage, name)
    local = "://" not in experiment
    metric, mode = config.tune.metric, config.tune.mode

    # [1] The trial function, its fixed arguments (put once in the object store) and its resources.
    trainable = tune.with_resources(
        tune.with_parameters(train_run, base=config.model_dump(mode="json"), data_dir=str(data_dir),
                             split=split, runs_dir=_join(experiment, TRAIN_RUNS)),
        {"CPU": TRIAL_CPUS},
    )

    # [2] Continue the sweep in the storage folder, or start one. metric and mode are given once, to TuneConfig,
    #     which hands them to the searcher and the scheduler.
    restored = bool(resume and tune.Tuner.can_restore(experiment))
    if restored:
        logger.info("tune: continuing the sweep in %s", experiment)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if tune.Tuner.can_restore(experiment):
            raise FileExistsError(f"{experiment} already holds a sweep; continue it (resume=True) or choose another "
                                  f"name.")
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=config.tune.seed)),
                # stop_last_trials=False: a trial that reaches max_t ends by itself, so its Train run shuts down
                # cleanly instead of being killed after its last report.
                scheduler=ASHAScheduler(time_attr="epoch", max_t=config.train.epochs, grace_period=1,
                                        reduction_factor=2, stop_last_trials=False),
                num_samples=config.tune.num_samples,
                max_concurrent_trials=config.tune.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1, callbacks=[ReleaseStoppedRuns()]),
        )
        logger.info("tune: %d trials (%d at a time), %d epochs each at most -> %s", config.tune.num_samples,
                    config.tune.max_concurrent_trials, config.train.epochs, experiment)
    if local:
        write_split(split, Path(experiment) / SPLIT_FILE)
    grid = tuner.fit()

    # [3] One row per trial from Tune's per-epoch results, the best trial, the table and the figures.
    trials = []
    for result in grid:
        params = _params(result)
        settings = trial_settings(params) if params else None
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        trials.append(trial_row(str(trial_id), settings, _history(result), metric, mode, error=_brief(result.error)))
    scored = [t for t in trials if t["best_metric"] is not None]
    sign = -1.0 if mode == "max" else 1.0
    trials.sort(key=lambda t: (t["best_metric"] is None, sign * (t["best_metric"] or 0.0), t["trial_id"]))
    if not scored:
        errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t["error"]) or "none"
        raise RuntimeError(f"no trial of {experiment} reported {metric!r} (errors: {errors}).")
    best = (max if mode == "max" else min)(scored, key=lambda t: t["best_metric"])
    best_config = {key: best[key] for key in (*GAINS, "beta", "alpha", "beta_bounds", "focal_gamma",
                                              "learning_rate")}
    best_config["overrides"] = _overrides(best_config)
    best_config["trial_id"] = best["trial_id"]
    views = ("sagittal", "axial") if config.train.use_axial else ("sagittal",)
    table_path, plots = write_report(trials, best["trial_id"], metric, mode, experiment, views)
    summary = TuneSummary(best_config=best_config, best_metric=best["best_metric"], table_path=table_path,
                          plots=plots, trials=trials, experiment_dir=Path(experiment) if local else experiment,
                          restored=restored)
    print(format_best(summary.best_config, metric, summary.best_metric), flush=True)
    return summary
