"""What each lever of the candidate recipe does, from short CPU runs: U-Net (EfficientNet-Lite0,
ImageNet) of recipes/camvid_fair_v1.yaml on CamVid train with its frames resized to 72x96,
each lever switched on alone against the v1 baseline, judged on val (never test) at the final
epoch and by the mean of the last three validations (one evaluation of a noisy curve is not
a verdict). A second seed of the baseline gives the run-to-run noise. The models of one
schedule length train in lock-step on the same batches (``segmodels.training.train_lockstep``),
so the loss and averaging levers see identical data; each run's card and history are kept in
docs/levers/<lever>/ (commit them: a run there is not repeated).

These runs are indicative only: a few epochs at a fifth of the resolution, one seed per
lever, one thread; a lever that needs long training (EMA, the warm-up, full crops) may show
little here and much in the full recipe, or the other way round.

Usage: OMP_NUM_THREADS=1 python scripts/lever_table.py --data /work/shared/datasets/camvid [--epochs 6]
       python scripts/lever_table.py --table-only     (the table from docs/levers)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from loss_table import RARE_CLASSES, _number
from segmodels.training import LockstepRun, MemberPlan, load_recipe, read_camvid_frames, train_lockstep
from segmodels.training.loop import imagenet_encoder_state

REPO = Path(__file__).resolve().parents[1]
FRAME_SIZE = (72, 96)
BASELINE = {"crop_size": [56, 76], "batch_size": 8, "val_every": 1, "keep": "final", "flops_size": list(FRAME_SIZE)}
LEVERS = {
    "baseline": ({}, "v1 recipe: mfb loss, crops 0.8 of the frame, scale 0.75-1.5, colour jitter"),
    "baseline-seed1": ({"seed": 1}, "the same, seed 1 (run-to-run noise)"),
    "loss-ce": ({"loss": "ce"}, "plain cross-entropy"),
    "loss-smfb": ({"loss": "smfb"}, "CE, square-root median-frequency weights"),
    "loss-ce-lovasz": ({"loss": "ce_lovasz"}, "CE + Lovász-Softmax"),
    "loss-ohem": ({"loss": "ohem"}, "OHEM CE (p_t < 0.7, at least 1/16 of the pixels)"),
    "loss-mfb-warmup": ({"loss": "mfb_warmup", "loss_options": {"balanced_epochs": "HALF"}}, "mfb weights annealed to plain CE over the first half"),
    "ema": ({"ema_decay": 0.99}, "EMA of the weights, decay 0.99"),
    "photometric-strong": ({"photometric": "strong"}, "stronger jitter, gamma, noise"),
    "full-crops": ({"crop_size": list(FRAME_SIZE), "scale_range": [0.5, 2.0]}, "whole-frame crops, scale 0.5-2.0"),
    "longer": ({"epochs": "DOUBLE"}, "twice the epochs"),
}


def lever_config(recipe, name: str, epochs: int, data_root: str, out: Path):
    overrides, _ = LEVERS[name]
    values = {**BASELINE, "epochs": epochs, **overrides}
    if values["epochs"] == "DOUBLE":
        values["epochs"] = 2 * epochs
    if values.get("loss_options", {}).get("balanced_epochs") == "HALF":
        values["loss_options"] = {"balanced_epochs": epochs / 2}
    seed = values.pop("seed", 0)
    return recipe.train_config("unet", data_root, str(out / name), seed, **values)


def run_levers(data: Path, epochs: int, out: Path, kept: Path) -> None:
    """Train the levers whose run is not yet kept, one lock-step call per schedule length."""
    recipe = load_recipe(REPO / "recipes" / "camvid_fair_v1.yaml")
    todo = [name for name in LEVERS if not (kept / name / "card.json").is_file()]
    if not todo:
        return
    frames = read_camvid_frames(data, FRAME_SIZE)
    encoder_state = imagenet_encoder_state(recipe.encoder)
    plans = [MemberPlan(name, False, lever_config(recipe, name, epochs, str(data), out)) for name in todo]
    for length in sorted({plan.config.epochs for plan in plans}):
        group = [plan for plan in plans if plan.config.epochs == length]
        started = time.process_time()
        train_lockstep(group, frames, encoder_state, LockstepRun(budget_seconds=24 * 3600, device="cpu"), recipe, log=lambda text: print(text, flush=True))
        print(f"{len(group)} runs of {length} epochs: {time.process_time() - started:.0f} CPU s", flush=True)
        for plan in group:
            (kept / plan.name).mkdir(parents=True, exist_ok=True)
            for file_name in ("card.json", "history.jsonl"):
                shutil.copy(out / plan.name / file_name, kept / plan.name / file_name)


def lever_row(kept: Path, name: str) -> dict | None:
    card_path = kept / name / "card.json"
    if not card_path.is_file():
        return None
    card = json.loads(card_path.read_text())
    history = [json.loads(line) for line in (kept / name / "history.jsonl").read_text().splitlines()]
    validated = [record["val_miou"] for record in history if record.get("val_miou") is not None]
    return {"card": card, "last3": sum(validated[-3:]) / len(validated[-3:]), "seconds": history[-1]["seconds"]}


def markdown_table(kept: Path) -> str:
    """One row per lever: final val mIoU, mean of the last three validations and its change
    against the baseline, mean class accuracy, the rare classes' IoU, epochs, CPU seconds."""
    rows = {name: lever_row(kept, name) for name in LEVERS}
    baseline = rows.get("baseline")
    header = ["lever", "what changed", "val mIoU (final)", "mean of last 3", "Δ vs baseline", "mean class acc.", *(f"{name} IoU" for name in RARE_CLASSES), "epochs",
              "train s (wall)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, row in rows.items():
        if row is None:
            lines.append(f"| {name} | {LEVERS[name][1]} | not run |" + " |" * (len(header) - 3))
            continue
        card = row["card"]
        delta = "-" if baseline is None or name == "baseline" else f"{row['last3'] - baseline['last3']:+.3f}"
        rare = [_number(card["val_per_class_iou"][cls]) for cls in RARE_CLASSES]
        cells = [name, LEVERS[name][1], _number(card["val_miou"]), _number(row["last3"]), delta, _number(card["val_mean_class_accuracy"]), *rare, str(card["epochs"]),
                 f"{row['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="CamVid folder (train/, val/ and their annotations)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "levers")
    parser.add_argument("--kept", type=Path, default=REPO / "docs" / "levers")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.table_only:
        if args.data is None:
            raise SystemExit("--data CAMVID_DIR is needed to train (or give --table-only)")
        torch.set_num_threads(1)
        try:
            run_levers(args.data, args.epochs, args.out, args.kept)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
    print(markdown_table(args.kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
