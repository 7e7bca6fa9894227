#!/usr/bin/env bash
# Device-tool run: synthetic data speed on the GPU machine, frames per call (--batch) and processes (--workers).
#   bash scripts/gpu_synth_bench.sh   -> $OUT/bench_synth_gpu_machine.txt
set -euo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
{
  for b in 1 8 32 64; do python bench/synth.py --device cuda --frames $((b * 8 > 200 ? b * 8 : 200)) --batch $b; done
  python bench/synth.py --device cuda --frames 1024 --batch 32 --workers 2
  python bench/synth.py --device cuda --frames 2048 --batch 32 --workers 4
  python bench/synth.py --device cpu --frames 480 --workers 15
} 2>&1 | tee "$OUT/bench_synth_gpu_machine.txt"
