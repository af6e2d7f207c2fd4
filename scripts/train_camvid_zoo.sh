#!/usr/bin/env bash
# Trains, evaluates (full 360x480 val), benchmarks and exports the CamVid model set:
# the four architectures on the same ImageNet-pretrained EfficientNet-Lite0 encoder.
# Usage: scripts/train_camvid_zoo.sh /path/to/camvid   (re-running resumes from runs/camvid/<arch>/last.pt)
# Decoders and schedules are CPU-sized (see below; EPOCHS=N overrides); on a GPU the same commands run with AMP.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 CAMVID_DIR}
PY=${PYTHON:-.venv/bin/python}
COMMON=(--dataset camvid --data "$DATA" --encoder efficientnet_lite0 --crop 256x320 --scale 0.75 1.5 --loss mfb
        --val-every 5 --batch-size 8 --lr 1e-3 --workers 1 --no-progress --resume)
declare -A SCHEDULE_EPOCHS=([unet]=25 [deeplabv3p]=25 [unetpp]=20 [unet3p]=20)
declare -A OPTIONS=(
  [unet]='{}'
  [unetpp]='{"decoder_channels": [16, 32, 64, 128]}'
  [unet3p]='{"cat_channels": 16}'
  [deeplabv3p]='{"aspp_channels": 128}'
)
for arch in ${ARCHS:-unet deeplabv3p unetpp unet3p}; do
  run=runs/camvid/$arch
  if [ ! -f "$run/card.json" ]; then
    "$PY" -m segmodels train --arch "$arch" --options "${OPTIONS[$arch]}" --out "$run" "${COMMON[@]}" --epochs "${EPOCHS:-${SCHEDULE_EPOCHS[$arch]}}" ${STOP_AFTER:+--stop-after "$STOP_AFTER"}
  fi
  [ -f "$run/card.json" ] || continue
  "$PY" -m segmodels evaluate --model "$run/best.pt" --dataset camvid --data "$DATA" --split val --json "$run/eval.json"
  "$PY" -m segmodels bench --models "$run/best.pt" --size 360x480 --device cpu --json "$run/bench.json"
  "$PY" -m segmodels export --run "$run" --name "camvid/$arch" --evaluation "$run/eval.json" --benchmark "$run/bench.json"
done
