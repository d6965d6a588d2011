"""Train the model with Ray Train on a preprocessed dataset (= ``lss train``).

    python jobs/train.py --data outputs/demo/preprocessed --name baseline --set train.epochs=8
    ray job submit --working-dir . -- python jobs/train.py --data /shared/pre --profile gpu

The run folder (``train.storage_path``/NAME) holds the split, the configuration, TensorBoard logs, Ray Train's
checkpoints (model, optimiser, scheduler, PID controller state) and best_model.pt (best validation macro Dice).
``--reuse`` keeps a finished run instead of training it again.
"""

from __future__ import annotations

import argparse
import sys

from lss.cli import (
    add_config_arguments,
    add_train_arguments,
    config_from_args,
    format_training,
    setup_logging,
    train_from_args,
)


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the options of `lss train` and the usual configuration options.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    # [2] Configuration: defaults < profile < file < --address < --set.
    config = config_from_args(args)

    # [3] Ray Train: a TorchTrainer over the cached cases, FailureConfig and best-checkpoint tracking.
    result, reused = train_from_args(args, config)

    # [4] Where the results are.
    print(format_training(result, reused))
    return 0


if __name__ == "__main__":
    sys.exit(main())
