"""Severity balance of synthetic studies against the RSNA 2024 table, on N study plans (no images rendered).

    python bench/synth_balance.py            # 500 studies, seeds 10000..10499

Every level's severity is the rule grade of its measured dural sac area and AP diameter; the prior it is drawn
from is the RSNA 2024 class balance. This prints both, per level, and the largest gap.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from lss.anatomy import LEVELS, RSNA_CLASS_BALANCE, SEVERITIES, grade_from_measurements
from lss.data.synth.phantom import sample_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--seed", type=int, default=10_000)
    args = parser.parse_args()
    plans = [sample_phantom(np.random.default_rng(args.seed + i)) for i in range(args.studies)]
    agree = all(p.levels[lv].severity is grade_from_measurements(p.levels[lv].area_mm2, p.levels[lv].ap_mm)
                for p in plans for lv in LEVELS)
    print(f"{args.studies} synthetic studies vs RSNA 2024 (Normal/Mild / Moderate / Severe, %)\n")
    print("| level | synthetic | RSNA 2024 |")
    print("|---|---|---|")
    gap = 0.0
    for level in (*LEVELS, "all"):
        levels = LEVELS if level == "all" else (level,)
        counts = Counter(p.levels[lv].severity for p in plans for lv in levels)
        total = args.studies * len(levels)
        ours = [100 * counts[s] / total for s in SEVERITIES]
        theirs = [100 * np.mean([RSNA_CLASS_BALANCE[lv][i] for lv in levels]) for i in range(3)]
        gap = max(gap, *(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
        print(f"| {level} | {' / '.join(f'{x:.1f}' for x in ours)} | {' / '.join(f'{x:.1f}' for x in theirs)} |")
    print(f"\nlargest gap: {gap:.1f} points; every severity equals the rule grade of its measurements: {agree}")


if __name__ == "__main__":
    main()
