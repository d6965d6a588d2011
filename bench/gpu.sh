#!/usr/bin/env bash
# The training and serving benchmarks on a CUDA machine, in under 8 minutes -> bench/results_gpu.md.
#
#   bench/gpu.sh                     # with this project installed next to a CUDA build of torch
#   PYTHON=/opt/venv/bin/python bench/gpu.sh
#
# Setup on the GPU machine (do not use constraints.txt there: it pins the CPU wheel of torch):
#   pip install torch                # the CUDA build for your driver
#   pip install -e .                 # this project and the rest of its dependencies
#
# What runs (bench/run_all.py --device cuda; each benchmark's docstring says more):
#   1. model  forward / forward+backward per variant, batch 16, fp32 and bf16 autocast
#   2. train  plain PyTorch loop vs Ray Train (1 worker, use_gpu), 24 studies, batch 4, AMP, last of 3 epochs
#   3. serve  in-process vs Serve over HTTP with the Segmenter on the GPU (num_gpus 0.5 per replica, as
#             serve_configs/gpu.yaml), concurrency 1/4/16, batching on/off, 20 s of load, a replica kill
# The text encoder is frozen and its prompt embeddings are stored in the model, so it costs nothing per study:
# the randomly initialised one is used (LSS_BENCH_TEXT_ENCODER=minilm for the packaged weights).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Importable without an install too (`lss` lives in platform/); Ray's workers inherit this.
export PYTHONPATH="$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0

"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"bench/gpu.sh needs CUDA: torch {torch.__version__} sees no GPU.")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
      f"{torch.cuda.get_device_name(0)}", flush=True)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

started=$SECONDS
"$PYTHON" bench/run_all.py --device cuda --text-encoder "${LSS_BENCH_TEXT_ENCODER:-random-small}" \
  ${LSS_BENCH_OUT:+--out "$LSS_BENCH_OUT"} model train serve
echo "bench/gpu.sh: $((SECONDS - started)) s"
