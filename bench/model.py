"""Benchmark: model cost per study for each vision encoder and attention variant, in one run.

    python bench/model.py                  # default input sizes (sagittal 3x128x192, axial 5 levels x 3x112x112)
    python bench/model.py --repeats 5

Prints parameters, forward FLOPs (``torch.utils.flop_counter``; a multiply-add counts as 2 FLOPs) and the median
CPU wall time of a forward and of a forward + backward for one study (batch 1). The text encoder is frozen and its
prompt embeddings are stored in the model, so it costs nothing per study. Compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lss.config import ModelConfig, PreprocessConfig
from lss.model import build_model
from lss.model.text import build_text_encoder


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    pre = PreprocessConfig()
    text = build_text_encoder(ModelConfig())
    sagittal = torch.randn(1, 3, *pre.sagittal_shape[1:])
    axial = torch.randn(1, 5, pre.axial_slices, *pre.axial_shape)
    rows = []
    for encoder in ("unet", "segresnet"):
        for attention in ("spatial_patch", "global_pool"):
            torch.manual_seed(0)
            model = build_model(ModelConfig(vision_encoder=encoder, attention=attention), pre.axial_slices,
                                pre.axial_spacing_mm, text_encoder=text)
            params = sum(p.numel() for p in model.parameters())
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model.eval()(sagittal, axial)
            flops = counter.get_total_flops()

            def forward():
                with torch.no_grad():
                    model.eval()(sagittal, axial)

            def forward_backward():
                model.train()
                out = model(sagittal, axial)
                (out.sagittal_logits.mean() + out.axial_logits.mean() + out.severity_logits.sum()).backward()
                model.zero_grad(set_to_none=True)

            rows.append({"encoder": encoder, "attention": attention, "params_m": round(params / 1e6, 3),
                         "gflops": round(flops / 1e9, 2), "forward_s": round(_time(forward, args.repeats), 3),
                         "forward_backward_s": round(_time(forward_backward, args.repeats), 3)})
    base = rows[0]["forward_backward_s"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"\nModel cost per study (batch 1; {machine})\n")
    print("| encoder | attention | params (M) | GFLOPs fwd | forward s | fwd+bwd s | fwd+bwd vs unet/spatial |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['attention']} | {r['params_m']} | {r['gflops']} | {r['forward_s']} | "
              f"{r['forward_backward_s']} | {r['forward_backward_s'] / base:.2f}x |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
