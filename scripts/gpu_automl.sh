#!/usr/bin/env bash
# Device-tool run (< 10 min): an AutoML sweep on one GPU, trials fine-tuning the shipped weights on synthetic
# data written there, then the best trial and the default configuration evaluated on the same held-out split.
#   usage (device tool): bash scripts/gpu_automl.sh   -> $OUT/automl_summary.{json,csv}, prq_over_trials.png
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
METRIC=${METRIC:-pq}   # PRQ (kpi) is still 0 for every trial this short: 2D PQ ranks them; PRQ is reported
TRIALS=${TRIALS:-8}
BUDGET=${BUDGET:-200}
DATA=/tmp/automl_data
JOBS=/tmp/automl_jobs
mkdir -p "$OUT"
# the GPU machine lacks OpenEXR (depth .exr) and the skill bank's own dependencies: their wheels travel with the
# call (carry .device_wheels: pip download OpenEXR jsonschema optuna matplotlib for cp312, less numpy / pillow)
python -c "import OpenEXR, jsonschema, optuna, matplotlib" 2>/dev/null || python -m pip install -q --no-index \
  --find-links .device_wheels OpenEXR jsonschema optuna matplotlib 2>&1 | grep -v WARNING || true
[ -f $DATA/meta/test.json ] || python -m nvpanoptix3d synth $DATA --scenes 160 --frames 2 --seed 7000 --val-scenes 15 --test-scenes 25 --workers 15 \
  2>&1 | tr '\r' '\n' | tail -n 3
common=(--override train.num_epochs=3 --override dataset.train.batch_size=8 --override dataset.train.num_workers=3
        --override dataset.val.num_workers=1 --override train.precision=bf16 --override train.checkpoint_interval=1)
# the default configuration with the same budget beside the sweep, as a plain train job (AutoML off for it)
DEFAULT_ID=${DEFAULT_ID:-default-config}
python runners/tao_run_action.py --action train --automl-policy off --train-dataset $DATA --jobs-dir $JOBS \
  --job-id $DEFAULT_ID --backend local "${common[@]}" > "$OUT/default_train.txt" 2>&1 &
python runners/tao_run_automl.py --train-dataset $DATA --jobs-dir $JOBS --job-id automl-gpu --algorithm asha \
  --max-trials $TRIALS --max-concurrent 4 --gpu-ids 0,0,0,0 --time-budget $BUDGET --metric $METRIC "${common[@]}" \
  > "$OUT/automl_log.txt" 2>&1
# the runner ends with its summary table (Optuna's trial logs and failed trials' tracebacks come before it)
tail -n 12 "$OUT/automl_log.txt" | tee "$OUT/automl_table.txt"
wait
for log in $JOBS/train-*/logs.txt; do   # why failed trials failed
  grep -q "Error" "$log" && { echo "== $log"; grep -B2 "Error" "$log" | tail -n 6; }
done > "$OUT/failed_trials.txt" || true
cp $JOBS/automl-gpu/results/summary.json "$OUT/automl_summary.json"
cp $JOBS/automl-gpu/results/summary.csv "$OUT/automl_summary.csv"
cp $JOBS/automl-gpu/results/prq_over_trials.png "$OUT/"
for parent in automl-gpu $DEFAULT_ID; do
  python runners/tao_run_action.py --action evaluate --eval-dataset $DATA --jobs-dir $JOBS --parent-job-id $parent \
    --job-id eval-$parent --override evaluate.split=test --backend local 2>&1 | tail -n 3
  cp $JOBS/eval-$parent/results/metrics.json "$OUT/test_metrics_$parent.json"
done
python - "$OUT" "$DEFAULT_ID" <<'PY' | tee "$OUT/automl_vs_default.txt"
import json, sys
out = sys.argv[1]
best = json.load(open(f"{out}/test_metrics_automl-gpu.json"))
default = json.load(open(f"{out}/test_metrics_{sys.argv[2]}.json"))
summary = json.load(open(f"{out}/automl_summary.json"))
for key in ("prq", "pq", "depth_abs_rel", "occupancy_iou"):
    print(f"{key:>14}: best trial {best.get(key, float('nan')):.4f}  default {default.get(key, float('nan')):.4f}")
print(f"trial seconds {summary['trial_seconds']}, saved by pruning {summary['trial_seconds_saved_by_pruning']}")
PY
