"""Train the learned report generator on a trained model's per-level features, then score it beside the grounded
writer on the held-out split (= ``lss train-reporter --eval-out``, with both outputs under one folder).

    python jobs/train_reporter.py --model outputs/train/RUN/best_model.pt --data outputs/demo/preprocessed \
        --split outputs/train/RUN/split.json --out outputs/reporter

Writes the generator to OUT/generator (load it with ``--set report.writer=learned --set
report.generator_path=OUT/generator``) and the evaluation of both writers to OUT/eval/results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lss import cli


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the model, the data and the training run's split, and one output folder for both results.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model file (kept frozen)")
    parser.add_argument("--data", required=True, help="preprocessed studies with reference reports")
    parser.add_argument("--split", required=True, help="the training run's split.json (train / val / test)")
    parser.add_argument("--out", required=True, help="output folder (OUT/generator, OUT/eval)")
    parser.add_argument("--eval-data", help="score on every study of this fixed evaluation set instead of the "
                        "split's test studies")
    cli.add_config_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)

    # [2] `lss train-reporter`: train the generator on the frozen model's level features of the split's train
    #     studies (val for its loss; it never sees the test studies) into OUT/generator, then score both writers
    #     on the test studies (or the fixed evaluation set) into OUT/eval: NLG metrics and clinical accuracy, in
    #     one table.
    return cli.main(["train-reporter", "--model", args.model, "--data", args.data, "--split", args.split,
                     "--out", str(out / "generator"), "--eval-out", str(out / "eval"),
                     *(["--eval-data", args.eval_data] if args.eval_data else []), *cli.config_argv(args)])


if __name__ == "__main__":
    sys.exit(main())
