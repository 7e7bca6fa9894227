#!/usr/bin/env bash
# Device-tool run: synthetic generation speed on the GPU machine, one process and many (issue 3).
set -euo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
{
  python bench/synth.py --device cuda --frames 200
  python bench/synth.py --device cuda --frames 960 --workers 8
  python bench/synth.py --device cuda --frames 960 --workers 15
  python bench/synth.py --device cpu --frames 480 --workers 15
} 2>&1 | tee "$OUT/bench_synth_gpu_machine.txt"
