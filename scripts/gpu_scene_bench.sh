#!/usr/bin/env bash
# Device-tool run: posed-folder benchmarks on the GPU machine, one process per walk-through (the network's
# post-processing and the fusion use CPU cores; the GPU is shared).
#   bash scripts/gpu_scene_bench.sh SCENES FRAMES MODE...   -> $OUT/bench_scene_<mode>.txt, $OUT/bench_multiview_gpu.txt
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
SCENES=${1:-8}; FRAMES=${2:-100}; shift 2 || true
FIRST=${FIRST:-0}   # seeds 7000 + FIRST .. 7000 + FIRST + SCENES - 1
MODES=${*:-sensor multiview}
mkdir -p "$OUT/runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# the plane sweep alone: 320 x 240, 4 sources, 64 planes
[ "$FIRST" = 0 ] && python bench/multiview_depth.py --scenes 3 --frames 16 --refs 4 2>&1 | grep -v "it/s\|frame/s" | tee "$OUT/bench_multiview_gpu.txt"
for mode in $MODES; do   # every (mode, walk-through) at once: one CPU core each
  for i in $(seq "$FIRST" $((FIRST + SCENES - 1))); do
    python bench/scene_fusion.py --scenes 1 --frames "$FRAMES" --depth "$mode" --seed $((7000 + i)) \
      --json "$OUT/runs/${mode}_$i.json" > "$OUT/runs/${mode}_$i.log" 2>&1 &
  done
done
wait
for mode in $MODES; do
  python bench/scene_fusion.py --merge "$OUT"/runs/${mode}_*.json --json "$OUT/bench_scene_$mode.json" \
    | tee "$OUT/bench_scene_$mode.txt"
done
