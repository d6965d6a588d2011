"""Evaluate a saved model on preprocessed studies: metrics, a JSON and Markdown report, and figures.

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
import logging
import sys

from lss.cli import add_config_arguments
from lss.config import load_config
from lss.evaluation import evaluate_model, format_summary, read_split


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the model file, the preprocessed cases, where the report goes, and which studies.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model file (lss.model.save_model)")
    parser.add_argument("--data", required=True, help="a preprocessing output folder (preprocessed.jsonl)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", help="study ids: a JSON list, a JSON object of splits, or one id per line")
    parser.add_argument("--split-key", help="which list of a JSON object of splits, e.g. 'test'")
    parser.add_argument("--batch-size", type=int, help="studies per forward pass (default: train.batch_size)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. 'cuda'")
    parser.add_argument("--generator", help="a learned report generator folder (lss train-reporter) to score beside "
                        "the grounded writer (default: report.generator_path)")
    parser.add_argument("--no-reports", action="store_true", help="skip writing and scoring reports")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    # [2] Configuration (defaults < profile < file < --set) and the studies of the split (None = every case).
    config = load_config(args.config, profile=args.profile, overrides=args.overrides)
    study_ids = read_split(args.split, args.split_key) if args.split else None

    # [3] Evaluate: the model in eval mode over the cases, every metric from lss.training.metrics; then each
    #     study's report from the grounded writer (and the learned generator, if given), scored with
    #     BLEU/METEOR/ROUGE-L/CIDEr and clinical accuracy.
    results = evaluate_model(args.model, args.data, args.out, study_ids=study_ids,
                             batch_size=args.batch_size or config.train.batch_size, device=args.device,
                             reports=not args.no_reports,
                             generator_path=args.generator or config.report.generator_path,
                             report_style=config.report.style)

    # [4] Where the results are.
    print(format_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
