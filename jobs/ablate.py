"""Ablation: each loss, and Spatial Patch Cross-Attention vs global pooling, trained to a validation plateau under
one rule and one budget, over several seeds, evaluated on one fixed evaluation set. Writes results/ablation.md
(never edit it by hand).

    python jobs/ablate.py --data outputs/exp/pre --eval-data outputs/evalset/pre --seeds 0 1 2 \
        --set train.epochs=12 --set train.early_stopping_patience=2 --set train.early_stopping_min_delta=0.003
    python jobs/ablate.py --smoke            # a tiny synthetic set and budget: checks the job, proves nothing

Variants: dice_ce, tversky (fixed), focal_tversky, pid_tversky (all with spatial_patch attention) and pid_tversky
with global_pool attention. Each run is a Ray Train run; the job resumes (a run whose best model exists is not
trained again), runs seed by seed (an interrupted job leaves whole seeds), and ``--train-only`` /
``--evaluate-only`` split the two halves. Reported per variant: mean +- standard deviation over seeds of the
sagittal macro Dice, the axial canal Dice at Moderate/Severe levels, the dural sac area bias of the network's own
argmax masks and, as the product measures it, with the canal offset fitted on each run's validation split
(``lss.model.canal_offset``), the area and AP absolute errors, the balanced accuracy and the Severe recall of the
model's grade (from its measured masks where measured: ``lss.model.measured_grade``), of its severity head alone
(runs trained before the measured grade existed have only the head: these columns are then empty) and of the rule
grade of the measured masks (and, with ``--real-data``, the vertebral-body Dice on
real scans no run trained on); then Adaptive PID-Tversky against each other variant, paired over the same evaluation
studies and seeds (paired bootstrap over studies, and a Wilcoxon signed-rank test on per-study macro Dice).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from lss.cli import add_config_arguments, command_args, evaluate_from_args, setup_logging, train_from_args
from lss.config import LSSConfig, load_config
from lss.evaluation.bootstrap import SEVERITY_STATISTICS, paired_bootstrap, study_confusions
from lss.model import load_model
from lss.ray_session import init_ray, shutdown_ray
from lss.training.canal_offset import fit_model_canal_offset

PID = "Adaptive PID-Tversky"
VARIANTS: dict[str, dict] = {
    "Dice + CE": {"loss": {"name": "dice_ce"}},
    "Tversky (fixed)": {"loss": {"name": "tversky", "alpha": 0.3, "beta": 0.7}},
    "focal Tversky": {"loss": {"name": "focal_tversky", "alpha": 0.3, "beta": 0.7}},
    PID: {"loss": {"name": "pid_tversky"}},
    "PID-Tversky + global_pool": {"loss": {"name": "pid_tversky"}, "model": {"attention": "global_pool"}},
}
# column -> (section, view, key) of evaluate_model's results
METRICS = {
    "macro Dice (sagittal)": ("segmentation", "sagittal", "dice_macro"),
    "canal Dice, Moderate/Severe (axial)": ("canal_moderate_severe", None, "axial_dice_spinal_canal"),
    "area bias, plain argmax (mm2)": ("measurements", "area_mm2_without_offset", "bias"),
    "area bias (mm2)": ("measurements", "area_mm2", "bias"),
    "area MAE (mm2)": ("measurements", "area_mm2", "mae"),
    "AP MAE (mm)": ("measurements", "ap_mm", "mae"),
    "balanced accuracy": ("severity", None, "balanced_accuracy"),
    "Severe recall": ("severity", None, "recall_severe"),
    "head alone: balanced accuracy": ("severity", "head_alone", "balanced_accuracy"),
    "head alone: Severe recall": ("severity", "head_alone", "recall_severe"),
    "rule grade of the masks: balanced accuracy": ("severity", "rule_of_measurements", "balanced_accuracy"),
    "rule grade: Severe recall": ("severity", "rule_of_measurements", "recall_severe"),
}
REAL_COLUMN = "vertebral-body Dice, real scans"


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


def slug_of(variant: str, seed: int) -> str:
    name = variant.lower().replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
    return f"{name}_s{seed}"


def _smoke_data(base: LSSConfig, out: Path) -> Path:
    """The smoke set of ``lss tune --smoke`` (``lss.tuning.make_smoke_dataset``), 10 studies, under OUT/smoke_data."""
    from lss.tuning import make_smoke_dataset

    config = base.model_copy(update={"tune": base.tune.model_copy(update={"storage_path": str(out)}),
                                     "synth": base.synth.model_copy(update={"seed": 9100})})
    return make_smoke_dataset(config, "smoke", cases=10)


def _study_arrays(results: dict) -> dict[str, np.ndarray]:
    """Per evaluation study: macro Dice, a severity confusion matrix and the mean absolute area error."""
    studies = results["per_study"]
    dice = np.array([np.nan if s["sagittal_dice_macro"] is None else s["sagittal_dice_macro"] for s in studies])
    confusion = study_confusions([s["severity_true"] for s in studies], [s["severity_pred"] for s in studies])
    area = np.full(len(studies), np.nan)
    for i, s in enumerate(studies):
        errors = [abs(e) for e in s.get("area_error_mm2") or [] if e is not None]
        area[i] = np.mean(errors) if errors else np.nan
    return {"dice": dice, "confusion": confusion, "area_abs": area}


def _paired(runs: dict[str, dict[int, dict]], other: str, seeds: list[int]) -> list[str]:
    """Adaptive PID-Tversky against one variant over the seeds both have, resampling evaluation studies."""
    from scipy.stats import wilcoxon

    both = [s for s in seeds if s in runs.get(PID, {}) and s in runs.get(other, {})]
    if not both:
        return []
    a = [_study_arrays(runs[PID][s]) for s in both]
    b = [_study_arrays(runs[other][s]) for s in both]
    n = len(a[0]["dice"])

    def over_seeds(arrays, figure):
        return lambda idx: float(np.nanmean([figure(x, idx) for x in arrays]))

    figures = {
        "macro Dice": lambda x, idx: np.nanmean(x["dice"][idx]),
        "balanced accuracy": lambda x, idx: SEVERITY_STATISTICS["balanced_accuracy"](x["confusion"][idx].sum(0)),
        "Severe recall": lambda x, idx: SEVERITY_STATISTICS["recall_severe"](x["confusion"][idx].sum(0)),
        "area MAE (mm2)": lambda x, idx: np.nanmean(x["area_abs"][idx]),
    }
    cells = []
    for figure in figures.values():
        result = paired_bootstrap(over_seeds(a, figure), over_seeds(b, figure), n, resamples=1000)
        p_value = "p < 0.001" if result["p_value"] < 0.001 else f"p = {result['p_value']:.3f}"
        cells.append(f"{result['difference']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}], {p_value}")
    differences = np.concatenate([x["dice"] - y["dice"] for x, y in zip(a, b, strict=True)])
    differences = differences[np.isfinite(differences)]
    p_wilcoxon = float(wilcoxon(differences).pvalue) if np.any(differences != 0) else 1.0
    return [f"| {PID} vs {other} | {len(both)} x {n} | " + " | ".join(cells) + f" | {p_wilcoxon:.3g} |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a preprocessed labelled dataset (required unless --smoke)")
    parser.add_argument("--eval-data", help="a fixed preprocessed evaluation set, the same for every run (default: "
                        "the test split of --data)")
    parser.add_argument("--real-data", help="a preprocessed labelled real set no run trains on (e.g. the "
                        "fastcleverseg_vb2 folder jobs/real.py writes): vertebral-body Dice column")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="train / evaluate only these variants (the table still shows every run under --out)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget, to check the job end to end")
    parser.add_argument("--out", default="outputs/ablation", help="runs and evaluations")
    parser.add_argument("--table", default="results/ablation.md", help="the Markdown table to write")
    parser.add_argument("--train-only", action="store_true", help="train the missing runs, evaluate nothing")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="reuse the runs already under --out: evaluate (what is not yet evaluated) and tabulate")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    out = Path(args.out).resolve()
    started = time.perf_counter()

    # [1] Data and the shared budget and stopping rule.
    smoke = {"train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "val_fraction": 0.2,
                       "test_fraction": 0.3}, "model": {"base_channels": 8, "attention_dim": 32}} if args.smoke else {}
    if args.data is None and not args.smoke:
        parser.error("--data is required unless --smoke")
    base = load_config(args.config, profile=args.profile, overrides=args.overrides)
    data = Path(args.data) if args.data else _smoke_data(base, out)
    eval_data = Path(args.eval_data) if args.eval_data else data
    base_dict = _merge(base.model_dump(mode="json"), smoke)
    base_dict["train"]["storage_path"] = str(out / "runs")

    # [2] Seed by seed, every variant: `lss train --reuse` (Ray Train unless its best model exists), then
    #     `lss evaluate --no-reports` on the evaluation set unless that evaluation exists.
    if not args.evaluate_only:
        init_ray(base.ray)
    try:
        for seed in args.seeds:
            for variant, change in VARIANTS.items():
                if variant not in args.variants:
                    continue
                slug = slug_of(variant, seed)
                run_dir, eval_dir = out / "runs" / slug, out / "eval" / slug
                config = LSSConfig.model_validate(_merge(_merge(base_dict, change), {"train": {"seed": seed}}))
                if args.evaluate_only and not (run_dir / "best_model.pt").is_file():
                    logging.warning("%s: no trained model under %s, left out", slug, run_dir)
                    continue
                if not args.evaluate_only:
                    train_from_args(command_args("train", ["--data", data, "--name", slug, "--reuse"]), config)
                if args.train_only:
                    continue
                if not (eval_dir / "results.json").is_file():
                    split = json.loads((run_dir / "split.json").read_text())
                    if not load_model(run_dir / "best_model.pt").canal_offset.fitted:
                        # A run trained before offsets existed: fit it as run_training now does.
                        fit_model_canal_offset(run_dir / "best_model.pt", data, split["val"])
                    test_split = [] if args.eval_data else ["--split", run_dir / "split.json", "--split-key", "test"]
                    evaluate_from_args(command_args("evaluate", [
                        "--model", run_dir / "best_model.pt", "--data", eval_data, "--out", eval_dir, "--no-reports",
                        *test_split]), config)
                if args.real_data and not (eval_dir / "real.json").is_file():
                    from lss.data.cases import read_jsonl
                    from lss.evaluation.segmentation import score_segmentation

                    ids = [r["study_id"] for r in read_jsonl(Path(args.real_data) / "preprocessed.jsonl")
                           if r.get("has_sagittal_labels")]
                    scored = score_segmentation(run_dir / "best_model.pt", args.real_data, ids)
                    (eval_dir / "real.json").write_text(json.dumps(
                        {"data": str(Path(args.real_data).resolve()), "studies": len(ids),
                         "dice_vertebral_body": scored["summary"]["dice_vertebral_body"]}) + "\n")
    finally:
        if not args.evaluate_only:
            shutdown_ray()
    if args.train_only:
        return 0

    # [3] Gather what exists: per variant and seed, the evaluation and the training history.
    runs: dict[str, dict[int, dict]] = {}
    real: dict[str, dict[int, float]] = {}
    epochs: dict[str, list[str]] = {}
    for variant in VARIANTS:
        for seed in args.seeds:
            eval_dir, run_dir = out / "eval" / slug_of(variant, seed), out / "runs" / slug_of(variant, seed)
            if not (eval_dir / "results.json").is_file():
                continue
            runs.setdefault(variant, {})[seed] = json.loads((eval_dir / "results.json").read_text())
            if (eval_dir / "real.json").is_file():
                real.setdefault(variant, {})[seed] = json.loads((eval_dir / "real.json").read_text())[
                    "dice_vertebral_body"]
            history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line]
            history = [h for h in history if "epoch" in h]
            if history:
                last = history[-1]
                epochs.setdefault(variant, []).append(
                    f"{int(last['epoch'])}{'*' if last.get('early_stopped') else ''}/{int(last.get('best_epoch', 0))}")

    # [4] The tables: mean +- standard deviation over seeds, the paired comparisons, and the verdict. The budget is
    #     read back from the runs (what they trained with), not from this invocation's options.
    trained = sorted((out / "runs").glob("*/config.json"))
    budget = json.loads(trained[0].read_text())["train"] if trained else base_dict["train"]
    any_run = next((r for v in runs.values() for r in v.values()), None)
    columns = list(METRICS) + ([REAL_COLUMN] if real else [])
    lines = [
        "# Ablation", "",
        f"Written by `python jobs/ablate.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"in {time.perf_counter() - started:.0f} s (this invocation; training times are in each run's "
        "history); do not edit by hand.", "",
        f"- Training data: `{data}` (split seed {budget['split_seed']}, the same split for every run)",
        f"- Evaluation set: `{eval_data}`"
        + (f", {any_run['studies']['count']} studies, {any_run['severity']['n']} graded levels "
           f"(Normal/Mild / Moderate / Severe: "
           f"{' / '.join(str(sum(row)) for row in any_run['severity']['confusion_matrix'])})"
           if any_run and any_run.get("severity") else ""),
        f"- Budget and stopping rule, the same for every run: at most {budget['epochs']} epochs x "
        f"{budget.get('steps_per_epoch') or 'all'} steps, batch {budget['batch_size']}; stop when the validation "
        f"macro Dice has not gained {budget.get('early_stopping_min_delta', 0)} for "
        f"{budget.get('early_stopping_patience')} epochs; the checkpoint with the best validation macro Dice is "
        f"evaluated. Seeds {args.seeds}.",
        f"- Model: {base_dict['model']['vision_encoder']}, base channels {base_dict['model']['base_channels']}",
        "",
        "| variant | runs | epochs run / best (* = stopped early) | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    means: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        if variant not in runs:
            lines.append(f"| {variant} | 0 | | " + " | ".join(["not run"] * len(columns)) + " |")
            continue
        cells = []
        for name in columns:
            column = np.array(list(real[variant].values()) if name == REAL_COLUMN else
                              [_metric(r, METRICS[name]) for r in runs[variant].values()], dtype=float)
            finite = column[np.isfinite(column)]
            means.setdefault(variant, {})[name] = float(finite.mean()) if finite.size else float("nan")
            digits = 1 if "mm" in name else 3
            cells.append(f"{finite.mean():.{digits}f} ± {finite.std():.{digits}f}" if finite.size else "n/a")
        lines.append(f"| {variant} | {len(runs[variant])} | {', '.join(epochs.get(variant, []))} | "
                     + " | ".join(cells) + " |")
    lines += ["", "mean ± standard deviation over seeds; each run's own 95% intervals over studies are in "
              f"`{out / 'eval'}/<run>/results.md`.", ""]

    lines += ["## Adaptive PID-Tversky against each variant, paired", "",
              "Differences PID-Tversky minus the other, on the same evaluation studies and seeds: the figure averaged "
              "over seeds, with a 95% paired-bootstrap interval over studies and its two-sided p-value; and the "
              "Wilcoxon signed-rank p-value of the per-study macro Dice differences (all seeds pooled).", "",
              "| comparison | seeds x studies | macro Dice | balanced accuracy | Severe recall | area MAE (mm2) | "
              "Wilcoxon p (macro Dice) |", "|---|---|---|---|---|---|---|"]
    for other in VARIANTS:
        if other != PID:
            lines += _paired(runs, other, args.seeds)

    key = "macro Dice (sagittal)"
    if PID in means:
        best = max(means, key=lambda v: -np.inf if np.isnan(means[v][key]) else means[v][key])
        verdict = (f"{PID} has the best mean macro Dice ({means[PID][key]:.3f})." if best == PID else
                   f"{PID} does NOT have the best mean macro Dice: {best} does ({means[best][key]:.3f} vs "
                   f"{means[PID][key]:.3f}); see the paired table for whether the gap is more than noise.")
        lines += ["", verdict]
    missing = [slug_of(v, s) for v in VARIANTS for s in args.seeds if s not in runs.get(v, {})]
    if missing:
        lines += ["", f"**Incomplete**: {len(missing)} runs are missing ({', '.join(missing)}); rerun the command "
                  "to train and evaluate them (finished runs are reused)."]
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
