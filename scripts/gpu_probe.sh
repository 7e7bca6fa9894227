#!/usr/bin/env bash
# Device-tool run: short training probes that compare recipes on the same synthetic stream (2D and/or 3D).
#   PROBES="name:key=value,key=value;name2:..." MINUTES=3 bash scripts/gpu_probe.sh   -> $OUT/<name>_status.json
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
MINUTES=${MINUTES:-3}
mkdir -p "$OUT"
IFS=';' read -ra probes <<< "${PROBES:?set PROBES}"
for probe in "${probes[@]}"; do
  name=${probe%%:*}
  IFS=',' read -ra extra <<< "${probe#*:}"
  run=/tmp/probe_$name
  python -m nvpanoptix3d train -e scripts/specs/gpu_synthetic.yaml results_dir=$run \
    dataset.synthetic.train_scenes=500 dataset.synthetic.render_device=cuda dataset.train.num_workers=3 \
    dataset.val.num_workers=2 train.num_epochs=100 train.max_time_minutes=$MINUTES "${extra[@]}" 2>&1 \
    | grep -v "it/s" | tail -n 5
  cp $run/status.json "$OUT/${name}_status.json"
  [ -z "${EXPORT:-}" ] || python scripts/export_weights.py $run/checkpoints/last.ckpt "$OUT/${name}.safetensors"
  python - "$run/status.json" "$name" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("event") == "epoch":
        print(sys.argv[2], "epoch", d["epoch"], "img/s", round(d.get("images_per_s", 0), 1),
              *(f"{k}={d[k]:.3f}" for k in ("pq", "pq_things", "pq_stuff", "depth_abs_rel", "prq", "occupancy_iou")
                if k in d), "loss_depth", round(d["losses"].get("loss_depth", -1), 3),
              "loss_class", round(d["losses"].get("loss_class", -1), 3))
PY
done
