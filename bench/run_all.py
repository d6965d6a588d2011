"""Runs every benchmark and writes bench/results.md from what they print (``make bench``).

    python bench/run_all.py                   # all of them (~25 min on 2 cores)
    python bench/run_all.py model serve       # some of them
    LSS_BENCH_MODEL=outputs/train/RUN/best_model.pt python bench/run_all.py serve   # serve a trained model

Each benchmark runs in its own process, in the order below (later ones reuse the studies earlier ones make); its
printed lines go into the file verbatim, with the command and its wall time, under a description of the machine.
Every number in the file is a ratio or a rate measured in that one run: compare within the file, not across machines.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "synth_balance": "synthetic severity balance vs RSNA 2024",
    "preprocess": "preprocessing: serial loop vs Ray Data actor pools",
    "model": "model cost per study (params, FLOPs, forward / backward time) per variant",
    "train": "training loop: plain PyTorch vs Ray Train with 1 and 2 workers",
    "data_loading": "reading cases in a Train worker: cached dataset vs Ray Dataset shard",
    "attention": "level-prompt attention hit rate: Spatial Patch Cross-Attention vs global pooling",
    "serve": "serving: in-process vs Serve at concurrency 1/4/16, batching, load, replica kill",
}


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    lines = ["# Benchmarks", "",
             f"Written by `{' '.join(['python bench/run_all.py', *argv])}` (`make bench`"
             + (f", with LSS_BENCH_MODEL={os.environ['LSS_BENCH_MODEL']}" if os.environ.get("LSS_BENCH_MODEL") else "")
             + "); do not edit by hand.",
             "", f"- Machine: {_machine()}", f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", ""]
    failed = 0
    for name in chosen:
        command = [sys.executable, str(REPO / "bench" / f"{name}.py")]
        if name == "serve" and os.environ.get("LSS_BENCH_MODEL"):
            # A trained model matters here: its sagittal pass finds the discs, so the axial series get matched.
            command += ["--model", os.environ["LSS_BENCH_MODEL"]]
        print(f"== {name}: {BENCHMARKS[name]}", flush=True)
        started = time.perf_counter()
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        printed = [line for line in run.stdout.splitlines() if line.strip()]
        print("\n".join(printed), flush=True)
        shown = " ".join(["python", *[str(Path(c).relative_to(REPO)) if c.startswith(str(REPO)) else c
                                      for c in command[1:]]])
        lines += [f"## {name}: {BENCHMARKS[name]}", "", f"`{shown}` — {wall:.0f} s"
                  + ("" if run.returncode == 0 else f", **failed (exit {run.returncode})**"), "", "```text", *printed]
        if run.returncode != 0:
            failed += 1
            lines += [*run.stderr.splitlines()[-15:]]
        lines += ["```", ""]
    (REPO / "bench" / "results.md").write_text("\n".join(lines) + "\n")
    print(f"written: {REPO / 'bench' / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
