"""The ``lss`` command line: one sub-command per pipeline stage.

    lss synth --out data/synth --cases 8 --seed 0 --format dicom
    lss preprocess --in data/synth --out data/preprocessed
    lss config --profile gpu --set train.epochs=3      # print the resolved configuration

Every sub-command takes ``--config FILE``, ``--profile NAME`` and ``--set section.key=value`` (repeatable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import yaml

from lss.config import ConfigError, LSSConfig, load_config

__all__ = ["main", "build_parser", "add_config_arguments"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a YAML file with any subset of the configuration sections")
    parser.add_argument("--profile", help="a shipped profile, e.g. 'gpu'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")


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
    preprocess.add_argument("--kind", default="auto", choices=["auto", "native", "spider", "rsna2024", "generic"])
    preprocess.add_argument("--engine", default="ray", choices=["ray", "serial"])
    preprocess.add_argument("--address", help="Ray cluster address (default: an embedded local Ray)")
    add_config_arguments(preprocess)

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
