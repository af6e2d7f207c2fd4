#!/usr/bin/env bash
# Trains, evaluates, benchmarks and exports the Shapes model set: the four architectures on the
# same plain encoder, 8 channels wide, sized to train on a CPU.
# Usage: scripts/train_shapes_zoo.sh   (re-running resumes from runs/shapes/<arch>/last.pt; EPOCHS=N overrides the schedules)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# Whole 128x128 images at scale 0.75-1 (padded back to 128): a crop would cut shapes apart.
COMMON=(--dataset shapes --encoder plain --base-channels 8 --crop 128 --scale 0.75 1.0 --loss ce
        --batch-size 8 --lr 2e-3 --workers 1 --flops-size 128 --no-progress --resume)
declare -A SCHEDULE_EPOCHS=([unet]=10 [deeplabv3p]=10 [unetpp]=10 [unet3p]=8)
declare -A OPTIONS=(
  [unet]='{}'
  [unetpp]='{}'
  [unet3p]='{"cat_channels": 8}'
  [deeplabv3p]='{"aspp_channels": 64, "low_level_channels": 16}'
)
for arch in ${ARCHS:-unet deeplabv3p unetpp unet3p}; do
  run=runs/shapes/$arch
  epochs=${EPOCHS:-${SCHEDULE_EPOCHS[$arch]}}
  trained=0
  [ -f "$run/card.json" ] && trained=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["epochs"])' "$run/card.json")
  if [ "$trained" -lt "$epochs" ]; then
    "$PY" -m segmodels train --arch "$arch" --options "${OPTIONS[$arch]}" --out "$run" "${COMMON[@]}" --epochs "$epochs"
  fi
  "$PY" -m segmodels evaluate --model "$run/best.pt" --dataset shapes --split val --json "$run/eval.json"
  "$PY" -m segmodels bench --models "$run/best.pt" --size 128x128 --device cpu --json "$run/bench.json"
  "$PY" -m segmodels export --run "$run" --name "shapes/$arch" --evaluation "$run/eval.json" --benchmark "$run/bench.json"
done
