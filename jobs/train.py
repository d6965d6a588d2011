"""Train the model with Ray Train on a preprocessed dataset.

    python jobs/train.py --data outputs/demo/preprocessed --name baseline --set train.epochs=8
    ray job submit --working-dir . -- python jobs/train.py --data /shared/pre --profile gpu

The run folder (``train.storage_path``/NAME) holds the split, the configuration, TensorBoard logs, Ray Train's
checkpoints (model, optimiser, scheduler, PID controller state) and best_model.pt (best validation macro Dice).
"""

from __future__ import annotations

import argparse
import logging
import sys

from lss.cli import add_config_arguments
from lss.config import load_config
from lss.training import run_training


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments and configuration (defaults < profile < file < --set).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `lss preprocess` output folder with labelled cases")
    parser.add_argument("--name", default="train", help="run name (folder under train.storage_path)")
    parser.add_argument("--address", help="Ray address; default: RAY_ADDRESS if set, else an embedded local Ray")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    overrides = [*([f"ray.address={args.address}"] if args.address else []), *args.overrides]
    config = load_config(args.config, profile=args.profile, overrides=overrides)

    # [2] Ray Train: a TorchTrainer over the cached cases, FailureConfig and best-checkpoint tracking.
    result = run_training(config, args.data, name=args.name)

    # [3] Where the results are.
    best = result.best_metrics
    print(f"train: run {result.run_dir}")
    print(f"  best model: {result.best_model}  (epoch {best.get('epoch')}, val macro Dice "
          f"{best.get('val_dice_macro', float('nan')):.4f})")
    print(f"  TensorBoard: tensorboard --logdir {result.run_dir / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
