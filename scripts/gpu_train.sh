#!/usr/bin/env bash
# One device-tool run (< 10 min): synth benchmark on the GPU, training of the shipped weights on synthetic
# scenes generated on the fly, held-out evaluation, weights export. Resumes when RESUME=path/to/last.ckpt
# (same machine) or continues from the shipped weights when RESUME=1 (fresh machine). A call must fit 600 s:
# about 1.5 minutes go to start-up, held-out evaluation and export, so MINUTES grows by at most 8 per call.
# STAGE=2d trains the 2D stage alone (depth is the 3D stage's bottleneck) and ships it with the current 3D stage.
# STAGE=3d trains the 3D stage alone on the shipped 2D stage (train.freeze_2d: depth and 2D panoptic stay); with
# FRESH3D=1 the 3D stage starts from scratch (a new shape, e.g. EXTRA="model.frustum3d.feature_dim=32").
# A machine goes back 30 s after a call, so consecutive calls usually land on fresh machines: chain them by
# joining the returned weights over the shipped file here (`cat weights.part.* > nvpanoptix3d/weights/...`;
# the working tree travels uncommitted) and calling again with RESUME=1 (optimiser and schedule restart).
#   usage (device tool): bash scripts/gpu_train.sh   -> results under $OUT
set -euo pipefail
if [[ "${RESUME:-}" == */* ]] && [ ! -f "$RESUME" ]; then
  # a fresh machine has no /tmp run: falling back to the shipped weights would silently train another branch
  echo "error: RESUME=$RESUME not found (the machine was given back?); RESUME=1 continues from the shipped weights" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
RUN=/tmp/nvp_run
SHIPPED=nvpanoptix3d/weights/nvpanoptix3d_synthetic.safetensors
MINUTES=${MINUTES:-7.5}
EPOCHS=${EPOCHS:-4}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
[ -n "${SKIP_BENCH:-}" ] || python bench/synth.py --device cuda --frames 200 | tee "$OUT/bench_synth_cuda.txt"
extra=("train.optim.milestones=[${MILESTONE:-12}]")
# starting from the shipped weights; FRESH3D=1: a 3D stage of another shape (e.g.
# EXTRA="model.frustum3d.feature_dim=32") starts from scratch rather than from whichever shipped 3D tensors fit it
from_shipped=("train.checkpoint_2d=$SHIPPED")
[ -n "${FRESH3D:-}" ] || from_shipped+=("train.checkpoint_3d=$SHIPPED")
if [ -n "${RESUME:-}" ] && [ -f "${RESUME}" ]; then
  # same machine, still warm: exact resume; MINUTES is then the run's total (Lightning restores the elapsed time)
  extra+=("train.resume_training_checkpoint_path=$RESUME")
  RUN=$(dirname "$(dirname "$RESUME")")
elif [ -n "${RESUME:-}" ]; then
  # fresh machine: continue from the shipped weights
  extra+=("${from_shipped[@]}")
  RUN=/tmp/nvp_run2
fi
if [ -z "${RESUME:-}" ] || [ ! -f "${RESUME}" ]; then
  # a new run: on a machine still warm from the call before, its status.json and checkpoints would mix in
  rm -rf "$RUN"
fi
keep3d=()
if [ "${STAGE:-}" = 2d ]; then
  # depth / 2D only: no 3D truth to generate, no 3D stage to run; the shipped 3D stage is kept in the export
  extra+=("dataset.enable_3d=false")
  keep3d=(--stage3d-from "$SHIPPED")
fi
if [ "${STAGE:-}" = 3d ]; then
  [ -n "${RESUME:-}" ] || extra+=("${from_shipped[@]}")
  extra+=("train.freeze_2d=true")
fi
# EXTRA: further dotted overrides, e.g. EXTRA="train.optim.lr=0.00008 model.frustum3d.gt_depth_ratio=0.15"
read -ra more <<< "${EXTRA:-}"
python -m nvpanoptix3d train -e scripts/specs/gpu_synthetic.yaml results_dir=$RUN \
  train.max_time_minutes=$MINUTES train.num_epochs=$EPOCHS "${extra[@]}" "${more[@]}" 2>&1 | grep -v "it/s" | tail -n 30
cp $RUN/status.json "$OUT/train_status.json"
weights="$OUT/nvpanoptix3d_synthetic.safetensors"
python scripts/export_weights.py $RUN/checkpoints/last.ckpt "$weights" "${keep3d[@]}"
# files come back from the device tool at most 16 MiB each: join here with `cat weights.part.* > x.safetensors`.
# Split before the evaluation, so a call that runs out of time there still brings the weights back.
(cd "$OUT" && split -b 15M nvpanoptix3d_synthetic.safetensors weights.part.)
# held-out numbers of exactly what ships (the exported file: int8 matrices, both stages), judged with EXTRA's switches:
# the file's stored architecture wins over the spec except for the runtime keys (engine/predictor.py RUNTIME_KEYS)
python -m nvpanoptix3d evaluate -e scripts/specs/gpu_synthetic.yaml results_dir=$RUN/eval \
  evaluate.checkpoint="$weights" evaluate.split=test "${more[@]}" 2>&1 | grep -v "batch/s" | tail -n 15
cp $RUN/eval/metrics.json "$OUT/metrics_test.json"
rm "$weights"
ls -la "$OUT"
