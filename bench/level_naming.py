"""Benchmark: are the levels named right when the field of view starts anywhere? Prints a table, writes JSON.

    python bench/level_naming.py                                   # 12 random-FOV phantoms, ground-truth masks
    python bench/level_naming.py --cases 40 --model outputs/train/RUN/best_model.pt
    python bench/level_naming.py --cases 0 --vb2 outputs/real40/fastcleverseg_vb2 --model MODEL.pt
    python bench/level_naming.py --vb2 data/cards/fastcleverseg_vb2.yaml --vb2-studies fastcleverseg_vb2_02,...

Levels are named by counting from the sacrum (``lss.reporting.levels.name_levels``) on the mid-sagittal slice of
the preprocessed crop. Two namings are scored:

- "ground truth": ``name_levels`` on the structure mask of the labels (``anatomy.to_structure_mask``), an upper
  bound that tests the counting alone. Phantoms only: fastcleverseg_vb2 labels neither the sacrum nor the discs.
- "model" (with ``--model``): ``name_levels`` on the model's predicted mid-sagittal mask
  (``lss.inference.predict.predict_cases``).

A level is scored where its truth is known. Phantoms: the level's disc label on the mid slice; no label there means
the disc is outside the field of view, and the level must be reported "not_in_field_of_view". fastcleverseg_vb2:
the disc between the level's two labelled bodies (``lss.model.level_targets``); levels without both bodies
(L5/S1: the sacrum is not labelled) are not scored. A found level is right when the disc named for it overlaps its
true disc more than any other level's. A disc cut by the field of view's edge counts as right when named right or
reported not in the field of view (both are safe answers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lss.anatomy import LEVELS, disc_label_for_level, to_structure_mask, vertebra_label
from lss.config import PreprocessConfig, SynthConfig
from lss.data.cases import load_case, read_jsonl
from lss.data.synth.generate import generate_dataset
from lss.inference.predict import column_spacing, fov_z_of
from lss.model.level_targets import level_disc_targets
from lss.preprocessing.pipeline import run_preprocessing
from lss.reporting.levels import FOUND, NOT_IN_FIELD_OF_VIEW, name_levels

PRESENT, ABSENT, CUT = "present", "absent", "cut"


def _phantoms(out: Path, cases: int, seed: int, workers: int) -> Path:
    """[1] Random-FOV phantoms, preprocessed (made once; studies already on disk are reused)."""
    synth = SynthConfig(cases=cases, seed=seed, format="nifti", sagittal_fov_random=True,
                        sagittal_inplane_mm=(0.9, 0.9), axial_inplane_mm=(0.9, 0.9), through_slice_samples=1,
                        report_styles=["concise"])
    generate_dataset(synth, out / "synth", workers=workers)
    run_preprocessing(out / "synth", out / "pre", PreprocessConfig(), engine="serial")
    return out / "pre"


def _vb2(source: Path, out: Path, studies: set[str] | None) -> Path:
    """[2] fastcleverseg_vb2: a preprocessed folder as it is, or its dataset card preprocessed here."""
    if (source / "preprocessed.jsonl").is_file():
        return source
    from lss.data.adapters.card import discover
    from lss.data.manifest import write_manifest

    records = [r for r in discover(source).records if studies is None or r.study_id in studies]
    write_manifest(records, out / "vb2_in" / "manifest.jsonl")
    run_preprocessing(out / "vb2_in" / "manifest.jsonl", out / "vb2_pre", PreprocessConfig(), engine="serial")
    return out / "vb2_pre"


def _cases(folder: Path, studies: set[str] | None) -> list[tuple[str, dict, dict]]:
    rows = [r for r in read_jsonl(folder / "preprocessed.jsonl") if r["status"] == "ok"]
    return [(r["study_id"], load_case(folder / r["path"]), r.get("info") or {})
            for r in rows if studies is None or r["study_id"] in studies]


def sacrum_in_crop(case: dict, kind: str, fov_z: tuple[int, int] | None) -> bool:
    """Whether the mid slice holds the sacrum: S1 labelled (phantoms), or L5 clear of the crop's inferior edge
    (vb2 does not label the sacrum: L5 at least 10 mm above the crop's inferior edge leaves room for S1)."""
    labels = case["sagittal_labels"][case["sagittal_labels"].shape[0] // 2]
    if kind == "phantom":
        return bool((labels == vertebra_label("S1")).any())
    z = np.flatnonzero((labels == vertebra_label("L5")).any(axis=0))
    first = fov_z[0] if fov_z is not None else 0
    return bool(z.size and (z[0] - first) * column_spacing(case["sagittal_affine"], (1, 2))[1] >= 10.0)


def truth(case: dict, kind: str, fov_z: tuple[int, int] | None) -> tuple[np.ndarray, dict[str, str]]:
    """The true disc of each level on the mid slice, (L, Y, Z) bool, and each level's truth: ``PRESENT``,
    ``ABSENT`` (not in the field of view), ``CUT`` (touching the field of view's edge) or missing (not scored)."""
    labels = case["sagittal_labels"][case["sagittal_labels"].shape[0] // 2]
    size_z = labels.shape[1]
    first, last = fov_z if fov_z is not None else (0, size_z - 1)
    if kind == "phantom":
        discs = np.stack([labels == disc_label_for_level(level) for level in LEVELS])
    else:
        discs = level_disc_targets(labels, column_spacing(case["sagittal_affine"], (1, 2)))
    states: dict[str, str] = {}
    for level, disc in zip(LEVELS, discs, strict=False):
        if disc.any():
            z = np.flatnonzero(disc.any(axis=0))
            states[level] = CUT if z[0] <= first or z[-1] >= last else PRESENT
        elif kind == "phantom":
            states[level] = ABSENT
    return discs, states


def score(naming, discs: np.ndarray, states: dict[str, str]) -> dict[str, dict]:
    """Per scored level: its truth, the naming's status, and whether the naming is right."""
    out = {}
    for li, level in enumerate(LEVELS):
        state = states.get(level)
        if state is None:
            continue
        status = naming.status[level]
        named = naming.discs[level]
        overlaps = (discs & named[None]).reshape(len(LEVELS), -1).sum(axis=1) if named is not None else None
        on_its_disc = bool(overlaps is not None and overlaps[li] > 0 and overlaps[li] == overlaps.max())
        if state == PRESENT:
            right = status == FOUND and on_its_disc
        elif state == ABSENT:
            right = status == NOT_IN_FIELD_OF_VIEW
        else:
            right = (status == FOUND and on_its_disc) or status == NOT_IN_FIELD_OF_VIEW
        out[level] = {"truth": state, "status": status, "right": bool(right)}
    return out


def _summary(per_study: dict[str, dict[str, dict]]) -> dict:
    scored = [s for levels in per_study.values() for s in levels.values()]
    by_truth = {t: [s for s in scored if s["truth"] == t] for t in (PRESENT, ABSENT, CUT)}

    def rate(items):
        return round(float(np.mean([s["right"] for s in items])), 4) if items else None

    return {
        "studies": len(per_study),
        "levels_scored": len(scored),
        "accuracy": rate(scored),
        "in_fov_levels": len(by_truth[PRESENT]),
        "in_fov_named_right": rate(by_truth[PRESENT]),
        "not_in_fov_levels": len(by_truth[ABSENT]),
        "not_in_fov_reported": rate(by_truth[ABSENT]),
        "not_in_fov_named_anyway": sum(s["status"] == FOUND for s in by_truth[ABSENT]),
        "cut_levels": len(by_truth[CUT]),
        "cut_safe": rate(by_truth[CUT]),
        "studies_all_right": round(float(np.mean([all(s["right"] for s in lv.values()) for lv in per_study.values()])),
                                   4) if per_study else None,
        "per_level": {level: rate([lv[level] for lv in per_study.values() if level in lv]) for level in LEVELS},
        "statuses": dict(Counter(s["status"] for s in scored)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12, help="random-FOV phantoms (0: none)")
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--workers", type=int, default=2, help="processes making the phantoms")
    parser.add_argument("--vb2", help="a preprocessed fastcleverseg_vb2 folder, or its dataset card (.yaml)")
    parser.add_argument("--vb2-studies", help="comma-separated study ids to keep (e.g. a fold's held-out scans)")
    parser.add_argument("--model", help="a saved model (best_model.pt): also score the naming on its masks")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="outputs/bench/level_naming", help="where the phantoms are made")
    parser.add_argument("--out", default="outputs/bench/level_naming")
    args = parser.parse_args()
    started = time.perf_counter()

    # [1] + [2] The cases: random-FOV phantoms and, optionally, fastcleverseg_vb2 scans.
    sets: dict[str, list] = {}
    if args.cases > 0:
        sets["phantom"] = _cases(_phantoms(Path(args.data), args.cases, args.seed, args.workers), None)
    if args.vb2:
        studies = set(args.vb2_studies.split(",")) if args.vb2_studies else None
        sets["vb2"] = _cases(_vb2(Path(args.vb2), Path(args.data), studies), studies)
    model = None
    if args.model:
        from lss.model import load_model

        model = load_model(args.model, map_location=args.device)

    # [3] Name the levels on each mask and score them against the truth.
    results: dict[str, dict] = {}
    for kind, cases in sets.items():
        namings: dict[str, dict[str, dict]] = {"ground truth": {}, "model": {}}
        sacrum: dict[str, bool] = {}
        for start in range(0, len(cases), args.batch):
            chunk = cases[start:start + args.batch]
            predictions = None
            if model is not None:
                from lss.inference.predict import predict_cases

                predictions = predict_cases(model, [c for _, c, _ in chunk], [s for s, _, _ in chunk],
                                            [i for _, _, i in chunk], device=args.device)
            for b, (study_id, case, info) in enumerate(chunk):
                fov_z = fov_z_of(info)
                spacing = column_spacing(case["sagittal_affine"], (1, 2))
                discs, states = truth(case, kind, fov_z)
                sacrum[study_id] = sacrum_in_crop(case, kind, fov_z)
                if kind == "phantom":  # vb2 labels neither the sacrum nor the discs: nothing to count on
                    mid = case["sagittal_labels"][case["sagittal_labels"].shape[0] // 2]
                    namings["ground truth"][study_id] = score(name_levels(to_structure_mask(mid), spacing, fov_z),
                                                              discs, states)
                if predictions is not None:
                    namings["model"][study_id] = score(name_levels(predictions[b].sagittal_mask, spacing, fov_z),
                                                       discs, states)
        results[kind] = {}
        for name, per_study in namings.items():
            if per_study:
                with_sacrum = {sid: lv for sid, lv in per_study.items() if sacrum[sid]}
                results[kind][name] = _summary(per_study) | {
                    "sacrum_in_crop": len(with_sacrum),
                    "accuracy_sacrum_in_crop": _summary(with_sacrum)["accuracy"] if with_sacrum else None,
                    "levels": per_study}

    # [4] Report: the table printed and written beside the JSON (per-level details there).
    lines = [f"Level naming by counting from the sacrum ({time.perf_counter() - started:.0f} s)", "",
             "| data | mask | studies | levels scored | accuracy | in FOV named right (levels) | not in FOV reported "
             "(levels; named anyway) | cut by FOV safe (levels) | studies all right | sacrum in crop (studies) | "
             "accuracy there |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, by_mask in results.items():
        for name, r in by_mask.items():
            lines.append(f"| {kind} | {name} | {r['studies']} | {r['levels_scored']} | {r['accuracy']} | "
                         f"{r['in_fov_named_right']} ({r['in_fov_levels']}) | {r['not_in_fov_reported']} "
                         f"({r['not_in_fov_levels']}; {r['not_in_fov_named_anyway']}) | {r['cut_safe']} "
                         f"({r['cut_levels']}) | {r['studies_all_right']} | {r['sacrum_in_crop']} | "
                         f"{r['accuracy_sacrum_in_crop']} |")
    print("\n" + "\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "level_naming.md").write_text("\n".join(lines) + "\n")
    (out / "level_naming.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"\n{out / 'level_naming.json'}")


if __name__ == "__main__":
    main()
