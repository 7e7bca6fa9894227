#!/usr/bin/env bash
# Device-tool run: speed on one GPU. The plane sweep (320 x 240, 4 sources, 64 planes), scene fusion per frame,
# and a training step at 256^3 in one process (DDP's world of one: the baseline of bench/ddp_scaling.py).
#   bash scripts/gpu_speed_bench.sh   -> $OUT/bench_speed_gpu.txt
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "# python bench/multiview_depth.py --scenes 3 --frames 16 --refs 6"
  python bench/multiview_depth.py --scenes 3 --frames 16 --refs 6 2>&1 | grep -v "it/s"
  echo "# python bench/ddp_scaling.py --worlds 1 --batch 8 --steps 5 --precision bf16"
  python bench/ddp_scaling.py --worlds 1 --batch 8 --steps 5 --precision bf16 2>&1 | grep "^device=\|rror"
  echo "# python bench/ddp_scaling.py --worlds 1 --batch 2 --steps 5 --precision bf16"
  python bench/ddp_scaling.py --worlds 1 --batch 2 --steps 5 --precision bf16 2>&1 | grep "^device=\|rror"
} 2>&1 | tee "$OUT/bench_speed_gpu.txt"
