"""Preprocess a dataset with Ray Data: any supported layout in, model-ready case shards out (= ``lss preprocess``).

Locally (an embedded Ray is started)::

    python jobs/preprocess.py --in outputs/demo/synth --out outputs/demo/preprocessed

On a cluster (the job joins it; OUT must be storage every node can write)::

    ray job submit --working-dir . -- python jobs/preprocess.py --in /data/rsna --out /shared/preprocessed \
        --profile gpu
"""

from __future__ import annotations

import argparse
import sys

from lss.cli import (
    add_config_arguments,
    add_preprocess_arguments,
    config_from_args,
    preprocess_exit_code,
    preprocess_from_args,
    setup_logging,
)


def main(argv: list[str] | None = None) -> int:
    # [1] Arguments: the options of `lss preprocess` (where the data is, where the shards go, the layout, the
    #     engine, the Ray address) and the usual configuration options.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preprocess_arguments(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    # [2] Configuration: defaults < profile < file < --address < --set.
    config = config_from_args(args)

    # [3] Ray Data: the manifest becomes a dataset, an actor pool of fractional-CPU workers runs the MONAI
    #     transforms, each worker writes its shards; failures are listed, not raised.
    summary = preprocess_from_args(args, config)

    # [4] Where the results are.
    print(summary)
    return preprocess_exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
