"""Train the learned report generator on a trained model's per-level features, then score it beside the grounded
writer on the held-out split.

    python jobs/train_reporter.py --model outputs/train/RUN/best_model.pt --data outputs/demo/preprocessed \
        --split outputs/train/RUN/split.json --out outputs/reporter

Writes the generator to OUT/generator (load it with ``--set report.writer=learned --set
report.generator_path=OUT/generator``) and the evaluation of both writers to OUT/eval/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lss.cli import add_config_arguments
from lss.config import load_config
from lss.evaluation import evaluate_model, format_summary
from lss.reporting.fit import fit_report_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model file (kept frozen)")
    parser.add_argument("--data", required=True, help="preprocessed studies with reference reports")
    parser.add_argument("--split", required=True, help="the training run's split.json (train / val / test)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--eval-data", help="score on every study of this fixed evaluation set instead of the "
                        "split's test studies")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out = Path(args.out)

    # [1] Configuration and the split of the training run (the generator never sees the test studies).
    config = load_config(args.config, profile=args.profile, overrides=args.overrides)
    split = json.loads(Path(args.split).read_text())

    # [2] Train the generator on the frozen model's level features of the train studies (val for its loss).
    generator, history = fit_report_generator(args.model, args.data, out / "generator", config, split)
    print(f"generator: {generator} (final train loss {history['train_loss'][-1]:.4f})")

    # [3] Score both writers on the test studies (or the fixed evaluation set): NLG metrics and clinical accuracy,
    #     in one table.
    results = evaluate_model(args.model, args.eval_data or args.data, out / "eval",
                             study_ids=None if args.eval_data else list(split["test"]),
                             generator_path=generator, report_style=config.report.style)
    print(format_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
