"""Tune the PID-Tversky loss and the learning rate with Ray Tune (Optuna TPE + ASHA); each trial is a Ray Train run.

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
import logging
import sys
from pathlib import Path

from lss.cli import add_config_arguments
from lss.config import load_config
from lss.tuning import format_trials, make_smoke_dataset, run_tuning


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments and configuration (defaults < profile < file < --set).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a `lss preprocess` output folder with labelled cases (needed without --smoke)")
    parser.add_argument("--name", default="tune", help="sweep name (folder under tune.storage_path)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few minutes on 2 CPUs: at most 3 trials of 2 short epochs; without --data, a small "
                             "synthetic set is made under tune.storage_path/NAME_data")
    parser.add_argument("--address", help="Ray address; default: RAY_ADDRESS if set, else an embedded local Ray")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    overrides = [*([f"ray.address={args.address}"] if args.address else []), *args.overrides]
    config = load_config(args.config, profile=args.profile, overrides=overrides)

    # [2] The data: a preprocessed folder, or for a smoke run a small synthetic set made and preprocessed here.
    if not args.data and not args.smoke:
        parser.error("--data is required (without it, --smoke makes a small synthetic set)")
    data = Path(args.data).resolve() if args.data else make_smoke_dataset(config, args.name)

    # [3] Ray Tune: Optuna's TPE proposes, ASHA stops weak trials, each trial fits a TorchTrainer.
    summary = run_tuning(config, data, name=args.name, smoke=args.smoke)

    # [4] The trials with their gains, the best settings and where the results are.
    print(f"tune: sweep {summary.experiment_dir}{' (continued)' if summary.restored else ''}")
    print(format_trials(summary.trials, config.tune.metric))
    print(f"  results: {summary.table_path}\n  figures: {', '.join(str(p) for p in summary.plots.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
