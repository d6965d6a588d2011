"""lss.tuning: the search space (gains that can be 0, beta bounds that hold by construction), the report, and a
real sweep on a real local Ray (Optuna + ASHA over Ray Train runs), continued instead of restarted."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from PIL import Image

from conftest import REPO_ROOT
from lss.config import LSSConfig
from lss.tuning import (
    GAINS,
    apply_trial,
    plot_gains,
    run_tuning,
    search_space,
    smoke_config,
    trial_row,
    trial_settings,
    write_report,
)
from lss.tuning.report import PLOTS, RESULTS_JSON, RESULTS_MD


def _params(**overrides):
    params = {"kp_on": True, "kp_log10": -1.0, "ki_on": True, "ki_log10": -2.0, "kd_on": False, "kd_log10": -0.5,
              "beta": 0.5, "beta_low_frac": 0.5, "beta_high_frac": 0.5, "focal_gamma": 1.5, "learning_rate": 1e-3}
    return {**params, **overrides}


# (on, log10, expected gain): a gain is 10 ** log10 when on, exactly 0 when off.
GAIN_CASES = [(True, -3.0, 1e-3), (True, 0.0, 1.0), (True, -1.5, 10**-1.5), (False, -1.0, 0.0), (False, -3.0, 0.0)]

# (beta, low fraction, high fraction, expected (low, high)): low <= beta <= high <= 1 = alpha + beta.
BOUND_CASES = [
    (0.3, 0.0, 0.0, (0.1, 0.7)),
    (0.3, 1.0, 1.0, (0.3, 0.95)),  # the low bound's range stops at beta
    (0.8, 1.0, 0.0, (0.4, 0.8)),  # the high bound's range starts at beta
    (0.5, 0.5, 0.5, (0.25, 0.825)),
]


@pytest.mark.parametrize("on, log10, expected", GAIN_CASES)
@pytest.mark.parametrize("gain", GAINS)
def test_gains_include_zero(gain, on, log10, expected):
    settings = trial_settings(_params(**{f"{gain}_on": on, f"{gain}_log10": log10}))
    assert settings[gain] == pytest.approx(expected, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("beta, low_frac, high_frac, bounds", BOUND_CASES)
def test_beta_bounds_hold_by_construction(beta, low_frac, high_frac, bounds):
    settings = trial_settings(_params(beta=beta, beta_low_frac=low_frac, beta_high_frac=high_frac))
    assert settings["beta_bounds"] == pytest.approx(list(bounds))
    assert settings["alpha"] == pytest.approx(1.0 - beta)
    config = apply_trial(LSSConfig(), settings)  # the loss's own validator accepts it
    assert config.loss.beta_bounds == pytest.approx(bounds) and config.loss.alpha + config.loss.beta == 1.0


def test_search_space_converts_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray.tune.search.optuna import OptunaSearch

    space = search_space()
    assert set(space) == {*(f"{g}_{p}" for g in GAINS for p in ("on", "log10")), "beta", "beta_low_frac",
                          "beta_high_frac", "focal_gamma", "learning_rate"}
    distributions = dict(OptunaSearch.convert_search_space(space))
    for gain in GAINS:
        assert isinstance(distributions[f"{gain}_on"], CategoricalDistribution)
        assert (distributions[f"{gain}_log10"].low, distributions[f"{gain}_log10"].high) == (-3.0, 0.0)
    lr = distributions["learning_rate"]
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (3e-4, 5e-3)
    assert (distributions["beta"].low, distributions["beta"].high) == (0.3, 0.8)
    assert (distributions["focal_gamma"].low, distributions["focal_gamma"].high) == (1.0, 2.0)


def test_apply_trial_sets_the_loss_and_learning_rate():
    settings = trial_settings(_params())
    config = apply_trial(LSSConfig(), settings)
    assert (config.loss.kp, config.loss.ki, config.loss.kd) == pytest.approx((0.1, 0.01, 0.0))
    assert config.loss.focal_gamma == 1.5 and config.train.learning_rate == 1e-3


def test_smoke_config_caps_sizes_and_keeps_smaller_ones():
    small = smoke_config(LSSConfig())
    assert (small.tune.num_samples, small.train.epochs, small.train.steps_per_epoch, small.train.batch_size) == (
        3, 2, 2, 2)
    assert (small.model.base_channels, small.model.attention_dim, small.train.use_axial) == (8, 32, False)
    assert small.train.cpus_per_worker == 0.5 and small.model.text_encoder == LSSConfig().model.text_encoder
    kept = smoke_config(LSSConfig.model_validate({"train": {"epochs": 1, "steps_per_epoch": 1},
                                                  "tune": {"num_samples": 2}}))
    assert (kept.train.epochs, kept.train.steps_per_epoch, kept.tune.num_samples) == (1, 1, 2)


def test_run_tuning_needs_the_pid_tversky_loss(tmp_path):
    config = LSSConfig.model_validate({"loss": {"name": "dice_ce"}})
    with pytest.raises(ValueError, match="pid_tversky"):
        run_tuning(config, tmp_path)


def test_a_sweep_trains_the_pid_tversky_loss_when_the_loss_was_left_at_its_default():
    from lss.config import load_config
    from lss.tuning import pid_tversky_config

    default = load_config(overrides=["loss.kp=0.3"])
    assert default.loss.name == "dice_ce"
    swept = pid_tversky_config(default)
    assert (swept.loss.name, swept.loss.kp) == ("pid_tversky", 0.3)
    assert pid_tversky_config(swept) is swept
    with pytest.raises(ValueError, match="pid_tversky"):
        pid_tversky_config(load_config(overrides=["loss.name=tversky"]))


def _history(scores, beta0=0.5):
    return [{"epoch": e, "val_dice_macro": s, "beta_sagittal_disc": beta0 + 0.01 * e,
             "alpha_sagittal_disc": 1 - beta0 - 0.01 * e} for e, s in enumerate(scores, start=1)]


def test_trial_row_best_epoch_and_final_beta():
    row = trial_row("a", trial_settings(_params()), _history([0.2, float("nan"), 0.5, 0.4]), "val_dice_macro", "max")
    assert (row["best_metric"], row["best_epoch"], row["epochs"], row["status"]) == (0.5, 3, 4, "ok")
    assert row["final_beta"] == {"disc": pytest.approx(0.54)} and row["kd"] == 0.0
    low = trial_row("b", None, _history([0.2, 0.1]), "val_dice_macro", "min", error="boom")
    assert (low["best_metric"], low["best_epoch"], low["status"], low["kp"]) == (0.1, 2, "error", None)
    empty = trial_row("c", None, [], "val_dice_macro", "max", error="died")
    assert (empty["best_metric"], empty["epochs"], empty["final_beta"]) == (None, 0, {})
    with pytest.raises(ValueError, match="'min' or 'max'"):
        trial_row("d", None, [], "val_dice_macro", "best")


def test_write_report_files(tmp_path):
    trials = [
        trial_row("on", trial_settings(_params()), _history([0.3, 0.6]), "val_dice_macro", "max"),
        trial_row("off", trial_settings(_params(kp_on=False, ki_on=False)), _history([0.4]), "val_dice_macro", "max"),
        trial_row("failed", None, [], "val_dice_macro", "max", error="RuntimeError: no"),
    ]
    table, plots = write_report(trials, "on", "val_dice_macro", "max", tmp_path, views=("sagittal",))
    assert table == tmp_path / RESULTS_MD and set(plots) == set(PLOTS)
    for path in plots.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300
    text = table.read_text()
    assert "| **on** |" in text and "RuntimeError: no" in text and "final beta disc" in text
    results = json.loads((tmp_path / RESULTS_JSON).read_text())
    assert results["best_trial"] == "on" and [t["trial_id"] for t in results["trials"]] == ["on", "off", "failed"]
    assert results["trials"][2]["best_metric"] is None  # strict JSON: no NaN
    assert plot_gains([], tmp_path / "empty.png", "val_dice_macro").is_file()


def test_cli_and_job_need_data_without_smoke(capsys):
    from lss.cli import main

    assert main(["tune"]) == 2
    assert "--data is required" in capsys.readouterr().err
    spec = importlib.util.spec_from_file_location("tune_job", REPO_ROOT / "jobs" / "tune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(SystemExit) as raised:
        job.main([])
    assert raised.value.code == 2


# A real sweep: 2 trials of at most 2 epochs on 2 tiny studies, on the session's local Ray (2 CPUs).


@pytest.fixture(scope="module")
def preprocessed(preprocessed_nifti):
    return preprocessed_nifti


@pytest.fixture(scope="module")
def sweep(ray_session, preprocessed, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tune")
    config = LSSConfig.model_validate({
        "model": {"text_encoder": "random-small"},
        "train": {"epochs": 2, "val_fraction": 0.5, "test_fraction": 0.0},
        # Both trials at once (each a 0.5-CPU Train worker): concurrent trials are what a cluster runs.
        "tune": {"num_samples": 2, "max_concurrent_trials": 2, "storage_path": str(storage), "seed": 0},
    })
    import ray

    free_cpus = ray.available_resources().get("CPU", 0.0)
    return run_tuning(config, preprocessed, name="sweep", smoke=True), config, free_cpus


def test_sweep_trials_gains_table_and_best(sweep):
    summary, config, _ = sweep
    assert not summary.restored and len(summary.trials) == 2
    assert all(t["status"] == "ok" and 1 <= t["epochs"] <= 2 for t in summary.trials)
    assert len({tuple(t[g] for g in GAINS) for t in summary.trials}) == 2  # the trials tried different gains
    for trial in summary.trials:
        low, high = trial["beta_bounds"]
        assert low <= trial["beta"] <= high <= 1.0
        assert set(trial["final_beta"]) >= {"vertebral_body", "posterior_elements", "disc", "spinal_canal"}
    best = max(summary.trials, key=lambda t: t["best_metric"])
    assert summary.best_metric == best["best_metric"] and summary.best_config["trial_id"] == best["trial_id"]
    assert summary.best_config["kp"] == best["kp"] and any(o.startswith("loss.kp=") for o in
                                                           summary.best_config["overrides"])
    apply_trial(LSSConfig(), summary.best_config)
    assert summary.table_path == summary.experiment_dir / RESULTS_MD and summary.table_path.is_file()
    assert all(p.is_file() for p in summary.plots.values())
    results = json.loads((summary.experiment_dir / RESULTS_JSON).read_text())
    assert results["metric"] == "val_dice_macro" == config.tune.metric and results["mode"] == "max"
    assert all(0.0 <= t["best_metric"] <= 1.0 for t in results["trials"])
    assert (summary.experiment_dir / "train_runs").is_dir()


def test_metric_and_mode_reach_tune(sweep):
    from ray import tune

    from lss.tuning.search import train_run

    summary, _, _ = sweep
    grid = tune.Tuner.restore(str(summary.experiment_dir), trainable=train_run).get_results()
    best = grid.get_best_result(scope="all")  # no metric/mode given: the TuneConfig's own
    assert best.metrics["trial_id"] == summary.best_config["trial_id"]


def test_stopped_runs_leave_no_cpu_reserved(sweep):
    import ray

    # Trials stopped by ASHA or ended at max_t leave no placement group behind (see ReleaseStoppedRuns).
    assert ray.available_resources().get("CPU", 0.0) >= sweep[2] - 1e-9


def test_same_name_continues_the_sweep(sweep, preprocessed):
    summary, config, _ = sweep
    runs_before = sorted(p.name for p in summary.experiment_dir.iterdir() if p.name.startswith("train_run_"))
    assert len(runs_before) == 2
    again = run_tuning(config, preprocessed, name="sweep", smoke=True)
    assert again.restored
    assert {t["trial_id"] for t in again.trials} == {t["trial_id"] for t in summary.trials}
    assert {t["trial_id"]: t["best_metric"] for t in again.trials} == pytest.approx(
        {t["trial_id"]: t["best_metric"] for t in summary.trials})
    assert sorted(p.name for p in summary.experiment_dir.iterdir() if p.name.startswith("train_run_")) == runs_before
    assert not math.isnan(again.best_metric)
    with pytest.raises(FileExistsError, match="already holds a sweep"):
        run_tuning(config, preprocessed, name="sweep", smoke=True, resume=False)
