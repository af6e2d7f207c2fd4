"""scripts/loss_table.py on synthetic run folders shaped like ``python -m segmodels train`` output."""

import json
from pathlib import Path

import pytest
import torch

import loss_table
from segmodels.data import CAMVID

CLASSES = len(CAMVID.class_names)


def record(epoch: int, miou: float | None, accuracy: float = 0.8, rare: float = 0.3) -> dict:
    values = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_miou": miou, "lr": 1e-3, "seconds": 10.0 * epoch}
    if miou is not None:
        per_class = [0.9] * CLASSES
        for name in loss_table.RARE_CLASSES:
            per_class[CAMVID.class_names.index(name)] = rare
        values |= {"val_mean_class_accuracy": accuracy, "val_per_class_iou": per_class}
    return values


def write_run(folder: Path, loss: str, records: list[dict], planned: int, finished: bool) -> None:
    folder.mkdir(parents=True)
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        best = max((r for r in records if r["val_miou"] is not None), key=lambda r: r["val_miou"])
        card = {"training": {"loss": loss, "epochs": planned}, "epochs": planned, "best_epoch": best["epoch"], "val_miou": best["val_miou"],
                "val_per_class_iou": dict(zip(CAMVID.class_names, best["val_per_class_iou"]))}
        (folder / "card.json").write_text(json.dumps(card))
    else:
        torch.save({"config": {"epochs": planned, "loss": loss}}, folder / "last.pt")


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "loss"
    write_run(root / "ce", "ce", [record(2, 0.50, 0.60, rare=0.21), record(4, 0.55, 0.62, rare=0.25), record(6, 0.54, 0.61)], 6, finished=True)
    write_run(root / "mfb", "mfb", [record(2, 0.52, 0.80, rare=0.15), record(4, 0.58, 0.84, rare=0.19), record(6, 0.57, 0.85)], 6, finished=True)
    write_run(root / "ohem", "ohem", [record(1, None), record(2, 0.61, 0.70, rare=0.33), record(3, None)], 6, finished=False)
    (root / "focal").mkdir()
    return root


def test_table_ranks_finished_runs_and_marks_the_unfinished(runs, capsys):
    assert loss_table.main([str(runs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| loss | val mIoU | mean class acc. | Pole IoU")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in rows] == ["**mfb: CE, median-frequency weights**", "ce: cross-entropy", "ohem: OHEM CE (p_t < 0.7)"]
    assert rows[0][1:] == ["0.580", "0.840", "0.190", "0.190", "0.190", "0.190", "0.190", "4", "6 of 6"]
    assert rows[1][1:3] == ["0.550", "0.620"] and rows[1][-2] == "4"
    assert rows[2][1:4] == ["0.610", "0.700", "0.330"]
    assert rows[2][-1] == "3 of 6 (unfinished)"


def test_rows_can_be_named_by_run_folder(runs, capsys):
    (runs / "ce").rename(runs / "unet-seed1")
    assert loss_table.main([str(runs), "--by", "run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| run | val mIoU |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["**mfb**", "unet-seed1", "ohem"]


def test_best_names_the_finished_winner_even_when_an_unfinished_run_scores_higher(runs, capsys):
    loss_table.main([str(runs), "--best"])
    assert capsys.readouterr().out.strip() == "mfb"


def test_best_refuses_when_nothing_has_finished(tmp_path):
    write_run(tmp_path / "loss" / "ce", "ce", [record(2, 0.5)], 6, finished=False)
    with pytest.raises(SystemExit, match="no finished run"):
        loss_table.main([str(tmp_path / "loss"), "--best"])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not a folder of loss runs"):
        loss_table.main([str(tmp_path / "nowhere")])
