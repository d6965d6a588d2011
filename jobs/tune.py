"""Tune the PID-Tversky loss and the learning rate with Ray Tune (Optuna TPE + ASHA); each trial is a Ray Train run
(= ``lss tune``).

    python jobs/tune.py --data outputs/demo/preprocessed --name pid_sweep --set tune.num_samples=16
    python jobs/tune.py --smoke                      # a synthetic set, 3 short trials: a few minutes on 2 CPUs
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/tune.py --data /shared/preprocessed --profile gpu --set tune.storage_path=/shared/tune

Inside ``ray job submit`` the job joins that cluster (RAY_ADDRESS); give --data and tune.storage_path as absolute
paths (the job runs in a copy of the working directory) on storage every node sees (NFS, or s3:// for results).
Running it again with the same --name continues the sweep. The sweep folder (tune.storage_path/NAME) holds Tune's
trials, each trial's Train run, results.md, results.json and the figures.
"""

from __future__ import annotations

import argparse
import sys

from lss.cli import (
    UsageError,
    add_config_arguments,
    add_tune_arguments,
    config_from_args,
    format_tuning,
    setup_logging,
    tune_from_args,
)


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the options of `lss tune` and the usual configuration options.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tune_arguments(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    # [2] Configuration: defaults < profile < file < --address < --set.
    config = config_from_args(args)

    # [3] The data (a preprocessed folder, or for a smoke run a small synthetic set made and preprocessed here), then
    #     Ray Tune: Optuna's TPE proposes, ASHA stops weak trials, each trial fits a TorchTrainer.
    try:
        summary = tune_from_args(args, config)
    except UsageError as error:
        parser.error(str(error))

    # [4] The trials with their gains, the best settings and where the results are.
    print(format_tuning(summary, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
