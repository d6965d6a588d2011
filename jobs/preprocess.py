"""Preprocess a dataset with Ray Data: any supported layout in, model-ready case shards out.

Locally (an embedded Ray is started)::

    python jobs/preprocess.py --in outputs/demo/synth --out outputs/demo/preprocessed

On a cluster (the job joins it; OUT must be storage every node can write)::

    ray job submit --working-dir . -- python jobs/preprocess.py --in /data/rsna --out /shared/preprocessed \
        --profile gpu
"""

from __future__ import annotations

import argparse
import logging
import sys

from lss.cli import add_config_arguments
from lss.config import load_config
from lss.preprocessing.pipeline import run_preprocessing


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: where the data is, where the shards go, and the usual configuration options.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="in_dir", required=True, help="dataset folder (synth, SPIDER, RSNA 2024, DICOM)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kind", default="auto", help="dataset layout (default: detected)")
    parser.add_argument("--address", help="Ray address; default: RAY_ADDRESS if set, else an embedded local Ray")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    # [2] Configuration: defaults < profile < file < --set.
    overrides = [*([f"ray.address={args.address}"] if args.address else []), *args.overrides]
    config = load_config(args.config, profile=args.profile, overrides=overrides)

    # [3] Ray Data: the manifest becomes a dataset, an actor pool of fractional-CPU workers runs the MONAI
    #     transforms, each worker writes its shards; failures are listed, not raised.
    summary = run_preprocessing(args.in_dir, args.out, config.preprocess, config.ray, kind=args.kind)

    # [4] Where the results are.
    print(summary)
    return 0 if summary.ok > 0 or summary.total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
