"""Benchmark: Ray Train's training loop (1 worker, then 2) against a plain PyTorch loop, same model and data.

    python bench/train.py                     # 40 synthetic studies (made once), 12 steps of batch 2 per run
    python bench/train.py --device cuda --workers 1 --batch 4 --epochs 3 --amp    # on a GPU (bench/gpu.sh)

Steps/s is measured inside the loop (the training steps of one epoch, after a warm-up step for the plain loop; with
--epochs N > 1 the Ray runs report their last epoch, which leaves CUDA's and cuDNN's warm-up in the first);
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


def _plain_loop(config: LSSConfig, data_dir: Path, train_ids: list[str], steps: int, device: torch.device) -> float:
    model = build_model(config.model, config.preprocess.axial_slices, config.preprocess.axial_spacing_mm).to(device)
    seg_s, seg_a = (build_segmentation_loss(config.loss, NUM_STRUCTURES).to(device) for _ in range(2))
    severity, localise = SeverityLoss(weights="rsna").to(device), AttentionLocalisationLoss().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    loader = torch.utils.data.DataLoader(CaseDataset(data_dir, train_ids), batch_size=config.train.batch_size,
                                         shuffle=True, collate_fn=collate_samples, drop_last=True)
    use_amp = config.train.amp and device.type == "cuda"  # the same autocast + GradScaler as the Train loop
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    model.train()
    done, started = 0, None
    while done <= steps:
        for batch in loader:
            if done == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()  # after one warm-up step
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with torch.autocast(device_type=device.type, enabled=use_amp):
                out = model(batch["sagittal"], batch["axial"], batch["axial_present"])
                terms = compute_losses(out, batch, seg_s, seg_a, severity, localise, config, model.prompts.level_slice)
            optimiser.zero_grad()
            scaler.scale(terms["total"]).backward()
            scaler.step(optimiser)
            scaler.update()
            done += 1
            if done > steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - started) if started else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray Train worker counts to run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Ray Train workers then take one GPU each)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (GPU only), in both loops")
    parser.add_argument("--cases", type=int, default=40, help="synthetic studies to train on")
    parser.add_argument("--epochs", type=int, default=1,
                        help="Ray Train epochs; with more than one, steps/s is the last epoch's (after the warm-up)")
    parser.add_argument("--text-encoder", default="minilm", help="'minilm' (packaged) or 'random-small'")
    parser.add_argument("--data", default="outputs/bench/data", help="where the benchmark studies are made")
    parser.add_argument("--out", default="outputs/bench/train")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # [1] The same preprocessed studies for every run.
    device = torch.device(args.device)
    synth = SynthConfig(cases=args.cases, seed=7000, format="nifti", sagittal_inplane_mm=(0.9, 0.9),
                        axial_inplane_mm=(0.9, 0.9), through_slice_samples=1, class_balance="uniform")
    data = Path(args.data)
    generate_dataset(synth, data / "synth")
    run_preprocessing(data / "synth", data / "pre", PreprocessConfig(), engine="serial")
    gpu = device.type == "cuda"
    config = LSSConfig.model_validate({
        "model": {"text_encoder": args.text_encoder},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "steps_per_epoch": args.steps,
                  "storage_path": str(out / "runs"),
                  "augment": False, "cpus_per_worker": 2.0 if gpu else 1.0, "use_gpu": gpu, "amp": args.amp}})
    split = load_split(data / "pre", config.train.val_fraction, config.train.test_fraction, config.train.split_seed)

    # [2] A plain PyTorch loop in this process.
    torch.manual_seed(0)
    rate = _plain_loop(config, data / "pre", split["train"], args.steps, device)
    rows = [{"loop": "plain PyTorch", "workers": 1, "steps_per_s": round(rate, 3)}]
    # [3] Ray Train with 1 and 2 workers (each worker does steps_per_epoch steps on its shard).
    init_ray(config.ray)
    try:
        for workers in args.workers:
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
    where = torch.cuda.get_device_name(device) if gpu else "CPU"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {where}, torch {torch.__version__}"
    print(f"\nTraining loop on {device.type}{' (AMP)' if args.amp and gpu else ''}, batch {args.batch} per worker, "
          f"{args.steps} steps ({machine})\n")
    print("| loop | workers | steps/s | samples/s | vs plain | wall s (incl. start-up) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        samples = r["steps_per_s"] * args.batch * r["workers"]
        print(f"| {r['loop']} | {r['workers']} | {r['steps_per_s']} | {samples:.2f} | {r['steps_per_s'] / base:.2f}x | "
              f"{r.get('wall_s', '-')} |")
    (out / f"train_{device.type}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
