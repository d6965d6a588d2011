"""Ablation: the same training budget for each loss and for Spatial Patch Cross-Attention vs global pooling,
over several seeds, evaluated on one held-out test split. Writes results/ablation.md (never edit it by hand).

    python jobs/ablate.py --data outputs/demo/preprocessed --seeds 0 1 2
    python jobs/ablate.py --smoke            # a tiny synthetic set and budget: checks the job, proves nothing

Variants: dice_ce, tversky (fixed), focal_tversky, pid_tversky (all with spatial_patch attention) and pid_tversky
with global_pool attention. Reported: mean and standard deviation over seeds of the sagittal macro Dice, the axial
canal Dice on Moderate/Severe levels, the severity macro-F1, the Severe recall and the bias of the dural sac area
measured on the predicted masks (how much a loss that weighs misses above false alarms inflates the masks).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from lss.cli import add_config_arguments
from lss.config import LSSConfig, PreprocessConfig, SynthConfig, load_config
from lss.evaluation import evaluate_model
from lss.ray_session import init_ray, shutdown_ray
from lss.training import run_training

VARIANTS: dict[str, dict] = {
    "Dice + CE": {"loss": {"name": "dice_ce"}},
    "Tversky (fixed)": {"loss": {"name": "tversky", "alpha": 0.3, "beta": 0.7}},
    "focal Tversky": {"loss": {"name": "focal_tversky", "alpha": 0.3, "beta": 0.7}},
    "Adaptive PID-Tversky": {"loss": {"name": "pid_tversky"}},
    "PID-Tversky + global_pool": {"loss": {"name": "pid_tversky"}, "model": {"attention": "global_pool"}},
}
METRICS = {
    "macro Dice (sagittal)": ("segmentation", "sagittal", "dice_macro"),
    "canal Dice, Moderate/Severe levels (axial)": ("canal_moderate_severe", None, "axial_dice_spinal_canal"),
    "severity macro-F1": ("severity", None, "macro_f1"),
    "Severe recall": ("severity", None, "recall_severe"),
    "dural sac area bias (mm2)": ("measurements", "area_mm2", "bias"),
}


def _merge(base: dict, update: dict) -> dict:
    out = json.loads(json.dumps(base))
    for section, values in update.items():
        out.setdefault(section, {}).update(values)
    return out


def _metric(results: dict, path: tuple) -> float:
    section, view, key = path
    block = results.get(section)
    if view is not None and block is not None:
        block = block.get(view)
    value = None if block is None else block.get(key)
    return float("nan") if value is None else float(value)


def _smoke_data(out: Path) -> Path:
    from lss.data.synth.generate import generate_dataset
    from lss.preprocessing.pipeline import run_preprocessing

    synth = SynthConfig(cases=10, seed=9100, format="nifti", sagittal_inplane_mm=(0.9, 0.9),
                        axial_inplane_mm=(0.9, 0.9), through_slice_samples=1, class_balance="uniform")
    generate_dataset(synth, out / "synth")
    run_preprocessing(out / "synth", out / "pre", PreprocessConfig(), engine="serial")
    return out / "pre"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a preprocessed labelled dataset (required unless --smoke)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget, to check the job end to end")
    parser.add_argument("--out", default="outputs/ablation", help="runs and evaluations")
    parser.add_argument("--table", default="results/ablation.md", help="the Markdown table to write")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="reuse the runs already under --out (same variants and seeds): evaluate and tabulate only")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out = Path(args.out).resolve()
    started = time.perf_counter()

    # [1] Data and the shared budget.
    smoke = {"train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "val_fraction": 0.2,
                       "test_fraction": 0.3}, "model": {"base_channels": 8, "attention_dim": 32}} if args.smoke else {}
    if args.data is None and not args.smoke:
        parser.error("--data is required unless --smoke")
    data = Path(args.data) if args.data else _smoke_data(out / "data")
    base = load_config(args.config, profile=args.profile, overrides=args.overrides)
    base_dict = _merge(base.model_dump(mode="json"), smoke)
    base_dict["train"]["storage_path"] = str(out / "runs")

    # [2] Every variant x seed: train with Ray Train, evaluate the best checkpoint on the test split.
    if not args.evaluate_only:
        init_ray(base.ray)
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        for variant, change in VARIANTS.items():
            for seed in args.seeds:
                config = LSSConfig.model_validate(_merge(_merge(base_dict, change), {"train": {"seed": seed}}))
                slug = f"{variant.lower().replace(' ', '_').replace('+', 'plus').replace('(', '').replace(')', '')}_s{seed}"
                if args.evaluate_only:
                    run_dir = out / "runs" / slug
                    best_model, split = run_dir / "best_model.pt", json.loads((run_dir / "split.json").read_text())
                else:
                    result = run_training(config, data, name=slug)
                    best_model, split = result.best_model, result.split
                evaluation = evaluate_model(best_model, data, out / "eval" / slug, study_ids=split["test"],
                                            reports=False)
                rows.setdefault(variant, []).append({name: _metric(evaluation, path) for name, path in METRICS.items()})
    finally:
        if not args.evaluate_only:
            shutdown_ray()

    # [3] The table: mean +- standard deviation over seeds; the verdict from the numbers.
    budget = base_dict["train"]
    lines = [
        "# Ablation", "",
        f"Written by `python jobs/ablate.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"in {time.perf_counter() - started:.0f} s; do not edit by hand.", "",
        f"- Data: `{data}` ({len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test "
        f"studies, one split for all runs)",
        f"- Budget per run: {budget['epochs']} epochs x {budget.get('steps_per_epoch') or 'all'} steps, batch "
        f"{budget['batch_size']}, seeds {args.seeds}",
        f"- Model: {base_dict['model']['vision_encoder']}, base channels {base_dict['model']['base_channels']}",
        "",
        "| variant | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    means = {}
    for variant, values in rows.items():
        cells = []
        for name in METRICS:
            column = np.array([v[name] for v in values], dtype=float)
            finite = column[np.isfinite(column)]
            mean = float(finite.mean()) if finite.size else float("nan")
            std = float(finite.std()) if finite.size else float("nan")
            means.setdefault(variant, {})[name] = mean
            cells.append(f"{mean:.3f} ± {std:.3f}" if finite.size else "n/a")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    key = "macro Dice (sagittal)"
    winner = max(means, key=lambda v: -np.inf if np.isnan(means[v][key]) else means[v][key])
    pid = means.get("Adaptive PID-Tversky", {}).get(key, float("nan"))
    verdict = ("Adaptive PID-Tversky has the best mean macro Dice." if winner == "Adaptive PID-Tversky" else
               f"Adaptive PID-Tversky does NOT win on macro Dice: {winner} does ({means[winner][key]:.3f} vs "
               f"{pid:.3f}).")
    lines += ["", verdict]
    if args.smoke:
        lines += ["", "This is a --smoke run (tiny data and budget): it checks the job, it measures nothing."]
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
