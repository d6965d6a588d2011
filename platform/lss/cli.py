"""The ``lss`` command line: one sub-command per pipeline stage.

    lss synth --out data/synth --cases 8 --seed 0 --format dicom
    lss preprocess --in data/synth --out data/preprocessed
    lss train --data data/preprocessed --name baseline --set train.epochs=8
    lss tune --data data/preprocessed --name pid_sweep --set tune.num_samples=16     # or: lss tune --smoke
    lss evaluate --model M.pt --data data/preprocessed --out outputs/eval [--split split.json] [--generator G]
    lss train-reporter --model M.pt --data data/preprocessed --split split.json --out outputs/reporter
    lss diagnose STUDY --checkpoint M.pt --out outputs/diagnosis     # a DICOM folder / zip or a NIfTI file
                       [--dicom-out outputs/diagnosis/dicom]        # + DICOM SEG and SR (DICOM studies only)
    lss serve --model M.pt [--serve-config serve_configs/local.yaml]   # the HTTP API on 127.0.0.1:8000
    lss config --profile gpu --set train.epochs=3      # print the resolved configuration

Every sub-command takes ``--config FILE``, ``--profile NAME`` and ``--set section.key=value`` (repeatable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lss.config import ConfigError, LSSConfig, load_config

__all__ = ["main", "build_parser", "add_config_arguments", "add_evaluate_arguments", "evaluate_from_args"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a YAML file with any subset of the configuration sections")
    parser.add_argument("--profile", help="a shipped profile, e.g. 'gpu'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lss", description="Explainable lumbar spinal stenosis diagnosis on Ray.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate synthetic multi-view lumbar MRI studies")
    synth.add_argument("--out", required=True, help="dataset folder to write")
    synth.add_argument("--cases", type=int, help="number of studies (synth.cases)")
    synth.add_argument("--seed", type=int, help="base seed (synth.seed)")
    synth.add_argument("--format", choices=["dicom", "nifti"], help="image format (synth.format)")
    synth.add_argument("--workers", type=int, default=1, help="processes to use")
    add_config_arguments(synth)

    preprocess = commands.add_parser("preprocess", help="Ray Data preprocessing of a dataset into case shards")
    preprocess.add_argument("--in", dest="in_dir", required=True,
                            help="a dataset: lss synth output, SPIDER, RSNA 2024, DICOM folders or NIfTI files")
    preprocess.add_argument("--out", required=True, help="output folder for shards, index and errors")
    preprocess.add_argument("--kind", default="auto", choices=["auto", "native", "spider", "rsna2024", "card", "generic"])
    preprocess.add_argument("--engine", default="ray", choices=["ray", "serial"])
    preprocess.add_argument("--address", help="Ray cluster address (default: an embedded local Ray)")
    add_config_arguments(preprocess)

    train = commands.add_parser("train", help="train the model with Ray Train on preprocessed labelled studies")
    train.add_argument("--data", required=True, help="a preprocessing output folder with labelled cases")
    train.add_argument("--name", default="train", help="run name (a folder under train.storage_path)")
    train.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    add_config_arguments(train)

    tune = commands.add_parser("tune", help="tune the PID-Tversky loss with Ray Tune (Optuna + ASHA over Train runs)")
    tune.add_argument("--data", help="a preprocessing output folder with labelled cases (needed without --smoke)")
    tune.add_argument("--name", default="tune", help="sweep name (a folder under tune.storage_path; reused = continued)")
    tune.add_argument("--smoke", action="store_true",
                      help="a few minutes on 2 CPUs; without --data, a synthetic set under tune.storage_path/NAME_data")
    tune.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    add_config_arguments(tune)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model on preprocessed (held-out) studies")
    add_evaluate_arguments(evaluate)
    add_config_arguments(evaluate)

    reporter = commands.add_parser(
        "train-reporter", help="train the learned report generator on a trained model's level features")
    reporter.add_argument("--model", required=True, help="the trained model file (kept frozen)")
    reporter.add_argument("--data", required=True, help="preprocessed studies with reference reports")
    reporter.add_argument("--out", required=True, help="folder for the generator (use as report.generator_path)")
    reporter.add_argument("--split", help="a training run's split.json: train on 'train', validate on 'val'")
    reporter.add_argument("--device", default="cpu", help="torch device for the feature pass")
    add_config_arguments(reporter)

    diagnose = commands.add_parser(
        "diagnose", help="one study (DICOM folder or zip, NIfTI/MHA) -> report, findings JSON and evidence images")
    diagnose.add_argument("path", help="the study: a DICOM folder, a .zip of one, a NIfTI/MHA file or a folder")
    diagnose.add_argument("--checkpoint", "--model", dest="model", required=True,
                          help="a model file (lss.model.save_model, e.g. a run's best_model.pt)")
    diagnose.add_argument("--out", required=True, help="folder for report.txt, report.json and images/")
    diagnose.add_argument("--device", default="cpu", help="torch device, e.g. 'cuda'")
    diagnose.add_argument("--dicom-out", help="folder for DICOM outputs of a DICOM study: seg_sagittal.dcm, "
                          "seg_axial_<level>.dcm (levels with axial images) and sr.dcm (TID 1500 measurements)")
    add_config_arguments(diagnose)

    serve_cmd = commands.add_parser("serve", help="run the Ray Serve application (HTTP API) from a Serve config file")
    serve_cmd.add_argument("--serve-config", default="serve_configs/local.yaml",
                           help="a Ray Serve config file (default: serve_configs/local.yaml)")
    serve_cmd.add_argument("--model", help="the model file to serve (overrides the file's args.model_path)")
    serve_cmd.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    add_config_arguments(serve_cmd)

    show = commands.add_parser("config", help="print the resolved configuration as YAML")
    add_config_arguments(show)
    return parser


def _load(args: argparse.Namespace, extra: Sequence[str] = ()) -> LSSConfig:
    return load_config(args.config, profile=args.profile, overrides=[*extra, *args.overrides])


def _synth(args: argparse.Namespace) -> int:
    from lss.data.synth.generate import generate_dataset

    extra = [f"synth.{k}={v}" for k, v in (("cases", args.cases), ("seed", args.seed), ("format", args.format))
             if v is not None]
    config = _load(args, extra)
    records = generate_dataset(config.synth, args.out, workers=args.workers)
    print(f"synth: {len(records)} studies ({config.synth.format}) in {args.out}")
    print(f"  manifest: {args.out}/manifest.jsonl\n  labels:   {args.out}/labels.csv, {args.out}/train.csv")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from lss.preprocessing.pipeline import run_preprocessing

    extra = [f"ray.address={args.address}"] if args.address else []
    config = _load(args, extra)
    summary = run_preprocessing(args.in_dir, args.out, config.preprocess, config.ray, kind=args.kind,
                                engine=args.engine)
    print(summary)
    return 0 if summary.ok > 0 or summary.total == 0 else 1


def _train(args: argparse.Namespace) -> int:
    from lss.training import run_training

    config = _load(args, [f"ray.address={args.address}"] if args.address else [])
    result = run_training(config, args.data, name=args.name)
    best = result.best_metrics
    print(f"train: run {result.run_dir}\n  best model: {result.best_model} (epoch {best.get('epoch')}, "
          f"val macro Dice {best.get('val_dice_macro', float('nan')):.4f})\n"
          f"  split: {result.run_dir / 'split.json'} (evaluate with --split-key test)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from lss.tuning import format_trials, make_smoke_dataset, run_tuning

    config = _load(args, [f"ray.address={args.address}"] if args.address else [])
    if not args.data and not args.smoke:
        print("lss tune: --data is required (without it, --smoke makes a small synthetic set)", file=sys.stderr)
        return 2
    summary = run_tuning(config, args.data or make_smoke_dataset(config, args.name), name=args.name,
                         smoke=args.smoke)
    print(f"tune: sweep {summary.experiment_dir}{' (continued)' if summary.restored else ''}\n"
          f"{format_trials(summary.trials, config.tune.metric)}\n  results: {summary.table_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lss.evaluation import format_summary

    config = _load(args)
    try:
        results = evaluate_from_args(args, config)
    except (FileNotFoundError, ValueError) as error:
        print(f"lss evaluate: {error}", file=sys.stderr)
        return 1
    print(format_summary(results))
    return 0


def _train_reporter(args: argparse.Namespace) -> int:
    from lss.reporting.fit import fit_report_generator

    config = _load(args)
    split = json.loads(Path(args.split).read_text()) if args.split else None
    try:
        out, history = fit_report_generator(args.model, args.data, args.out, config, split, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"lss train-reporter: {error}", file=sys.stderr)
        return 1
    val = history.get("val_loss") or [float("nan")]
    print(f"train-reporter: {history['train_studies']} studies, final train loss {history['train_loss'][-1]:.4f}, "
          f"val loss {val[-1]:.4f}\n  generator: {out} (evaluate with --generator {out}; serve with "
          f"--set report.writer=learned --set report.generator_path={out})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lss.serve.runner import ServeConfigError, run_serve

    config = _load(args)
    try:
        run_serve(args.serve_config, config, model_path=args.model, address=args.address, overrides=args.overrides)
    except ServeConfigError as error:
        print(f"lss serve: {error}", file=sys.stderr)
        return 2
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from lss.data.errors import StudyError
    from lss.inference import Diagnoser

    config = _load(args)
    try:
        diagnosis = Diagnoser(args.model, config, device=args.device).diagnose_path(
            args.path, args.out, max_unpacked_bytes=config.serve.max_unpacked_mb << 20, dicom_out=args.dicom_out)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "synth":
            return _synth(args)
        if args.command == "preprocess":
            return _preprocess(args)
        if args.command == "train":
            return _train(args)
        if args.command == "tune":
            return _tune(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "train-reporter":
            return _train_reporter(args)
        if args.command == "diagnose":
            return _diagnose(args)
        if args.command == "config":
            print(yaml.safe_dump(json.loads(_load(args).model_dump_json()), sort_keys=False), end="")
            return 0
    except ConfigError as error:
        print(f"lss: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
