#!/usr/bin/env bash
# Trains, evaluates, benchmarks and exports the Shapes model set (plain encoder, CPU-sized).
# Re-running resumes unfinished runs from runs/shapes/<arch>/last.pt; a larger EPOCHS continues a
# finished run from its last epoch. All four share the same plain encoder, 8 channels wide.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-12}
# Whole 128x128 images at scale 0.75-1 (padded back to 128): a crop would cut shapes apart.
COMMON=(--dataset shapes --encoder plain --base-channels 8 --crop 128 --scale 0.75 1.0 --loss ce
        --epochs "$EPOCHS" --batch-size 8 --lr 2e-3 --workers 1 --flops-size 128 --no-progress --resume)
for arch in ${ARCHS:-unet deeplabv3p unetpp unet3p}; do
  case $arch in
    unet3p) options='{"cat_channels": 8}' ;;
    deeplabv3p) options='{"aspp_channels": 64, "low_level_channels": 16}' ;;
    *) options='{}' ;;
  esac
  run=runs/shapes/$arch
  trained=0
  [ -f "$run/card.json" ] && trained=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["epochs"])' "$run/card.json")
  if [ "$trained" -lt "$EPOCHS" ]; then
    "$PY" -m segmodels train --arch "$arch" --options "$options" --out "$run" "${COMMON[@]}"
  fi
  "$PY" -m segmodels evaluate --model "$run/best.pt" --dataset shapes --split val --json "$run/eval.json"
  "$PY" -m segmodels bench --models "$run/best.pt" --size 128x128 --device cpu --json "$run/bench.json"
  "$PY" -m segmodels export --run "$run" --name "shapes/$arch" --evaluation "$run/eval.json" --benchmark "$run/bench.json"
done
