#!/usr/bin/env bash
# The fair zoo's loss experiment: U-Net (EfficientNet-Lite0, ImageNet) trained briefly with each
# loss under one recipe; pick the loss by val mIoU. Each run resumes from runs/loss/<loss>/last.pt.
# Usage: scripts/loss_experiment.sh /path/to/camvid   (LOSSES="ce mfb" and EPOCHS=N override)
# Each finished run's card and history are copied to docs/loss_experiment/<loss>/ (commit them: a new
# machine then skips that loss). Results: python scripts/loss_table.py docs/loss_experiment
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 CAMVID_DIR}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for loss in ${LOSSES:-ce mfb wce focal ohem}; do
  run=runs/loss/$loss
  kept=docs/loss_experiment/$loss
  [ -f "$kept/card.json" ] && continue
  "$PY" -m segmodels train --arch unet --encoder efficientnet_lite0 --dataset camvid --data "$DATA" \
    --crop 288x384 --scale 0.75 1.5 --loss "$loss" --epochs "${EPOCHS:-6}" --batch-size 8 --lr 1e-3 \
    --val-every 2 --workers 1 --seed 0 --no-progress --resume --out "$run"
  mkdir -p "$kept" && cp "$run/card.json" "$run/history.jsonl" "$kept/"
done
