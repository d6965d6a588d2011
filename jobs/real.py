"""Real MRI: train on phantoms alone and on phantoms + real labelled scans, score both on real scans they never saw.

    python jobs/real.py                      # writes results/real.md and results/real/ (about an hour on 2 CPUs)
    python jobs/real.py --folds 3 --epochs 12 --cases 32

[1] configuration  [2] phantoms (synthesized, Ray Data)  [3] the real sets through their dataset cards (Ray Data)
[4] the phantom-only model (Ray Train)  [5] one mixed model per cross-validation fold of fastcleverseg_vb2 (Ray
Train; phantoms + the other folds + the Vesal training slices, by the sampling weights of ``train.mix``)
[6] scores: vertebral-body Dice / HD95 on each fold's held-out scans, disc and body Dice on the Vesal validation
slices (15-19), the crop placement of the model's first pass, the evidence image of the shared SCT scan per model
[7] results/real.md (this job writes it; never edit it by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lss.cli import add_config_arguments, command_args, setup_logging, train_from_args
from lss.config import MixSource, load_config
from lss.data.adapters.card import card_splits, load_card
from lss.data.cases import read_jsonl
from lss.data.synth.generate import generate_dataset
from lss.evaluation.real_scans import crop_placement, level_safety
from lss.evaluation.segmentation import bootstrap_interval, score_segmentation
from lss.preprocessing.pipeline import run_preprocessing
from lss.ray_session import init_ray, shutdown_ray

REPO_ROOT = Path(__file__).resolve().parents[1]
CARDS = REPO_ROOT / "data" / "cards"
SCT_SCAN = REPO_ROOT / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"
REUSED: list[str] = []  # models an earlier run of the same command trained (its --out folder keeps them)


def _step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def folds(study_ids: list[str], k: int, seed: int = 0) -> list[list[str]]:
    """k disjoint test folds by a seeded hash (one scan per subject here, so no subject is in two folds)."""
    ranked = sorted(study_ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    return [sorted(ranked[i::k]) for i in range(k)]


def _labelled(data_dir: Path) -> list[str]:
    return [r["study_id"] for r in read_jsonl(data_dir / "preprocessed.jsonl") if r.get("has_sagittal_labels")]


def _train(config, data: Path, name: str, mix: list[MixSource]) -> Path:
    """`lss train --reuse` with ``train.mix`` set: a model an earlier run of this job trained is reused."""
    run_config = config.model_copy(update={"train": config.train.model_copy(update={"mix": mix})})
    started = time.perf_counter()
    result, reused = train_from_args(command_args("train", ["--data", data, "--name", name, "--reuse"]), run_config)
    if reused:
        print(f"    {name}: reusing {result.best_model}")
        REUSED.append(name)
        return result.best_model
    print(f"    {name}: best val macro Dice {result.best_metrics.get('val_dice_macro', float('nan')):.3f} "
          f"(epoch {result.best_metrics.get('epoch')}), {time.perf_counter() - started:.0f} s")
    return result.best_model


def _evidence(model_path: Path, config, out: Path) -> Path | None:
    """The sagittal evidence image of the shared SCT scan, diagnosed with the model's first pass placing the crop."""
    from lss.inference.diagnose import Diagnoser

    Diagnoser(model_path, config).diagnose_path(SCT_SCAN, out)
    return next(iter(sorted(out.rglob("sagittal.png"))), None)


def sct_safety(model_path: Path, config) -> dict[str, Any]:
    """What the diagnosis of the shared SCT scan states per level (status, stated grade, review, reasons)."""
    from lss.inference.diagnose import Diagnoser

    findings = Diagnoser(model_path, config).diagnose_path(SCT_SCAN).findings
    return {"levels": {f.level: {"status": f.status, "stated": None if f.stated_severity is None
                                 else f.stated_severity.value, "review": f.review,
                                 "reasons": f.not_assessable_reasons or [r for r in [f.withheld_reason] if r]}
                       for f in findings.levels},
            "study_reasons": findings.not_assessable_reasons,
            "naming": {k: findings.level_naming.get(k) for k in ("method", "status")}}


def _mean_ci(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "n/a"
    low, high = bootstrap_interval(finite)
    ci = "" if not np.isfinite(low) else f" [{low:.3f}, {high:.3f}]"
    return f"{np.mean(finite):.3f}{ci} (n={len(finite)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/real", help="working folder (default: outputs/real)")
    parser.add_argument("--results", default=str(REPO_ROOT / "results"), help="where real.md and real/ go")
    parser.add_argument("--cases", type=int, default=32, help="synthetic studies (default: 32)")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds of fastcleverseg_vb2 (>= 3)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs of every model (default: 12)")
    parser.add_argument("--real-weight", type=float, default=1.0,
                        help="sampling weight of each real set (the phantoms have 1; default: 1)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.folds < 3:
        parser.error("--folds must be at least 3")
    setup_logging(quiet=True)
    started = time.perf_counter()
    out, results = Path(args.out).resolve(), Path(args.results)

    # [1] Configuration: the CPU defaults; sagittal-only training (the real sets have no axial series).
    _step(1, "configuration")
    config = load_config(args.config, profile=args.profile, overrides=[
        f"synth.cases={args.cases}", "synth.format=nifti", "synth.sagittal_inplane_mm=[0.9, 0.9]",
        "synth.axial_inplane_mm=[0.9, 0.9]", "synth.through_slice_samples=1", f"train.epochs={args.epochs}",
        "train.use_axial=false", "train.test_fraction=0.0", f"train.storage_path={out / 'train'}",
        "ray.include_dashboard=true", *args.overrides])

    # [2] Phantoms.
    _step(2, f"{config.synth.cases} phantoms -> {out / 'phantoms'}")
    generate_dataset(config.synth, out / "synth", workers=2)
    init_ray(config.ray)
    try:
        print(run_preprocessing(out / "synth", out / "phantoms", config.preprocess, config.ray))

        # [3] The real labelled sets, read through their dataset cards.
        _step(3, "real sets through their dataset cards")
        data = {}
        for name in ("fastcleverseg_vb2", "vesal_sagittal_2d"):
            summary = run_preprocessing(CARDS / f"{name}.yaml", out / name, config.preprocess, config.ray)
            print(summary)
            data[name] = out / name
        vb2 = _labelled(data["fastcleverseg_vb2"])
        vesal_val = sorted(set(card_splits(load_card(CARDS / "vesal_sagittal_2d.yaml"))["val"])
                           & set(_labelled(data["vesal_sagittal_2d"])))
        test_folds = folds(vb2, args.folds)
        print(f"    fastcleverseg_vb2: {len(vb2)} labelled scans in {args.folds} folds of "
              f"{[len(f) for f in test_folds]}; Vesal validation slices: {len(vesal_val)}")

        # [4] Phantoms only.
        _step(4, "training on phantoms only")
        models = {"phantom-only": _train(config, out / "phantoms", "phantom_only", [])}

        # [5] Phantoms + real, one model per fold (its test scans and the Vesal validation slices held out).
        _step(5, f"training on phantoms + real scans, {args.folds} folds")
        for k, test in enumerate(test_folds):
            mix = [MixSource(path=str(data["fastcleverseg_vb2"]), weight=args.real_weight, holdout=test,
                             name="fastcleverseg_vb2"),
                   MixSource(path=str(data["vesal_sagittal_2d"]), weight=args.real_weight, holdout=vesal_val,
                             name="vesal_sagittal_2d")]
            models[f"mixed fold {k + 1}"] = _train(config, out / "phantoms", f"mixed_fold{k + 1}", mix)
    finally:
        shutdown_ray()

    # [6] Scores on real scans no model trained on.
    _step(6, "scoring on held-out real scans")
    rows = {}
    for label in ("phantom-only", "mixed"):
        body, body_hd, disc, vbody = [], [], [], []
        for k, test in enumerate(test_folds):
            model = models["phantom-only" if label == "phantom-only" else f"mixed fold {k + 1}"]
            scored = score_segmentation(model, data["fastcleverseg_vb2"], test)
            body += [c["dice_vertebral_body"] for c in scored["per_case"]]
            body_hd += [c["hd95_vertebral_body"] for c in scored["per_case"]]
            if label == "phantom-only" and k:
                continue  # one model: the Vesal slices once
            vesal = score_segmentation(model, data["vesal_sagittal_2d"], vesal_val)
            disc += [c["dice_disc"] for c in vesal["per_case"]]
            vbody += [c["dice_vertebral_body"] for c in vesal["per_case"]]
        placement, coverage = [], []
        for k, test in enumerate(test_folds):
            model = models["phantom-only" if label == "phantom-only" else f"mixed fold {k + 1}"]
            offsets, covered = crop_placement(model, config, CARDS / "fastcleverseg_vb2.yaml", test)
            placement, coverage = placement + offsets, coverage + covered
        rows[label] = {"vb2_body_dice": body, "vb2_body_hd95": body_hd, "vesal_disc_dice": disc,
                       "vesal_body_dice": vbody, "crop_offset_mm": placement, "crop_body_coverage": coverage}
        print(f"    {label}: vb2 body Dice {_mean_ci(body)}; Vesal disc Dice {_mean_ci(disc)}")

    # Level naming and safety on the held-out healthy vb2 scans; the SCT scan's statements.
    safety = {}
    for label in ("phantom-only", "mixed"):
        total: dict[str, int] = {}
        for k, test in enumerate(test_folds):
            model = models["phantom-only" if label == "phantom-only" else f"mixed fold {k + 1}"]
            for key, value in level_safety(model, config, CARDS / "fastcleverseg_vb2.yaml", test).items():
                total[key] = total.get(key, 0) + value
        total["sct"] = sct_safety(models["phantom-only" if label == "phantom-only" else "mixed fold 1"], config)
        safety[label] = total
        print(f"    {label}: vb2 level naming {total['naming_right']}/{total['naming_levels']}, assessable "
              f"{total['assessable']}/{total['levels']}, Moderate/Severe stated without review "
              f"{total['moderate_severe_unflagged']}")

    # Evidence of the shared SCT scan, per model (the model's first pass places the crop; no label is used).
    figures = results / "real"
    if figures.exists():
        shutil.rmtree(figures)
    figures.mkdir(parents=True)
    evidence = {}
    for label, model in (("phantom-only", models["phantom-only"]), ("mixed", models["mixed fold 1"])):
        slug = label.replace(" ", "_")
        png = _evidence(model, config, out / "sct" / slug)
        if png is not None:
            target = figures / f"sct_{slug}.png"
            shutil.copy(png, target)
            evidence[label] = target

    # [7] results/real.md.
    _step(7, f"writing {results / 'real.md'}")
    lines = [
        "# Real MRI: phantom-only vs mixed training",
        "",
        f"Written by `python jobs/real.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d')} ({time.perf_counter() - started:.0f} s on this machine"
        + (f"; reused the models {', '.join(REUSED)} trained by an earlier run of it" if REUSED else "")
        + "). Do not edit by hand.",
        "",
        f"- Phantoms: {config.synth.cases} synthetic studies; {config.train.epochs} epochs per model, sagittal branch "
        f"only, loss `{config.loss.name}`, real-set sampling weight {args.real_weight} (phantoms 1).",
        f"- `fastcleverseg_vb2` (vertebral bodies only, T11-L5): {len(vb2)} scans, {args.folds}-fold "
        "cross-validation, one scan per subject so no subject is in two folds; each mixed model is scored on the "
        "fold it never saw; the phantom-only model on every fold.",
        f"- `vesal_sagittal_2d` (discs + bodies, 2D): the {len(vesal_val)} validation slices (15-19), never trained "
        "on by any model.",
        "- Mean over held-out cases, with a 95% bootstrap interval over cases; unlabelled structures are not scored.",
        "",
        "- Crop placement (the crop a scan without a mask gets): on the held-out vb2 scans preprocessed without "
        "their masks, the share of labelled L1-L5 body voxels inside the crop the model's first pass places, and the "
        "distance (mm, sagittal plane) from the crop the labels place (centred on the T11-L5 bodies; the model's "
        "first pass centres between L5/S1 and L1/L2, so part of the offset is by design).",
        "- Vesal columns of the mixed row pool the three fold models on the same 5 slices (n = 15).",
        "",
        "| model | vb2 vertebral-body Dice | vb2 vertebral-body HD95 (mm) | Vesal disc Dice | Vesal body Dice | "
        "vb2 L1-L5 bodies inside the model-placed crop | vb2 crop offset (mm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        lines.append(f"| {label} | {_mean_ci(row['vb2_body_dice'])} | {_mean_ci(row['vb2_body_hd95'])} | "
                     f"{_mean_ci(row['vesal_disc_dice'])} | {_mean_ci(row['vesal_body_dice'])} | "
                     f"{_mean_ci(row['crop_body_coverage'])} | {_mean_ci(row['crop_offset_mm'])} |")
    lines += ["", "Targets (issue 13): vertebral-body Dice >= 0.90 on the folds, disc Dice >= 0.88 on the Vesal "
              "validation slices. Anchors: SPINEPS 0.92 / 0.97 (vertebra / disc), FastCleverSeg ~0.94.", ""]
    lines += ["## Per held-out vb2 scan (vertebral-body Dice)", "", "| scan | phantom-only | mixed |", "|---|---|---|"]
    for i, sid in enumerate(sid for fold in test_folds for sid in fold):
        lines.append(f"| {sid} | {rows['phantom-only']['vb2_body_dice'][i]:.3f} | "
                     f"{rows['mixed']['vb2_body_dice'][i]:.3f} |")
    lines += ["", "## Level naming and what is stated on healthy real scans (issue 14)", "",
              "Held-out `fastcleverseg_vb2` scans (healthy subjects). Naming: the disc the model's naming (counted "
              "from the sacrum) puts at each level overlaps the disc between that level's two labelled bodies "
              "(L1/L2-L4/L5; the sacrum is unlabelled). Diagnosis: each scan diagnosed as a user's would be, without "
              "its mask; on healthy subjects every Moderate/Severe statement is a false alarm. SCT: the shared "
              "unlabelled scan (mixed: fold 1's model).", "",
              "| model | vb2 level naming | vb2 levels assessable | graded | withheld | Moderate/Severe stated "
              "without review | with review | SCT levels assessable | SCT Moderate/Severe without review |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, row in safety.items():
        sct_levels = row["sct"]["levels"].values()
        lines.append(
            f"| {label} | {row['naming_right']}/{row['naming_levels']} "
            f"({row['naming_right'] / max(row['naming_levels'], 1):.3f}) | {row['assessable']}/{row['levels']} "
            f"({row['assessable'] / max(row['levels'], 1):.2f}) | {row['graded']} | {row['withheld']} | "
            f"{row['moderate_severe_unflagged']} ({row['moderate_severe_unflagged'] / max(row['levels'], 1):.3f}) | "
            f"{row['moderate_severe_flagged']} | {sum(v['status'] != 'not_assessable' for v in sct_levels)}/5 | "
            f"{sum(v['stated'] in ('Moderate', 'Severe') and not v['review'] for v in sct_levels)} |")
    sct = safety.get("mixed", {}).get("sct")
    if sct:
        lines += ["", f"SCT scan (mixed): naming {sct['naming']['method']}; study-level reasons: "
                  f"{'; '.join(sct['study_reasons']) or 'none'}.", ""]
    lines += ["Targets (issue 14): level naming >= 0.95 on the vb2 folds; on healthy scans from other sites at most "
              "5% of levels stated Moderate/Severe without review or abstention, at least 80% assessable.", ""]
    lines += ["", "## The shared SCT scan (unlabelled), sagittal evidence per model", ""]
    for label, path in evidence.items():
        lines.append(f"- {label}: ![{label}](real/{path.name})")
    (results / "real.md").write_text("\n".join(lines) + "\n")
    (results / "real.json").write_text(json.dumps({"rows": rows, "safety": safety, "folds": test_folds,
                                                   "vesal_val": vesal_val},
                                                  indent=1, default=float) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
