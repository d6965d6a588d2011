"""Benchmark: Ray Train's training loop (1 worker, then 2) against a plain PyTorch loop, same model and data.

    python bench/train.py                     # 40 synthetic studies (made once), 12 steps of batch 2 per run

Steps/s is measured inside the loop (the training steps of one epoch, after a warm-up step for the plain loop);
the Ray runs also print their wall time including Ray Train's start-up, validation and checkpointing. With 2
workers each step processes two batches (one per worker) on this 2-core machine, so steps/s falls while samples/s
is what data parallelism buys. Compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from lss.config import LSSConfig, PreprocessConfig, SynthConfig
from lss.data.synth.generate import generate_dataset
from lss.losses import AttentionLocalisationLoss, SeverityLoss, build_segmentation_loss
from lss.model import build_model, collate_samples
from lss.preprocessing.pipeline import run_preprocessing
from lss.ray_session import init_ray, shutdown_ray
from lss.training import CaseDataset, load_split, run_training
from lss.training.loop import NUM_STRUCTURES, compute_losses


def _plain_loop(config: LSSConfig, data_dir: Path, train_ids: list[str], steps: int) -> float:
    model = build_model(config.model, config.preprocess.axial_slices, config.preprocess.axial_spacing_mm)
    seg_s, seg_a = (build_segmentation_loss(config.loss, NUM_STRUCTURES) for _ in range(2))
    severity, localise = SeverityLoss(weights="rsna"), AttentionLocalisationLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    loader = torch.utils.data.DataLoader(CaseDataset(data_dir, train_ids), batch_size=config.train.batch_size,
                                         shuffle=True, collate_fn=collate_samples, drop_last=True)
    model.train()
    done, started = 0, None
    while done <= steps:
        for batch in loader:
            if done == 1:
                started = time.perf_counter()  # after one warm-up step
            out = model(batch["sagittal"], batch["axial"], batch["axial_present"])
            terms = compute_losses(out, batch, seg_s, seg_a, severity, localise, config, model.prompts.level_slice)
            optimiser.zero_grad()
            terms["total"].backward()
            optimiser.step()
            done += 1
            if done > steps:
                break
    return steps / (time.perf_counter() - started) if started else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--data", default="outputs/bench/data", help="where the benchmark studies are made")
    parser.add_argument("--out", default="outputs/bench/train")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # [1] The same preprocessed studies for every run.
    synth = SynthConfig(cases=40, seed=7000, format="nifti", sagittal_inplane_mm=(0.9, 0.9),
                        axial_inplane_mm=(0.9, 0.9), through_slice_samples=1, class_balance="uniform")
    data = Path(args.data)
    generate_dataset(synth, data / "synth")
    run_preprocessing(data / "synth", data / "pre", PreprocessConfig(), engine="serial")
    config = LSSConfig.model_validate({"train": {"epochs": 1, "batch_size": args.batch, "steps_per_epoch": args.steps,
                                                 "storage_path": str(out / "runs"), "augment": False,
                                                 "cpus_per_worker": 1.0}})
    split = load_split(data / "pre", config.train.val_fraction, config.train.test_fraction, config.train.split_seed)

    # [2] A plain PyTorch loop in this process.
    torch.manual_seed(0)
    rows = [{"loop": "plain PyTorch", "workers": 1, "steps_per_s": round(_plain_loop(config, data / "pre",
                                                                                     split["train"], args.steps), 3)}]
    # [3] Ray Train with 1 and 2 workers (each worker does steps_per_epoch steps on its shard).
    init_ray(config.ray)
    try:
        for workers in (1, 2):
            run = config.model_copy(deep=True)
            run.train.num_workers = workers
            started = time.perf_counter()
            result = run_training(run, data / "pre", name=f"bench_{workers}_{int(time.time())}")
            wall = time.perf_counter() - started
            metrics = result.metrics
            rate = metrics["steps"] / metrics["train_seconds"]
            rows.append({"loop": "Ray Train", "workers": workers, "steps_per_s": round(rate, 3),
                         "wall_s": round(wall, 1)})
    finally:
        shutdown_ray()

    # [4] Report.
    base = rows[0]["steps_per_s"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print(f"\nTraining loop, batch {args.batch} per worker, {args.steps} steps ({machine})\n")
    print("| loop | workers | steps/s | samples/s | vs plain | wall s (incl. start-up) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        samples = r["steps_per_s"] * args.batch * r["workers"]
        print(f"| {r['loop']} | {r['workers']} | {r['steps_per_s']} | {samples:.2f} | {r['steps_per_s'] / base:.2f}x | "
              f"{r.get('wall_s', '-')} |")
    (out / "train.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
