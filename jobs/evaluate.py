"""Evaluate a saved model on preprocessed studies: metrics, a JSON and Markdown report, and figures
(= ``lss evaluate``).

On the held-out split of a training run::

    python jobs/evaluate.py --model outputs/train/model.pt --data outputs/demo/preprocessed \
        --out outputs/eval --split outputs/train/split.json --split-key test

Without ``--split`` every case of ``--data`` is evaluated. Writes OUT/results.json, OUT/results.md and the PNG
figures (confusion matrix, Dice per structure, reliability of the severity probabilities). Where the studies carry
reference reports (synthetic data), the reports of the grounded writer and, with ``--generator``, of the learned
generator are scored too (NLG metrics and clinical accuracy) in the same files.
"""

from __future__ import annotations

import argparse
import sys

from lss.cli import add_config_arguments, add_evaluate_arguments, config_from_args, evaluate_from_args, setup_logging
from lss.evaluation import format_summary


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the options of `lss evaluate` (the model file, the preprocessed cases, where the report goes,
    #     which studies) and the usual configuration options.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_arguments(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    # [2] Configuration (defaults < profile < file < --set).
    config = config_from_args(args)

    # [3] Evaluate the split (None = every case): the model in eval mode over the cases, every metric from
    #     lss.metrics; then each study's report from the grounded writer (and the learned generator, if given),
    #     scored with BLEU/METEOR/ROUGE-L/CIDEr and clinical accuracy.
    results = evaluate_from_args(args, config)

    # [4] Where the results are.
    print(format_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
