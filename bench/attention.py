"""Benchmark: does a level prompt's attention peak at that level after a short training? Prints the hit rate.

    python bench/attention.py                       # 40 synthetic studies (32 train / 8 held out), 150 steps
    python bench/attention.py --steps 300 --encoder segresnet

For Spatial Patch Cross-Attention and the global_pool baseline, the same budget: a sagittal-only training of the
segmentation (cross-entropy), the severity head and the attention localisation loss (the level's disc from the
mask says where its prompt should look). The hit rate is the share of held-out levels whose attention peak falls on
the level's disc (grown by one patch); chance is the region's share of the patch grid, printed beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lss.config import ModelConfig, PreprocessConfig, SynthConfig
from lss.data.cases import load_case, read_jsonl
from lss.data.synth.generate import generate_dataset
from lss.losses.localisation import AttentionLocalisationLoss, attention_hit_rate, level_regions
from lss.model import build_model, case_to_sample, collate_samples
from lss.model.text import build_text_encoder
from lss.preprocessing.pipeline import run_preprocessing


def _data(out: Path, cases: int) -> list[dict[str, torch.Tensor]]:
    """The benchmark studies (shared with bench/train.py under outputs/bench/data), made once."""
    synth = SynthConfig(cases=cases, seed=7000, format="nifti", sagittal_inplane_mm=(0.9, 0.9),
                        axial_inplane_mm=(0.9, 0.9), through_slice_samples=1, class_balance="uniform")
    generate_dataset(synth, out / "synth")
    run_preprocessing(out / "synth", out / "pre", PreprocessConfig(), engine="serial")
    rows = read_jsonl(out / "pre" / "preprocessed.jsonl")
    return [case_to_sample(load_case(out / "pre" / row["path"])) for row in rows]


def _evaluate(model, samples, levels) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        batch = collate_samples(samples)
        out = model(batch["sagittal"])
        attention = out.sagittal_attention[:, levels]
        hit = attention_hit_rate(attention, batch["level_target"])
        regions = level_regions(batch["level_target"], tuple(attention.shape[2:]))
        chance = float(regions.flatten(2).float().mean(dim=2)[regions.flatten(2).any(dim=2)].mean())
    return hit, chance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--encoder", default="unet")
    parser.add_argument("--text-encoder", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="outputs/bench/data", help="where the benchmark studies are made")
    parser.add_argument("--out", default="outputs/bench/attention")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    # [1] Data: synthetic studies, preprocessed; the last --held-out studies are never trained on.
    samples = _data(Path(args.data), args.cases)
    train, test = samples[: -args.held_out], samples[-args.held_out:]
    text = build_text_encoder(ModelConfig(text_encoder=args.text_encoder))

    results = []
    for variant in ("spatial_patch", "global_pool"):
        # [2] The same model and budget for both variants.
        torch.manual_seed(args.seed)
        config = ModelConfig(vision_encoder=args.encoder, attention=variant, text_encoder=args.text_encoder)
        model = build_model(config, text_encoder=text)
        levels = model.prompts.level_slice
        before, chance = _evaluate(model, test, levels)
        optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
        localise = AttentionLocalisationLoss()
        rng = np.random.default_rng(args.seed)
        started = time.perf_counter()
        for _ in range(args.steps):
            model.train()
            batch = collate_samples([train[i] for i in rng.choice(len(train), args.batch, replace=False)])
            out = model(batch["sagittal"])
            loss = (F.cross_entropy(out.sagittal_logits, batch["sagittal_target"], ignore_index=-1)
                    + F.cross_entropy(out.severity_logits.flatten(0, 1), batch["severity"].flatten(), ignore_index=-1)
                    + localise(out.sagittal_attention[:, levels], batch["level_target"]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds = time.perf_counter() - started
        after, _ = _evaluate(model, test, levels)
        results.append({"attention": variant, "hit_rate_before": round(before, 3), "hit_rate_after": round(after, 3),
                        "chance": round(chance, 3), "train_seconds": round(seconds, 1)})

    # [3] Report.
    print(f"\nLevel-prompt attention hit rate on {len(test)} held-out synthetic studies x 5 levels "
          f"({args.steps} steps of batch {args.batch}, {args.encoder}, text encoder {args.text_encoder})\n")
    print("| attention | hit rate before | hit rate after | chance | train s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['attention']} | {r['hit_rate_before']} | {r['hit_rate_after']} | {r['chance']} | "
              f"{r['train_seconds']} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "attention.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
