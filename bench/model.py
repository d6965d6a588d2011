"""Benchmark: model cost per study for each vision encoder and attention variant, in one run.

    python bench/model.py                  # default input sizes (sagittal 3x128x192, axial 5 levels x 3x112x112)
    python bench/model.py --repeats 5
    python bench/model.py --device cuda --batch 16 --amp     # on a GPU (bench/gpu.sh): bf16 autocast too

Prints parameters, forward FLOPs per study (``torch.utils.flop_counter``; a multiply-add counts as 2 FLOPs) and the
median wall time of a forward and of a forward + backward for a batch (1 study by default), and the studies/s that
makes. The text encoder is frozen and its prompt embeddings are stored in the model, so it costs nothing per study.
Compare the ratios within one run.
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


def _time(fn, repeats: int, device: torch.device) -> float:
    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (and cuDNN's algorithm search on a GPU)
    synchronise()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronise()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="studies per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", action="store_true", help="also time each variant under bf16 autocast (GPU)")
    parser.add_argument("--text-encoder", default="minilm", help="'minilm' (packaged) or 'random-small'")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    pre = PreprocessConfig()
    text = build_text_encoder(ModelConfig(text_encoder=args.text_encoder))
    sagittal = torch.randn(args.batch, 3, *pre.sagittal_shape[1:], device=device)
    axial = torch.randn(args.batch, 5, pre.axial_slices, *pre.axial_shape, device=device)
    rows = []
    for encoder in ("unet", "segresnet"):
        for attention in ("spatial_patch", "global_pool"):
            torch.manual_seed(0)
            model = build_model(ModelConfig(vision_encoder=encoder, attention=attention,
                                            text_encoder=args.text_encoder),
                                pre.axial_slices, pre.axial_spacing_mm, text_encoder=text).to(device)
            params = sum(p.numel() for p in model.parameters())
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model.eval()(sagittal[:1], axial[:1])
            flops = counter.get_total_flops()
            for amp in (False, True) if args.amp else (False,):
                def forward(model=model, amp=amp):
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        model.eval()(sagittal, axial)

                def forward_backward(model=model, amp=amp):
                    model.train()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        out = model(sagittal, axial)
                        loss = out.sagittal_logits.float().mean() + out.axial_logits.float().mean() \
                            + out.severity_logits.float().sum()
                    loss.backward()
                    model.zero_grad(set_to_none=True)

                fwd, fwd_bwd = _time(forward, args.repeats, device), _time(forward_backward, args.repeats, device)
                rows.append({"encoder": encoder, "attention": attention, "precision": "bf16" if amp else "fp32",
                             "params_m": round(params / 1e6, 3), "gflops": round(flops / 1e9, 2),
                             "forward_s": round(fwd, 4), "forward_backward_s": round(fwd_bwd, 4),
                             "train_studies_per_s": round(args.batch / fwd_bwd, 1)})
    base = rows[0]["forward_backward_s"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {where}, torch {torch.__version__}"
    print(f"\nModel cost, batch {args.batch} (GFLOPs per study; {machine})\n")
    print("| encoder | attention | precision | params (M) | GFLOPs fwd | forward s | fwd+bwd s | train studies/s | "
          "fwd+bwd vs unet/spatial/fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['attention']} | {r['precision']} | {r['params_m']} | {r['gflops']} | "
              f"{r['forward_s']} | {r['forward_backward_s']} | {r['train_studies_per_s']} | "
              f"{r['forward_backward_s'] / base:.2f}x |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"model_{device.type}.json").write_text(json.dumps({"machine": machine, "batch": args.batch, "rows": rows},
                                                               indent=1))


if __name__ == "__main__":
    main()
