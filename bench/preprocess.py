"""Benchmark: preprocessing throughput of Ray Data with 1 and 2 actors against a plain serial loop, in one run.

    python bench/preprocess.py                # 16 synthetic DICOM studies, made once under outputs/bench/
    python bench/preprocess.py --cases 32 --out outputs/bench

Each engine processes the same studies into a fresh folder; wall time includes Ray Data's actor start-up (each
actor imports torch and MONAI), which is what a user waits for. Timings on a shared 2-core machine are noisy:
compare the ratios printed in the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from lss.config import PreprocessConfig, RayConfig, SynthConfig
from lss.data.synth.generate import generate_dataset
from lss.preprocessing.pipeline import run_preprocessing
from lss.ray_session import init_ray, shutdown_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    out = Path(args.out)

    # [1] The same studies for every engine (made once, reused by later runs).
    data = out / "synth"
    generate_dataset(SynthConfig(cases=args.cases, seed=5000, format="dicom"), data, workers=2)

    # [2] Serial loop, then Ray Data with 1 and 2 fractional-CPU actors, each into a fresh folder.
    init_ray(RayConfig())
    runs = []
    try:
        for name, engine, workers in (("serial loop", "serial", 1), ("Ray Data, 1 actor", "ray", 1),
                                      ("Ray Data, 2 actors", "ray", 2)):
            target = out / f"pre_{engine}_{workers}"
            shutil.rmtree(target, ignore_errors=True)
            config = PreprocessConfig(workers=workers, cpus_per_worker=0.5)
            started = time.perf_counter()
            summary = run_preprocessing(data, target, config, engine=engine)
            seconds = time.perf_counter() - started
            assert summary.ok == args.cases, summary
            runs.append({"engine": name, "seconds": round(seconds, 2), "studies_per_s": round(args.cases / seconds, 3)})
    finally:
        shutdown_ray()

    # [3] Report: studies/s and ratios against the serial loop.
    base = runs[0]["studies_per_s"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"\nPreprocessing {args.cases} synthetic DICOM studies ({machine})\n")
    print("| engine | wall s | studies/s | vs serial |")
    print("|---|---|---|---|")
    for run in runs:
        run["vs_serial"] = round(run["studies_per_s"] / base, 2)
        print(f"| {run['engine']} | {run['seconds']} | {run['studies_per_s']} | {run['vs_serial']}x |")
    (out / "preprocess.json").write_text(json.dumps({"cases": args.cases, "machine": machine, "runs": runs}, indent=1))
    print(f"\nwritten: {out / 'preprocess.json'}")


if __name__ == "__main__":
    main()
