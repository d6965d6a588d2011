"""The main job, end to end on one machine: synthesize studies -> Ray Data preprocessing (phantoms, the real scan and
the labelled real sets of the shared data, through their dataset cards) -> Ray Train on phantoms + real scans
-> a small Ray Tune + Optuna sweep over the PID gains -> evaluation -> the Serve app -> diagnose a held-out study and
the real scan over HTTP.

    make demo                      # = python jobs/demo.py
    python jobs/demo.py --cases 64 --epochs 20 --trials 4

Everything runs on an embedded local Ray started in-process; outputs go under --out (default outputs/demo). A
second run reuses what is there: the studies, the shards, the trained model and the finished sweep.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path

from lss.anatomy import LEVELS, SEVERITIES
from lss.cli import (
    add_config_arguments,
    command_args,
    evaluate_from_args,
    format_training,
    format_tuning,
    setup_logging,
    train_from_args,
    tune_from_args,
)
from lss.config import load_config
from lss.data.synth.generate import generate_dataset
from lss.preprocessing.pipeline import plan_preprocessing, run_plans
from lss.ray_session import init_ray, shutdown_ray

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SCAN = REPO_ROOT / "data" / "real" / "sct_t2_lumbar" / "t2_lumbar.nii.gz"
REAL_CARDS = [REPO_ROOT / "data" / "cards" / f"{name}.yaml" for name in ("fastcleverseg_vb2", "vesal_sagittal_2d")]


DEFAULT_OUT = "outputs/demo"
RUN_NAME = "demo"


def model_path(out: str | Path) -> Path:
    """Where the demo's trained model lands (``serve_configs/local.yaml`` serves this file by default)."""
    return Path(out) / "train" / RUN_NAME / "best_model.pt"


def _step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--cases", type=int, default=48, help="synthetic studies to make (default: 48)")
    parser.add_argument("--format", default="dicom", choices=["dicom", "nifti"])
    parser.add_argument("--real", default=str(REAL_SCAN), help="a real study (file or folder) to preprocess too")
    parser.add_argument("--real-cards", nargs="*", default=[str(c) for c in REAL_CARDS],
                        help="dataset cards of labelled real sets to train on beside the phantoms (default: the "
                             "shared fastcleverseg_vb2 and vesal_sagittal_2d; none: phantoms only)")
    parser.add_argument("--real-weight", type=float, default=0.5,
                        help="sampling weight of each real set (phantoms 1; default 0.5: half the draws are "
                             "phantoms, the only studies with axial series and grades)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis")
    parser.add_argument("--epochs", type=int, default=14, help="training epochs (default: 14)")
    parser.add_argument("--trials", type=int, default=3, help="tuning trials (default: 3, each a tiny Train run)")
    parser.add_argument("--stop-after", choices=["preprocess", "train", "tune", "evaluate", "serve"], default="serve",
                        help="the last stage to run (default: all of them)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    out = Path(args.out)

    # [1] Configuration: CPU defaults, an embedded Ray; --profile/--config/--set change anything.
    _step(1, "configuration")
    config = load_config(args.config, profile=args.profile,
                         overrides=[f"synth.cases={args.cases}", f"synth.format={args.format}",
                                    # Demo sizes: 0.9 mm pixels without partial-volume sub-sampling synthesize fast.
                                    "synth.sagittal_inplane_mm=[0.9, 0.9]", "synth.axial_inplane_mm=[0.9, 0.9]",
                                    "synth.through_slice_samples=1", f"train.epochs={args.epochs}",
                                    # The dashboard (127.0.0.1 only) serves the state API that Ray Train's
                                    # placement-group cleaner polls; without it, it warns every few seconds.
                                    "ray.include_dashboard=true",
                                    f"train.storage_path={model_path(out).parents[1].resolve()}",
                                    f"tune.num_samples={args.trials}", f"tune.storage_path={(out / 'tune').resolve()}",
                                    *args.overrides])
    print(f"    {config.synth.cases} synthetic studies ({config.synth.format}), {config.train.epochs} training epochs, "
          f"{config.tune.num_samples} tuning trials, Ray: "
          f"{config.ray.address or 'embedded local'}, preprocessing actors: {config.preprocess.workers} x "
          f"{config.preprocess.cpus_per_worker} CPU")

    # [2] Synthetic multi-view lumbar MRI: anatomy, stenosis made by disc bulge and flavum, graded by measurement.
    _step(2, f"synthesizing {config.synth.cases} studies -> {out / 'synth'}")
    records = generate_dataset(config.synth, out / "synth", workers=args.workers)
    balance = json.loads((out / "synth" / "dataset.json").read_text())["class_balance"]

    # [3] One Ray session for the rest of the job.
    _step(3, "starting Ray")
    context = init_ray(config.ray)
    dashboard = getattr(context, "dashboard_url", None)
    if dashboard:
        print(f"    Ray dashboard: http://{dashboard}")
    summary: dict = {}
    try:
        # [4] Ray Data preprocessing, one actor pool for every dataset: the synthetic set, the real scan, and the
        # labelled real sets (read through their dataset cards, from ../shared) to train on beside the phantoms.
        _step(4, f"preprocessing with Ray Data: the synthetic studies -> {out / 'preprocessed'}, the real scan "
                 f"{args.real} and the labelled real sets")
        cards = _planned_cards(out, args, config)
        plans = [plan_preprocessing(out / "synth", out / "preprocessed", config.preprocess),
                 plan_preprocessing(args.real, out / "preprocessed_real", config.preprocess),
                 *(plan for _, plan in cards)]
        synth_summary, real_summary, *card_summaries = run_plans(plans, config.preprocess, config.ray)
        for each in (synth_summary, real_summary, *card_summaries):
            print(each)
        failed = synth_summary.failed + real_summary.failed

        # [5] The labelled real sets join the training mix, a few scans of each held out to score on.
        _step(5, "the labelled real sets: trained on beside the phantoms, a few scans held out")
        config, held_out = _with_real_sets(config, out, [card for card, _ in cards], args)
        if args.stop_after != "preprocess":
            summary = _model_stages(config, out, args, held_out)
    finally:
        from ray import serve

        serve.shutdown()
        shutdown_ray()

    # [11] Summary.
    _step(11, "summary")
    print(f"    severity balance of the {len(records)} synthetic studies (per level, Normal/Mild / Moderate / Severe):")
    for level in LEVELS:
        shares = " / ".join(f"{balance[level][s.value]:.0%}" for s in SEVERITIES)
        print(f"      {level}: {shares}")
    print("    outputs:")
    print(f"      studies:    {out / 'synth'} (manifest.jsonl, labels.csv, train.csv, studies/)")
    print(f"      shards:     {synth_summary.index_path}  errors: {synth_summary.errors_path}")
    print(f"      real scan:  {real_summary.index_path}  errors: {real_summary.errors_path}")
    for key, value in summary.items():
        for line in value if isinstance(value, list) else [value]:
            print(f"      {key + ':':11s} {line}")
    print(f"    done in {time.perf_counter() - started:.0f}s")
    if failed:
        print(f"    {failed} studies failed; see the errors files above.")
    return 0 if failed == 0 else 1


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _zip_study(record) -> bytes:
    """A study's images (no masks, no reports) as the zip a client would upload."""
    folder = record.resolve(record.sagittal().path).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "mask" not in path.name and not path.name.endswith((".txt", ".json")):
                zf.write(path, path.relative_to(folder.parent))
    return buffer.getvalue()


def _planned_cards(out: Path, args, config) -> list:
    """``(card, plan)`` of each labelled real set of ``--real-cards`` that can be read (a missing shared set is
    reported and left out: it must not stop the phantom demo)."""
    from lss.data.adapters.card import load_card

    planned = []
    for card_path in args.real_cards:
        card = load_card(card_path)
        try:
            planned.append((card, plan_preprocessing(card_path, out / "preprocessed_cards" / card.name,
                                                     config.preprocess)))
        except Exception as error:  # noqa: BLE001 - reported, and the demo goes on without this set
            print(f"    {card.name}: not used ({type(error).__name__}: {error})")
    return planned


def _with_real_sets(config, out: Path, cards: list, args):
    """Adds the preprocessed labelled real sets to ``train.mix``, each with a few scans held out."""
    from lss.config import MixSource
    from lss.data.adapters.card import card_splits
    from lss.data.cases import read_jsonl

    mix, held_out = [], {}
    for card in cards:
        data = out / "preprocessed_cards" / card.name
        labelled = sorted(r["study_id"] for r in read_jsonl(data / "preprocessed.jsonl")
                          if r.get("has_sagittal_labels"))
        val = sorted(set(card_splits(card).get("val", [])) & set(labelled))
        holdout = val or labelled[: max(1, len(labelled) // 6)]  # the card's validation split, else a sixth
        mix.append(MixSource(path=str(data), weight=args.real_weight, name=card.name, holdout=holdout))
        held_out[card.name] = (data, holdout)
        print(f"    {card.name}: {len(labelled) - len(holdout)} scans to train on, {len(holdout)} held out")
    train = config.train.model_copy(update={"mix": mix})
    return config.model_copy(update={"train": train}), held_out


def _real_scores(model_path: Path, held_out: dict) -> list[str]:
    """Segmentation scores of the trained model on the held-out real scans, per labelled structure."""
    from lss.evaluation.segmentation import score_segmentation

    lines = []
    for name, (data, ids) in held_out.items():
        summary = score_segmentation(model_path, data, ids)["summary"]
        scores = ", ".join(f"{key[5:]} Dice {value:.3f}" for key, value in summary.items()
                           if key.startswith("dice_") and key != "dice_macro" and value == value)
        lines.append(f"{name} ({len(ids)} held-out scans): {scores}")
    return lines


def _model_stages(config, out: Path, args, held_out: dict | None = None) -> dict:
    """Steps 6-10: train, tune, evaluate, serve and diagnose over HTTP. Returns the summary lines.

    Steps 6-8 are `lss train --reuse`, `lss tune --smoke` and `lss evaluate` (the same option handling, through
    ``lss.cli``), run with the demo's configuration.
    """
    import requests

    from lss.data.manifest import read_manifest
    from lss.evaluation import format_summary
    from lss.serve import deploy_config, free_port, load_serve_config, resolve_config

    summary: dict = {}
    data = out / "preprocessed"

    # [6] Ray Train: a short run (`lss train --reuse`: reused when its best model is there).
    run_dir = Path(config.train.storage_path).resolve() / RUN_NAME
    _step(6, f"training with Ray Train ({config.train.epochs} epochs) -> {run_dir}")
    result, reused = train_from_args(command_args("train", ["--data", data, "--name", RUN_NAME, "--reuse"]), config)
    print(_indent(format_training(result, reused)))
    best_model, split = result.best_model, result.split
    summary["model"] = str(best_model)
    for line in _real_scores(best_model, held_out or {}):
        print(f"    real data: {line}")
        summary.setdefault("real data", []).append(line)
    if args.stop_after == "train":
        return summary

    # [7] Ray Tune + Optuna: a few tiny trials over the PID gains and Tversky weights (resumed when there).
    _step(7, f"tuning the PID-Tversky loss: {config.tune.num_samples} trials (Optuna TPE + ASHA)")
    tuned = tune_from_args(command_args("tune", ["--data", data, "--name", "demo_sweep", "--smoke"]), config)
    print(format_tuning(tuned, config))
    summary["sweep"] = str(tuned.table_path)
    if args.stop_after == "tune":
        return summary

    # [8] Evaluation of the trained model on its held-out test split (metrics, reports, figures).
    _step(8, f"evaluating on the {len(split['test'])} held-out test studies -> {out / 'evaluation'}")
    results = evaluate_from_args(command_args("evaluate", [
        "--model", best_model, "--data", data, "--out", out / "evaluation", "--split", run_dir / "split.json",
        "--split-key", "test"]), config)
    print(format_summary(results))
    summary["evaluation"] = results["files"]["results_md"]
    if args.stop_after == "evaluate":
        return summary

    # [9] The Serve application (serve_configs/local.yaml on a free port).
    port = free_port()
    _step(9, f"starting the Serve app on 127.0.0.1:{port}")
    serve_config = load_serve_config(REPO_ROOT / "serve_configs" / "local.yaml")
    serve_config["http_options"]["port"] = port
    deploy_config(resolve_config(serve_config, str(best_model), [f"serve.results_dir={(out / 'serve').resolve()}"]))
    url = f"http://127.0.0.1:{port}"

    # [10] Diagnose a held-out synthetic study and the real scan over HTTP; fetch their montages.
    _step(10, "diagnosing over HTTP: a held-out synthetic study and the real scan")
    records = {r.study_id: r for r in read_manifest(out / "synth" / "manifest.jsonl")}
    held_out = records[split["test"][0]]
    uploads = {held_out.study_id: ("study.zip", _zip_study(held_out)),
               "real scan": (Path(args.real).name, Path(args.real).read_bytes())}
    (out / "diagnoses").mkdir(parents=True, exist_ok=True)
    for name, (filename, payload) in uploads.items():
        response = requests.post(f"{url}/v1/diagnose", files={"files": (filename, payload)}, timeout=600)
        if response.status_code != 200:
            print(f"    {name}: HTTP {response.status_code} {response.text}")
            continue
        body = response.json()
        slug = name.replace(" ", "_")
        (out / "diagnoses" / f"{slug}.json").write_text(json.dumps(body, indent=2) + "\n")
        montage = requests.get(url + body["images"]["montage"], timeout=120)
        (out / "diagnoses" / f"{slug}_montage.png").write_bytes(montage.content)
        truth = ""
        if name in records:
            truth = " (truth: " + ", ".join(f"{lv.level} {lv.severity.value}" for lv in records[name].levels) + ")"
        print(f"\n    --- {name}: {body['timings_s']['total']:.2f} s, model {body['model_version']}{truth}")
        for line in body["report"].splitlines():
            print(f"      {line}")
        print(f"      evidence: {out / 'diagnoses' / (slug + '_montage.png')}  (+ {len(body['images'])} images at "
              f"{url}/v1/studies/{body['request_id']}/images/...)")
    summary["diagnoses"] = str(out / "diagnoses")
    return summary


if __name__ == "__main__":
    sys.exit(main())
