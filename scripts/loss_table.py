"""The loss experiment's Markdown table for the README, read from its run folders.

Each sub-folder of RUNS_DIR is one ``python -m segmodels train`` run (``history.jsonl``,
``last.pt`` while it trains, ``card.json`` once it has finished). Per loss the table gives the
best validated epoch's val mIoU, its mean class accuracy and the IoU of the rare CamVid
classes, and how many of the planned epochs ran; unfinished runs are marked as such and
never chosen.

Mean class accuracy is ``(1/K) sum_c M_cc / sum_j M_cj`` (recall averaged over classes),
mIoU ``(1/K) sum_c M_cc / (sum_j M_cj + sum_i M_ic - M_cc)``: a loss that over-predicts rare
classes raises the first and lowers the second, so the gap between the two columns shows it.

Usage: python scripts/loss_table.py runs/loss          (the table)
       python scripts/loss_table.py runs/loss --best   (the name of the winning finished loss)
       python scripts/loss_table.py runs/gpu --by run  (rows named by run folder: runs of one loss)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from segmodels.data import CAMVID

RARE_CLASSES = ("Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist")
LOSS_DESCRIPTIONS = {
    "ce": "cross-entropy",
    "mfb": "CE, median-frequency weights",
    "wce": "CE, (N − N_c)/N weights",
    "focal": "focal, γ = 2",
    "wfocal": "focal, (N − N_c)/N weights",
    "ohem": "OHEM CE (p_t < 0.7)",
}


@dataclass
class LossRun:
    """What the table shows of one run."""

    run: str
    loss: str
    finished: bool
    epochs_done: int
    epochs_planned: int | None
    best: dict | None

    @property
    def best_miou(self) -> float:
        return self.best["val_miou"] if self.best else float("-inf")


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def planned_epochs(run_dir: Path, card: dict | None) -> int | None:
    """The schedule's length: from the card when finished, else from ``last.pt``'s config."""
    if card is not None:
        return card["training"]["epochs"]
    checkpoint = run_dir / "last.pt"
    if not checkpoint.is_file():
        return None
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]["epochs"]
    except (OSError, RuntimeError, KeyError, EOFError):
        return None


def read_run(run_dir: Path) -> LossRun | None:
    """The run in ``run_dir``, or None when the folder holds no run yet."""
    card_path = run_dir / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    history = read_history(run_dir)
    if card is None and not history:
        return None
    validated = [record for record in history if record.get("val_miou") is not None]
    if card is not None:
        best = next((record for record in validated if record["epoch"] == card["best_epoch"]), None)
        best = {**(best or {}), "epoch": card["best_epoch"], "val_miou": card["val_miou"], "val_per_class_iou": [card["val_per_class_iou"][name] for name in CAMVID.class_names]}
    else:
        best = max(validated, key=lambda record: record["val_miou"], default=None)
    loss = card["training"]["loss"] if card is not None else run_dir.name
    epochs_done = max((record["epoch"] for record in history), default=card["epochs"] if card else 0)
    return LossRun(run_dir.name, loss, card is not None, epochs_done, planned_epochs(run_dir, card), best)


def read_runs(runs_dir: Path) -> list[LossRun]:
    """Every run under ``runs_dir``, best finished val mIoU first, unfinished ones after."""
    if not runs_dir.is_dir():
        raise SystemExit(f"{runs_dir} is not a folder of loss runs (expected RUNS_DIR/<loss>/history.jsonl)")
    runs = [run for run in (read_run(folder) for folder in sorted(runs_dir.iterdir()) if folder.is_dir()) if run is not None]
    return sorted(runs, key=lambda run: (not run.finished, -run.best_miou))


def _number(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def markdown_table(runs: list[LossRun], by: str = "loss") -> str:
    """The README table, one row per run named by its loss (or by its folder, ``by="run"``);
    the best finished run in bold."""
    rare_index = [CAMVID.class_names.index(name) for name in RARE_CLASSES]
    header = [by, "val mIoU", "mean class acc.", *(f"{name} IoU" for name in RARE_CLASSES), "best epoch", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    winner = next((run for run in runs if run.finished and run.best is not None), None)
    for run in runs:
        name = f"{run.loss}: {LOSS_DESCRIPTIONS.get(run.loss, run.loss)}" if by == "loss" else run.run
        if run is winner:
            name = f"**{name}**"
        best = run.best or {}
        per_class = best.get("val_per_class_iou")
        rare = [_number(per_class[i]) if per_class else "-" for i in rare_index]
        planned = "?" if run.epochs_planned is None else str(run.epochs_planned)
        epochs = f"{run.epochs_done} of {planned}" + ("" if run.finished else " (unfinished)")
        cells = [name, _number(best.get("val_miou")), _number(best.get("val_mean_class_accuracy")), *rare, str(best.get("epoch", "-")), epochs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="folder with one training run per loss, e.g. runs/loss")
    parser.add_argument("--best", action="store_true", help="print only the name of the finished loss with the best val mIoU")
    parser.add_argument("--by", choices=("loss", "run"), default="loss", help="name each row by its loss (default) or by its run folder")
    args = parser.parse_args(argv)
    runs = read_runs(args.runs_dir)
    if args.best:
        finished = [run for run in runs if run.finished and run.best is not None]
        if not finished:
            raise SystemExit(f"no finished run in {args.runs_dir}: the loss experiment has not completed a loss yet")
        print(finished[0].loss)
        return 0
    if not runs:
        raise SystemExit(f"no runs in {args.runs_dir}")
    print(markdown_table(runs, args.by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
