"""The ``lss`` command line: one sub-command per pipeline stage.

    lss synth --out data/synth --cases 8 --seed 0 --format dicom
    lss preprocess --in data/synth --out data/preprocessed
    lss train --data data/preprocessed --name baseline --set train.epochs=8 [--reuse]
    lss tune --data data/preprocessed --name pid_sweep --set tune.num_samples=16     # or: lss tune --smoke
    lss evaluate --model M.pt --data data/preprocessed --out outputs/eval [--split split.json] [--generator G]
    lss train-reporter --model M.pt --data data/preprocessed --split split.json --out outputs/reporter
                       [--eval-out outputs/reporter_eval [--eval-data PRE]]  # + score both writers
    lss diagnose STUDY --checkpoint M.pt --out outputs/diagnosis     # a DICOM folder / zip or a NIfTI file
                       [--dicom-out outputs/diagnosis/dicom]        # + DICOM SEG and SR (DICOM studies only)
    lss diagnose DIR_OF_STUDIES --checkpoint M.pt --out OUT         # every study: OUT/<study>/, OUT/summary.csv,
                       [--fallback prior|uniform]                   #   OUT/submission.csv (RSNA 2024 format)
    lss serve --model M.pt [--serve-config serve_configs/local.yaml]   # the HTTP API on 127.0.0.1:8000
    lss config --profile gpu --set train.epochs=3      # print the resolved configuration

Every sub-command takes ``--config FILE``, ``--profile NAME`` and ``--set section.key=value`` (repeatable).

The job scripts (``jobs/*.py``) are the same commands as walk-throughs: each takes its command's options from the
``add_<command>_arguments`` function here, loads the configuration with ``config_from_args`` and runs the command's
``<command>_from_args``, so an option means the same thing, through the same code, in both.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lss.config import ConfigError, LSSConfig, load_config

__all__ = [
    "main", "build_parser", "command_args", "setup_logging", "UsageError",
    "add_config_arguments", "config_from_args", "config_argv",
    "add_synth_arguments", "add_preprocess_arguments", "preprocess_from_args", "preprocess_exit_code",
    "add_train_arguments", "train_from_args", "format_training",
    "add_tune_arguments", "tune_from_args", "format_tuning",
    "add_evaluate_arguments", "evaluate_from_args",
    "add_train_reporter_arguments", "train_reporter_from_args",
    "add_diagnose_arguments",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """Options that do not go together (the command exits 2 with the message; a job script, as argparse does)."""


def setup_logging(quiet: bool = False) -> None:
    """INFO (WARNING with ``quiet``) log lines with time, level and logger, for the command line and the jobs."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")


# ------------------------------------------------------------------------------------------------ configuration
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a YAML file with any subset of the configuration sections")
    parser.add_argument("--profile", help="a shipped profile, e.g. 'gpu'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")


def config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> LSSConfig:
    """The configuration of a command's arguments: defaults < ``--profile`` < ``--config`` < the command's own
    options (``extra``; ``--address`` gives ``ray.address``) < ``--set``."""
    address = getattr(args, "address", None)
    derived = [*extra, *([f"ray.address={address}"] if address else [])]
    return load_config(args.config, profile=args.profile, overrides=[*derived, *args.overrides])


def config_argv(args: argparse.Namespace) -> list[str]:
    """``--config`` / ``--profile`` / ``--set`` of parsed arguments, as command-line words (to pass them on)."""
    words = [*(["--config", args.config] if args.config else []), *(["--profile", args.profile] if args.profile
                                                                    else [])]
    for item in args.overrides:
        words += ["--set", item]
    return words


# ------------------------------------------------------------------------------------------------ synth
def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--cases", type=int, help="number of studies (synth.cases)")
    parser.add_argument("--seed", type=int, help="base seed (synth.seed)")
    parser.add_argument("--format", choices=["dicom", "nifti"], help="image format (synth.format)")
    parser.add_argument("--workers", type=int, default=1, help="processes to use")


def _synth(args: argparse.Namespace) -> int:
    from lss.data.synth.generate import generate_dataset

    extra = [f"synth.{k}={v}" for k, v in (("cases", args.cases), ("seed", args.seed), ("format", args.format))
             if v is not None]
    config = config_from_args(args, extra)
    records = generate_dataset(config.synth, args.out, workers=args.workers)
    print(f"synth: {len(records)} studies ({config.synth.format}) in {args.out}")
    print(f"  manifest: {args.out}/manifest.jsonl\n  labels:   {args.out}/labels.csv, {args.out}/train.csv")
    return 0


# ------------------------------------------------------------------------------------------------ preprocess
def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lss preprocess`` (shared with ``jobs/preprocess.py``)."""
    parser.add_argument("--in", dest="in_dir", required=True,
                        help="a dataset: lss synth output, SPIDER, RSNA 2024, DICOM folders or NIfTI files")
    parser.add_argument("--out", required=True, help="output folder for shards, index and errors")
    parser.add_argument("--kind", default="auto", choices=["auto", "native", "spider", "rsna2024", "card", "generic"],
                        help="dataset layout (default: detected)")
    parser.add_argument("--engine", default="ray", choices=["ray", "serial"],
                        help="ray: a Ray Data actor pool (default); serial: a plain loop in this process")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")


def preprocess_from_args(args: argparse.Namespace, config: LSSConfig):
    """Runs ``lss.preprocessing.pipeline.run_preprocessing`` with the options of ``add_preprocess_arguments``;
    returns its ``PreprocessSummary`` (failed studies are listed in its errors file, never raised)."""
    from lss.preprocessing.pipeline import run_preprocessing

    return run_preprocessing(args.in_dir, args.out, config.preprocess, config.ray, kind=args.kind, engine=args.engine)


def preprocess_exit_code(summary) -> int:
    """0 when some study was preprocessed (or there was none), 1 when every study failed."""
    return 0 if summary.ok > 0 or summary.total == 0 else 1


# ------------------------------------------------------------------------------------------------ train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lss train`` (shared with ``jobs/train.py``)."""
    parser.add_argument("--data", required=True, help="a preprocessing output folder with labelled cases")
    parser.add_argument("--name", default="train", help="run name (a folder under train.storage_path)")
    parser.add_argument("--reuse", action="store_true",
                        help="when the run folder already holds best_model.pt and split.json, use them instead of "
                             "training again (how the demo, real and ablation jobs resume)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")


def _finished_run(run_dir: Path):
    """The ``TrainingResult`` of a finished run folder (best_model.pt and split.json), or None."""
    from lss.training import TrainingResult

    if not ((run_dir / "best_model.pt").is_file() and (run_dir / "split.json").is_file()):
        return None
    history = []
    if (run_dir / "history.jsonl").is_file():
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    scored = [h for h in history if h.get("val_dice_macro") is not None]
    best = max(scored, key=lambda h: h["val_dice_macro"]) if scored else {}
    return TrainingResult(run_dir=run_dir, best_model=run_dir / "best_model.pt", metrics=history[-1] if history
                          else {}, best_metrics=best, split=json.loads((run_dir / "split.json").read_text()),
                          history=history)


def train_from_args(args: argparse.Namespace, config: LSSConfig):
    """Runs ``lss.training.run_training`` with the options of ``add_train_arguments``.

    Returns:
        ``(TrainingResult, reused)``: with ``--reuse`` and a finished run folder, that run and True.
    """
    from lss.training import run_training
    from lss.training.trainer import storage_uri

    if args.reuse:
        finished = _finished_run(Path(storage_uri(config.train.storage_path)) / args.name)
        if finished is not None:
            return finished, True
    return run_training(config, args.data, name=args.name), False


def format_training(result, reused: bool = False) -> str:
    """A few lines for the terminal: the run, its best model and where to look next."""
    best = result.best_metrics
    head = (f"train: reusing the trained model in {result.run_dir} (delete the folder to train again)" if reused
            else f"train: run {result.run_dir}")
    return (f"{head}\n  best model: {result.best_model} (epoch {best.get('epoch')}, val macro Dice "
            f"{best.get('val_dice_macro', float('nan')):.4f})\n"
            f"  split: {result.run_dir / 'split.json'} (evaluate with --split-key test)\n"
            f"  TensorBoard: tensorboard --logdir {result.run_dir / 'tensorboard'}")


# ------------------------------------------------------------------------------------------------ tune
def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lss tune`` (shared with ``jobs/tune.py``)."""
    parser.add_argument("--data", help="a preprocessing output folder with labelled cases (needed without --smoke)")
    parser.add_argument("--name", default="tune",
                        help="sweep name (a folder under tune.storage_path; reused = continued)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few minutes on 2 CPUs: at most 3 trials of 2 short epochs; without --data, a small "
                             "synthetic set is made under tune.storage_path/NAME_data")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")


def tune_from_args(args: argparse.Namespace, config: LSSConfig):
    """Runs ``lss.tuning.run_tuning`` with the options of ``add_tune_arguments``; returns its ``TuneSummary``.

    Raises:
        UsageError: without ``--data`` and without ``--smoke``.
    """
    from lss.tuning import make_smoke_dataset, run_tuning

    if not args.data and not args.smoke:
        raise UsageError("--data is required (without it, --smoke makes a small synthetic set)")
    # Absolute: a job submitted with `ray job submit` runs in a copy of the working directory.
    data = Path(args.data).resolve() if args.data else make_smoke_dataset(config, args.name)
    return run_tuning(config, data, name=args.name, smoke=args.smoke)


def format_tuning(summary, config: LSSConfig) -> str:
    """The trials with their gains, the best settings and where the results are."""
    from lss.tuning import format_trials

    return (f"tune: sweep {summary.experiment_dir}{' (continued)' if summary.restored else ''}\n"
            f"{format_trials(summary.trials, config.tune.metric)}\n  results: {summary.table_path}\n"
            f"  figures: {', '.join(str(p) for p in summary.plots.values())}")


# ------------------------------------------------------------------------------------------------ evaluate
def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lss evaluate`` (shared with ``jobs/evaluate.py``)."""
    parser.add_argument("--model", required=True, help="a model file (lss.model.save_model)")
    parser.add_argument("--data", required=True, help="a preprocessing output folder (preprocessed.jsonl)")
    parser.add_argument("--out", required=True, help="folder for results.json, results.md and the figures")
    parser.add_argument("--split", help="study ids to evaluate: a JSON list, a JSON object of splits, or text lines")
    parser.add_argument("--split-key", help="which list of a JSON object of splits, e.g. 'test'")
    parser.add_argument("--batch-size", type=int, help="studies per forward pass (default: train.batch_size)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. 'cuda'")
    parser.add_argument("--generator", help="a learned report generator folder to score beside the grounded writer "
                        "(default: report.generator_path)")
    parser.add_argument("--no-reports", action="store_true", help="skip writing and scoring reports")


def evaluate_from_args(args: argparse.Namespace, config: LSSConfig) -> dict:
    """Runs ``lss.evaluation.evaluate_model`` with the options of ``add_evaluate_arguments``."""
    from lss.evaluation import evaluate_model, read_split

    study_ids = read_split(args.split, args.split_key) if args.split else None
    return evaluate_model(args.model, args.data, args.out, study_ids=study_ids,
                          batch_size=args.batch_size or config.train.batch_size, device=args.device,
                          reports=not args.no_reports, generator_path=args.generator or config.report.generator_path,
                          report_style=config.report.style)


# ------------------------------------------------------------------------------------------------ train-reporter
def add_train_reporter_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lss train-reporter`` (``jobs/train_reporter.py`` passes its own on to it)."""
    parser.add_argument("--model", required=True, help="the trained model file (kept frozen)")
    parser.add_argument("--data", required=True, help="preprocessed studies with reference reports")
    parser.add_argument("--out", required=True, help="folder for the generator (use as report.generator_path)")
    parser.add_argument("--split", help="a training run's split.json: train on 'train', validate on 'val' (and, "
                        "with --eval-out, score on 'test')")
    parser.add_argument("--device", default="cpu", help="torch device for the feature pass and the evaluation")
    parser.add_argument("--eval-out", help="after training, score the grounded writer and the new generator side by "
                        "side (NLG metrics, clinical accuracy) into this folder, on the split's test studies")
    parser.add_argument("--eval-data", help="with --eval-out: score on every study of this fixed preprocessed "
                        "evaluation set instead of the split's test studies")


def train_reporter_from_args(args: argparse.Namespace, config: LSSConfig):
    """Runs ``lss.training.reporter.fit_report_generator`` (then, with ``--eval-out``, ``lss.evaluation.evaluate_model``
    with both writers) with the options of ``add_train_reporter_arguments``.

    Returns:
        ``(generator folder, training history, evaluation results or None)``.

    Raises:
        UsageError: ``--eval-data`` without ``--eval-out``, or ``--eval-out`` with neither ``--split`` nor
            ``--eval-data`` (the generator's own training studies would be scored).
    """
    from lss.evaluation import evaluate_model
    from lss.training.reporter import fit_report_generator

    if args.eval_data and not args.eval_out:
        raise UsageError("--eval-data needs --eval-out")
    if args.eval_out and not (args.split or args.eval_data):
        raise UsageError("--eval-out needs --split (its test studies) or --eval-data")
    split = json.loads(Path(args.split).read_text()) if args.split else None
    out, history = fit_report_generator(args.model, args.data, args.out, config, split, device=args.device)
    results = None
    if args.eval_out:
        results = evaluate_model(args.model, args.eval_data or args.data, args.eval_out,
                                 study_ids=None if args.eval_data else list(split["test"]),
                                 batch_size=config.train.batch_size, device=args.device, generator_path=out,
                                 report_style=config.report.style)
    return out, history, results


def _train_reporter(args: argparse.Namespace) -> int:
    from lss.evaluation import format_summary

    try:
        out, history, results = train_reporter_from_args(args, config_from_args(args))
    except (FileNotFoundError, ValueError) as error:
        print(f"lss train-reporter: {error}", file=sys.stderr)
        return 1
    val = history.get("val_loss") or [float("nan")]
    print(f"train-reporter: {history['train_studies']} studies, final train loss {history['train_loss'][-1]:.4f}, "
          f"val loss {val[-1]:.4f}\n  generator: {out} (evaluate with --generator {out}; serve with "
          f"--set report.writer=learned --set report.generator_path={out})")
    if results is not None:
        print(format_summary(results))
    return 0


# ------------------------------------------------------------------------------------------------ diagnose
def add_diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the study: a DICOM folder, a .zip of one, a NIfTI/MHA file or a folder; or a "
                        "folder of studies (each subfolder or .zip a study)")
    parser.add_argument("--checkpoint", "--model", dest="model", required=True,
                        help="a model file (lss.model.save_model, e.g. a run's best_model.pt)")
    parser.add_argument("--out", required=True, help="folder for report.txt, report.json and images/; for a folder "
                        "of studies, one such folder per study, summary.csv and submission.csv")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. 'cuda'")
    parser.add_argument("--dicom-out", help="folder for DICOM outputs of a DICOM study: seg_sagittal.dcm, "
                        "seg_axial_<level>.dcm (levels with axial images) and sr.dcm (TID 1500 measurements); "
                        "for a folder of studies, one subfolder per DICOM study")
    parser.add_argument("--batch", action="store_true",
                        help="treat PATH as a folder of studies even when it holds only one")
    parser.add_argument("--fallback", default="prior", choices=["prior", "uniform"],
                        help="folder of studies: the submission.csv probabilities of a level that is not assessable "
                             "and of every level of a failed study: the RSNA 2024 class balance of the level "
                             "(default) or 1/3 each")


def _diagnose(args: argparse.Namespace) -> int:
    """One study as before; a folder of several studies (or any PATH with ``--batch``) through
    ``lss.inference.batch.diagnose_folder``, which exits 0 when at least one study was diagnosed."""
    from lss.data.errors import StudyError
    from lss.inference import Diagnoser
    from lss.inference.batch import diagnose_folder, find_studies

    config = config_from_args(args)
    max_unpacked = config.serve.max_unpacked_mb << 20
    try:
        studies = find_studies(args.path) if Path(args.path).is_dir() else []
    except StudyError:
        studies = []  # not a folder of studies: diagnose_path says what is wrong with it
    try:
        diagnoser = Diagnoser(args.model, config, device=args.device)
        if args.batch or len(studies) > 1:
            summary = diagnose_folder(diagnoser, args.path, args.out, max_unpacked_bytes=max_unpacked,
                                      dicom_out=args.dicom_out, fallback=args.fallback, studies=studies or None)
            print(summary)
            return 0 if summary.ok > 0 or not summary.studies else 1
        diagnosis = diagnoser.diagnose_path(args.path, args.out, max_unpacked_bytes=max_unpacked,
                                            dicom_out=args.dicom_out)
    except StudyError as error:
        print(f"lss diagnose: the study cannot be read: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"lss diagnose: {error}", file=sys.stderr)
        return 1
    print(diagnosis.report.text)
    print(f"\nreport: {diagnosis.files['report_txt']}\nfindings and evidence: {diagnosis.files['report_json']}\n"
          f"images: {len(diagnosis.images)} PNGs in {Path(args.out) / 'images'} (montage: "
          f"{diagnosis.images.get('montage')})")
    for name, path in diagnosis.dicom.items():
        print(f"DICOM {name}: {path}")
    return 0


# ------------------------------------------------------------------------------------------------ serve
def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve-config", default="serve_configs/local.yaml",
                        help="a Ray Serve config file (default: serve_configs/local.yaml)")
    parser.add_argument("--model", help="the model file to serve (overrides the file's args.model_path)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")


def _serve(args: argparse.Namespace) -> int:
    from lss.serve.runner import ServeConfigError, run_serve

    try:
        run_serve(args.serve_config, config_from_args(args), model_path=args.model, address=args.address,
                  overrides=args.overrides)
    except ServeConfigError as error:
        print(f"lss serve: {error}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------ the commands
def _preprocess(args: argparse.Namespace) -> int:
    summary = preprocess_from_args(args, config_from_args(args))
    print(summary)
    return preprocess_exit_code(summary)


def _train(args: argparse.Namespace) -> int:
    print(format_training(*train_from_args(args, config_from_args(args))))
    return 0


def _tune(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(format_tuning(tune_from_args(args, config), config))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lss.evaluation import format_summary

    try:
        results = evaluate_from_args(args, config_from_args(args))
    except (FileNotFoundError, ValueError) as error:
        print(f"lss evaluate: {error}", file=sys.stderr)
        return 1
    print(format_summary(results))
    return 0


def _config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(json.loads(config_from_args(args).model_dump_json()), sort_keys=False), end="")
    return 0


# name -> (help, options, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "synth": ("generate synthetic multi-view lumbar MRI studies", add_synth_arguments, _synth),
    "preprocess": ("Ray Data preprocessing of a dataset into case shards", add_preprocess_arguments, _preprocess),
    "train": ("train the model with Ray Train on preprocessed labelled studies", add_train_arguments, _train),
    "tune": ("tune the PID-Tversky loss with Ray Tune (Optuna + ASHA over Train runs)", add_tune_arguments, _tune),
    "evaluate": ("evaluate a saved model on preprocessed (held-out) studies", add_evaluate_arguments, _evaluate),
    "train-reporter": ("train the learned report generator on a trained model's level features",
                       add_train_reporter_arguments, _train_reporter),
    "diagnose": ("one study (DICOM folder or zip, NIfTI/MHA) -> report, findings JSON and evidence images; or a "
                 "folder of studies -> the same per study, summary.csv and submission.csv",
                 add_diagnose_arguments, _diagnose),
    "serve": ("run the Ray Serve application (HTTP API) from a Serve config file", add_serve_arguments, _serve),
    "config": ("print the resolved configuration as YAML", lambda parser: None, _config),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lss", description="Explainable lumbar spinal stenosis diagnosis on Ray.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        add_arguments(command)
        add_config_arguments(command)
    return parser


def command_args(command: str, argv: Sequence[Any]) -> argparse.Namespace:
    """``argv`` parsed as ``lss COMMAND argv`` would parse it (words may be paths): how an orchestrating job runs
    one of its steps with exactly a command's options, e.g. ``train_from_args(command_args("train", [...]), config)``.
    """
    return build_parser().parse_args([command, *(str(word) for word in argv)])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    try:
        return COMMANDS[args.command][2](args)
    except ConfigError as error:
        print(f"lss: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"lss {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
