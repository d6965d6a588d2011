"""Tuning on Ray Tune: Optuna (TPE) searches the PID-Tversky gains, beta and its bounds, the focal exponent and the
learning rate; ASHA stops weak trials; each trial is a Ray Train run; a table and figures report the sweep."""

from lss.tuning.report import format_best, format_trials, plot_gains, plot_traces, trial_row, write_report
from lss.tuning.search import (
    GAINS,
    TuneSummary,
    apply_trial,
    make_smoke_dataset,
    pid_tversky_config,
    run_tuning,
    search_space,
    smoke_config,
    trial_settings,
)

__all__ = ["GAINS", "TuneSummary", "apply_trial", "make_smoke_dataset", "pid_tversky_config", "run_tuning",
           "search_space", "smoke_config", "trial_settings", "format_best", "format_trials", "plot_gains",
           "plot_traces", "trial_row", "write_report"]
