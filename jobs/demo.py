"""The main job, end to end on one machine: synthesize studies -> Ray Data preprocessing -> the real scan.

    make demo                      # = python jobs/demo.py
    python jobs/demo.py --cases 16 --set preprocess.workers=2

Everything runs on an embedded local Ray started in-process; outputs go under --out (default outputs/demo).
A second run reuses the studies and shards already there. Training, tuning and serving join this walk-through as
those stages land.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lss.anatomy import LEVELS, SEVERITIES
from lss.cli import add_config_arguments
from lss.config import load_config
from lss.data.synth.generate import generate_dataset
from lss.preprocessing.pipeline import run_preprocessing
from lss.ray_session import init_ray, shutdown_ray

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SCAN = REPO_ROOT / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"


def _step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--cases", type=int, default=8, help="synthetic studies to make (default: 8)")
    parser.add_argument("--format", default="dicom", choices=["dicom", "nifti"])
    parser.add_argument("--real", default=str(REAL_SCAN), help="a real study (file or folder) to preprocess too")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    started = time.perf_counter()
    out = Path(args.out)

    # [1] Configuration: CPU defaults, an embedded Ray; --profile/--config/--set change anything.
    _step(1, "configuration")
    config = load_config(args.config, profile=args.profile,
                         overrides=[f"synth.cases={args.cases}", f"synth.format={args.format}", *args.overrides])
    print(f"    {config.synth.cases} synthetic studies ({config.synth.format}), Ray: "
          f"{config.ray.address or 'embedded local'}, preprocessing actors: {config.preprocess.workers} x "
          f"{config.preprocess.cpus_per_worker} CPU")

    # [2] Synthetic multi-view lumbar MRI: anatomy, stenosis made by disc bulge and flavum, graded by measurement.
    _step(2, f"synthesizing {config.synth.cases} studies -> {out / 'synth'}")
    records = generate_dataset(config.synth, out / "synth", workers=args.workers)
    balance = json.loads((out / "synth" / "dataset.json").read_text())["class_balance"]

    # [3] One Ray session for the rest of the job.
    _step(3, "starting Ray")
    init_ray(config.ray)
    try:
        # [4] Ray Data preprocessing of the synthetic set.
        _step(4, f"preprocessing with Ray Data -> {out / 'preprocessed'}")
        synth_summary = run_preprocessing(out / "synth", out / "preprocessed", config.preprocess, config.ray)
        print(synth_summary)

        # [5] The real scan through the same reader and transforms.
        _step(5, f"preprocessing the real scan {args.real} -> {out / 'preprocessed_real'}")
        real_summary = run_preprocessing(args.real, out / "preprocessed_real", config.preprocess, config.ray)
        print(real_summary)
    finally:
        shutdown_ray()

    # [6] Summary.
    _step(6, "summary")
    print(f"    severity balance of the {len(records)} synthetic studies (per level, Normal/Mild / Moderate / Severe):")
    for level in LEVELS:
        shares = " / ".join(f"{balance[level][s.value]:.0%}" for s in SEVERITIES)
        print(f"      {level}: {shares}")
    print(f"    reference report of {records[0].study_id} (structured style):")
    for line in records[0].reports.get("structured", "").splitlines():
        print(f"      {line}")
    print("    outputs:")
    print(f"      studies:   {out / 'synth'} (manifest.jsonl, labels.csv, train.csv, studies/)")
    print(f"      shards:    {synth_summary.index_path}  errors: {synth_summary.errors_path}")
    print(f"      real scan: {real_summary.index_path}  errors: {real_summary.errors_path}")
    print(f"    done in {time.perf_counter() - started:.0f}s")
    failed = synth_summary.failed + real_summary.failed
    if failed:
        print(f"    {failed} studies failed; see the errors files above.")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
