import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from segmodels.benchmark import benchmark_architectures, format_rows
from segmodels.cli import main
from segmodels.data import SHAPES
from segmodels.evaluation import evaluate, evaluation_report
from segmodels.training import TrainConfig, Trainer, learning_rate_factor, train


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    values = dict(
        arch="unet", encoder="plain", base_channels=4, dataset="shapes", train_images=8, val_images=2,
        crop_size=(48, 48), epochs=2, batch_size=4, lr=3e-3, workers=0, output_dir=str(tmp_path / "run"), flops_size=(48, 48),
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_a_few_steps_make_the_loss_fall(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, lr=1e-2, warmup_epochs=0), show_progress=False)
    images, masks = next(iter(trainer._loader(0)))
    losses = []
    for _ in range(12):
        loss = trainer.criterion(trainer.model(images), masks)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_val_every_validates_on_schedule_and_after_the_last_epoch(tmp_path):
    card = train(tiny_config(tmp_path, epochs=3, val_every=2), show_progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    validated = [record["epoch"] for record in history if record["val_miou"] is not None]
    assert validated == [2, 3]
    assert card["best_epoch"] in validated


def test_card_reports_mean_class_accuracy_and_per_class_iou_of_the_best_checkpoint(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    card = train(config, show_progress=False)
    trainer = Trainer(config, show_progress=False)
    trainer.model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"])
    matrix = torch.tensor(evaluate(trainer.model, trainer.val_set, SHAPES.num_classes, trainer.ignore_index).compute()["confusion_matrix"], dtype=torch.float64)
    labelled = matrix.sum(1) > 0
    recall = matrix.diagonal()[labelled] / matrix.sum(1)[labelled]
    assert card["val_mean_class_accuracy"] == pytest.approx(recall.mean().item())
    union = matrix.sum(0) + matrix.sum(1) - matrix.diagonal()
    assert list(card["val_per_class_iou"]) == list(SHAPES.class_names)
    assert list(card["val_per_class_iou"].values()) == pytest.approx((matrix.diagonal() / union).tolist(), nan_ok=True)

@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = tiny_config(tmp_path / "a", arch="unetpp", loss="wfocal", epochs=3)
    train(straight, show_progress=False)
    interrupted = tiny_config(tmp_path / "b", arch="unetpp", loss="wfocal", epochs=3)
    assert train(interrupted, show_progress=False, stop_after=1) == {}
    assert not (tmp_path / "b" / "run" / "card.json").exists()
    card = train(interrupted, resume=True, show_progress=False)
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert len((tmp_path / "b" / "run" / "history.jsonl").read_text().splitlines()) == 3
    assert [p["depth"] for p in card["pruning"]] == [1, 2, 3, 4]
    assert card["pruning"][0]["flops"] < card["pruning"][3]["flops"]
    for key in ("arch", "encoder", "dataset", "training", "val_miou", "val_per_class_iou", "params", "flops", "train_seconds", "train_device", "git_commit"):
        assert key in card


def test_learning_rate_schedule():
    assert learning_rate_factor(0, 100, 10, "poly") == pytest.approx(0.1)
    assert learning_rate_factor(10, 100, 10, "poly") == pytest.approx(1.0)
    assert learning_rate_factor(99, 100, 10, "cosine") < 0.01
    with pytest.raises(ValueError):
        learning_rate_factor(50, 100, 0, "step")


class Oracle(torch.nn.Module):
    """Returns one-hot logits of the true masks it is given, in dataset order."""

    def __init__(self, masks, num_classes):
        super().__init__()
        self.masks, self.num_classes, self.calls = masks, num_classes, 0

    def forward(self, images):
        mask = self.masks[self.calls]
        self.calls += 1
        return torch.nn.functional.one_hot(mask, self.num_classes).permute(2, 0, 1).unsqueeze(0).float()


def test_evaluate_perfect_prediction_gives_miou_one():
    from segmodels.data import build_dataset, eval_transform

    dataset = build_dataset("shapes", split="val", transform=eval_transform(), num_images=3, size=40)
    oracle = Oracle([dataset[i][1] for i in range(3)], 4)
    report = evaluation_report(evaluate(oracle, dataset, 4, None), SHAPES.class_names, "val", 3)
    assert report["miou"] == 1.0 and report["pixel_accuracy"] == 1.0
    assert set(report["per_class_iou"]) == set(SHAPES.class_names)


def test_bench_rows_are_well_formed():
    rows = benchmark_architectures(["unet", "unetpp"], 3, "plain", (32, 32), base_channels=4, warmup=1, repeats=3)
    assert [r["model"] for r in rows] == ["U-Net", "U-Net++ L1", "U-Net++ L2", "U-Net++ L3", "U-Net++ L4"]
    for row in rows:
        assert row["median_ms"] > 0 and row["iqr_ms"] >= 0 and row["params_m"] > 0 and row["gflops"] > 0
    assert [r["gflops"] for r in rows[1:]] == sorted(r["gflops"] for r in rows[1:])
    assert "U-Net++ L4" in format_rows(rows)


@pytest.mark.slow
def test_cli_train_evaluate_bench_roundtrip(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--arch", "deeplabv3p", "--base-channels", "4", "--train-images", "4", "--val-images", "2", "--crop", "32", "--epochs", "1",
          "--batch-size", "2", "--workers", "0", "--out", str(run), "--flops-size", "32", "--no-progress"])
    assert json.loads((run / "card.json").read_text())["arch"] == "deeplabv3p"
    main(["evaluate", "--model", str(run / "best.pt"), "--dataset", "shapes", "--split", "val", "--json", str(tmp_path / "eval.json")])
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 100 and 0 <= report["miou"] <= 1
    assert len(report["confusion_matrix"]) == 4
    main(["bench", "--models", str(run / "best.pt"), "--size", "32", "--warmup", "1", "--repeats", "2", "--json", str(tmp_path / "bench.json")])
    plain = json.loads((tmp_path / "bench.json").read_text())[0]
    assert plain["median_ms"] > 0
    main(["bench", "--models", str(run / "best.pt"), "--size", "32", "--warmup", "1", "--repeats", "2", "--fold-bn", "--channels-last", "--json", str(tmp_path / "folded.json")])
    folded = json.loads((tmp_path / "folded.json").read_text())[0]
    assert folded["fold_bn"] and folded["channels_last"] and folded["params_m"] == plain["params_m"]  # the trained model's size
    assert "mIoU" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "segmodels", "train",
               "--base-channels", "4", "--train-images", "8", "--val-images", "2", "--crop", "32", "--epochs", "2", "--batch-size", "2",
               "--workers", "0", "--out", str(out), "--flops-size", "32", "--no-progress"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    card = json.loads((out / "card.json").read_text())
    assert card["world_size"] == 2
    assert result.stdout.count("best val mIoU") == 1


def test_an_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from segmodels.training import config as training

    path = tmp_path / "last.pt"
    training.save_atomically({"epoch": 1}, path)

    def interrupted(obj, target):
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(training.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.save_atomically({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
