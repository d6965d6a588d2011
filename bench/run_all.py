"""Runs every benchmark and writes bench/results.md from what they print (``make bench``).

    python bench/run_all.py                   # all of them (~25 min on 2 cores) -> bench/results.md
    python bench/run_all.py model serve       # some of them: their sections are replaced, the others kept
    LSS_BENCH_MODEL=outputs/train/RUN/best_model.pt python bench/run_all.py serve   # serve a trained model
    python bench/run_all.py --device cuda model train serve     # on a GPU -> bench/results_gpu.md (bench/gpu.sh)

Each benchmark runs in its own process, in the order below (later ones reuse the studies earlier ones make); its
printed lines go into the file verbatim, with the command, its date and wall time, under a description of the
machine. Every number in a section is a ratio or a rate measured in that one run: compare within a section, not
across sections run on other days or machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "synth_balance": "synthetic severity balance vs RSNA 2024",
    "preprocess": "preprocessing: serial loop vs Ray Data actor pools",
    "model": "model cost per study (params, FLOPs, forward / backward time) per variant",
    "train": "training loop: plain PyTorch vs Ray Train (1 and 2 workers; 1 per GPU)",
    "data_loading": "reading cases in a Train worker: cached dataset vs Ray Dataset shard",
    "attention": "level-prompt attention hit rate: Spatial Patch Cross-Attention vs global pooling",
    "serve": "serving: in-process vs Serve at concurrency 1/4/16, batching, load, replica kill",
    "hostile": "hostile clients: a slow-client flood, no token with 5 GiB announced, memory amplification",
}
# What a benchmark is given on a GPU: batches that keep the device busy, mixed precision, one Train worker per GPU.
GPU_ARGS = {
    "model": ["--batch", "16", "--amp", "--repeats", "10"],
    "train": ["--workers", "1", "--batch", "4", "--epochs", "3", "--cases", "24", "--steps", "40", "--amp"],
    "serve": ["--requests", "8", "--load-seconds", "20"],
}


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def _sections(path: Path) -> dict[str, list[str]]:
    """The ``## name: ...`` sections of an earlier results file, by benchmark name."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    date = ""  # files written before sections carried their own date had one for the whole file
    for line in path.read_text().splitlines():
        if line.startswith("- Date: "):
            date = line.removeprefix("- Date: ")
        if line.startswith("`python bench/") and " UTC, " not in line and date:
            line = line.replace("` — ", f"` — {date}, ", 1)
        if line.startswith("## "):
            name = line[3:].split(":", 1)[0]
            current = sections[name] = [] if name in BENCHMARKS else None
        if current is not None:
            current.append(line)
    return sections


def _write(path: Path, head: list[str], sections: dict[str, list[str]]) -> None:
    """The file: the head, then the sections in the order of ``BENCHMARKS``."""
    body = [line for name in BENCHMARKS if name in sections for line in sections[name]]
    path.write_text("\n".join([*head, *body]).rstrip("\n") + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", help=f"some of {list(BENCHMARKS)} (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the model, train and serve benchmarks")
    parser.add_argument("--text-encoder", help="passed to the model, train and serve benchmarks (e.g. random-small)")
    parser.add_argument("--out", help="default bench/results.md (cpu) or bench/results_gpu.md (cuda)")
    args = parser.parse_args(argv)
    chosen = args.benchmarks or list(BENCHMARKS)
    gpu = args.device.startswith("cuda")
    unknown = [name for name in chosen if name not in BENCHMARKS or (gpu and name not in GPU_ARGS)]
    if unknown:
        allowed = list(GPU_ARGS) if gpu else list(BENCHMARKS)
        print(f"unknown benchmarks {unknown} for --device {args.device}; choose from {allowed}", file=sys.stderr)
        return 2
    written = Path(args.out) if args.out else REPO / "bench" / ("results_gpu.md" if gpu else "results.md")
    made_by = "bench/gpu.sh" if gpu else "make bench"
    head = ["# Benchmarks" + (" on a GPU" if gpu else ""), "",
            f"Written by `python bench/run_all.py` (`{made_by}`); a section rerun on its own "
            "(`python bench/run_all.py NAME`) replaces only that section. Do not edit by hand.", "",
            f"- Machine: {_machine()}", ""]
    sections = _sections(written) if written.exists() else {}
    failed = 0
    for name in chosen:
        command = [sys.executable, str(REPO / "bench" / f"{name}.py")]
        if gpu:
            command += ["--device", args.device, *GPU_ARGS[name]]
        if args.text_encoder and name in GPU_ARGS:
            command += ["--text-encoder", args.text_encoder]
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
        model = (f", with LSS_BENCH_MODEL={os.environ['LSS_BENCH_MODEL']}"
                 if name == "serve" and os.environ.get("LSS_BENCH_MODEL") else "")
        lines = [f"## {name}: {BENCHMARKS[name]}", "",
                 f"`{shown}`{model} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {wall:.0f} s"
                 + ("" if run.returncode == 0 else f", **failed (exit {run.returncode})**"), "", "```text", *printed]
        if run.returncode != 0:
            failed += 1
            lines += [*run.stderr.splitlines()[-15:]]
        sections[name] = [*lines, "```", ""]
        _write(written, head, sections)  # after each benchmark: a later one that hangs loses nothing
    print(f"written: {written}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
