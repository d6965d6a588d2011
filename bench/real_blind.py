"""Benchmark: real scans diagnosed as a user's would be (no mask). Where does the crop land, are the levels named
right, how many levels are assessable? Prints a table, writes JSON.

    python bench/real_blind.py --model outputs/demo/train/demo/best_model.pt
    python bench/real_blind.py --model MODEL.pt --crop-z 192 240 --studies fastcleverseg_vb2_02,fastcleverseg_vb2_04

The scans are the fastcleverseg_vb2 set (17 healthy subjects, 381 mm sagittal fields of view, T11-L5 bodies
labelled), read through its dataset card; ``lss.evaluation.real_scans`` scores them:

- crop: the share of the labelled L1-L5 body voxels inside the sagittal crop the model's first pass places
  (``lss.inference.locate.SpineLocator``), and the crop's distance from the one the labels place;
- naming: the levels whose true disc (between two labelled bodies; L5/S1 is not scored, the sacrum is unlabelled)
  lies in that crop, and how many of them the model's naming puts on the right disc;
- diagnosis (``Diagnoser`` on the scan without its mask): levels assessable, graded, withheld, and Moderate/Severe
  stated on these healthy subjects without a review flag (each one a false alarm).

``--crop-z`` runs it for several crop lengths (pixels along the spine at ``preprocess.sagittal_spacing_mm``) with
the same model, so their rows compare within one run. A model trained on some of these scans (``make demo`` holds
out a sixth) scores optimistically on those: pass ``--studies`` to keep the held-out ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lss.config import load_config
from lss.evaluation.real_scans import crop_placement, level_safety

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "data" / "cards" / "fastcleverseg_vb2.yaml"
ALL = [f"fastcleverseg_vb2_{n:02d}" for n in (2, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 19, 20, 23)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model (best_model.pt)")
    parser.add_argument("--crop-z", type=int, nargs="+", help="crop lengths along the spine, pixels (default: the "
                        "configured preprocess.sagittal_shape)")
    parser.add_argument("--studies", help="comma-separated study ids (default: all 17 scans)")
    parser.add_argument("--out", default="outputs/bench/real_blind")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        parser.error(f"--model {args.model}: no such model file")
    studies = args.studies.split(",") if args.studies else ALL
    config = load_config(None)
    rows = {}
    for crop_z in args.crop_z or [config.preprocess.sagittal_shape[2]]:
        started = time.perf_counter()
        shape = (*config.preprocess.sagittal_shape[:2], crop_z)
        run = config.model_copy(update={"preprocess": config.preprocess.model_copy(update={"sagittal_shape": shape})})
        offsets, coverage = crop_placement(Path(args.model), run, CARD, studies)
        safety = level_safety(Path(args.model), run, CARD, studies)
        rows[crop_z] = {"crop_mm": round(crop_z * config.preprocess.sagittal_spacing_mm[2], 1),
                        "l1_l5_in_crop": round(float(np.mean(coverage)), 3),
                        "scans_with_all_l1_l5": int(sum(c >= 0.999 for c in coverage)),
                        "crop_offset_mm": round(float(np.mean(offsets)), 1), **safety,
                        "seconds": round(time.perf_counter() - started, 1)}
    print(f"model {args.model}; {len(studies)} fastcleverseg_vb2 scans diagnosed without their masks")
    print("| crop along the spine | L1-L5 bodies in the crop (mean; scans with all) | levels named right | "
          "levels assessable | graded | withheld | Moderate/Severe stated without review |")
    print("|---|---|---|---|---|---|---|")
    for row in rows.values():
        print(f"| {row['crop_mm']:.0f} mm | {row['l1_l5_in_crop']:.3f}; {row['scans_with_all_l1_l5']}/{len(studies)} | "
              f"{row['naming_right']}/{row['naming_levels']} | {row['assessable']}/{row['levels']} | {row['graded']} | "
              f"{row['withheld']} | {row['moderate_severe_unflagged']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"model": args.model, "studies": studies, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
