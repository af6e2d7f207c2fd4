#!/usr/bin/env bash
# The fair CamVid zoo on CPUs: the recipe file recipes/camvid_fair_v1.yaml (read by scripts/fair_recipe.py) for U-Net, U-Net++,
# U-Net 3+, DeepLabV3+ and a seed-1 U-Net, two runs at a time with one thread each. Every run resumes from
# OUT/<run>/last.pt; a run with a card.json is done. Each finished seed-0 model is evaluated at full 360x480
# on val, benchmarked and exported to assets/weights/camvid/ (commit it then).
# Usage: scripts/train_camvid_fair.sh CAMVID_DIR LOSS   (LOSS: python scripts/loss_table.py runs/loss --best)
#   OUT=runs/camvid-fair  run folders (OUT=runs/gpu evaluates and exports what scripts/train_zoo_gpu.py trained)
#   STOP_AFTER=N          end each run after N more epochs; run the script again to continue
# Cost (CPU seconds per step of 16 crops, one thread): the README, "A fair CamVid comparison".
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 CAMVID_DIR LOSS}
LOSS=${2:?usage: $0 CAMVID_DIR LOSS, the winner of the loss experiment: python scripts/loss_table.py runs/loss --best}
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/camvid-fair}
export OMP_NUM_THREADS=1
for split in train trainannot val valannot; do
  [ -d "$DATA/$split" ] || { echo "$DATA is not a CamVid folder: $DATA/$split is missing" >&2; exit 2; }
done
"$PY" scripts/fair_recipe.py train-args unet --loss "$LOSS" --data "$DATA" --out "$OUT" > /dev/null
mkdir -p "$OUT"

finish() {  # run-folder arch: evaluate, benchmark and export a finished seed-0 model (with its finished other seeds' spread)
  local run=$1 arch=$2 seed_runs=()
  for card in "$run"-seed*/card.json; do
    [ -f "$card" ] && seed_runs+=(--seed-run "$(dirname "$card")")
  done
  [ -f "$run/eval.json" ] || "$PY" -m segmodels evaluate --model "$run/best.pt" --dataset camvid --data "$DATA" --split val --device cpu --json "$run/eval.json"
  [ -f "$run/bench.json" ] || "$PY" -m segmodels bench --models "$run/best.pt" --size 360x480 --device cpu --json "$run/bench.json"
  "$PY" -m segmodels export --run "$run" --name "camvid/$arch" --evaluation "$run/eval.json" --benchmark "$run/bench.json" "${seed_runs[@]}"
}

train_one() {  # name arch seed
  local name=$1 arch=$2 seed=$3 run=$OUT/$1 recipe
  if [ ! -f "$run/card.json" ]; then
    recipe=$("$PY" scripts/fair_recipe.py train-args "$arch" --loss "$LOSS" --data "$DATA" --out "$run" --seed "$seed")
    mapfile -t args <<< "$recipe"
    "$PY" -m segmodels train "${args[@]}" --workers 0 --no-progress --resume ${STOP_AFTER:+--stop-after "$STOP_AFTER"}
  fi
  if [ -f "$run/card.json" ] && [ "$seed" = 0 ]; then
    finish "$run" "$arch"
  fi
}

lane() {  # runs one after another, each given as "name arch seed"
  for entry in "$@"; do
    # shellcheck disable=SC2086
    train_one $entry
  done
}

# Lanes balanced by measured cost (the README, "A fair CamVid comparison"): U-Net 3+ and U-Net against the other three.
lane "unet3p unet3p 0" "unet unet 0" > "$OUT/lane-1.log" 2>&1 &
first=$!
lane "unetpp unetpp 0" "deeplabv3p deeplabv3p 0" "unet-seed1 unet 1" > "$OUT/lane-2.log" 2>&1 &
second=$!
status=0
wait "$first" || { status=1; echo "lane 1 failed: see $OUT/lane-1.log" >&2; }
wait "$second" || { status=1; echo "lane 2 failed: see $OUT/lane-2.log" >&2; }
if [ "$status" = 0 ] && [ -f "$OUT/unet-seed1/card.json" ]; then
  finish "$OUT/unet" unet  # again, now that the seed-1 run has finished too
fi
exit "$status"
