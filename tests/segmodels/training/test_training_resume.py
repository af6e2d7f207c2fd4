"""Resuming the lock-step trainer (segmodels.training.resume): a run stopped after epoch 2 and
resumed gives the weights of a run that never stopped, the time budget and the fitted schedule
carry over calls, and a run that differs from its checkpoints is refused by name."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_lockstep import TINY, EpochClock, tiny_frames

from segmodels.cli import main as segmodels_main
from segmodels.data import CAMVID
from segmodels.training import LockstepRun, train_lockstep, train_recipe
from segmodels.training.lockstep import ZooMember
from segmodels.training.recipe import recipe_from_dict

QUIET = {"log": lambda text: None}
# Two streams (seed 0 and seed 1), EMA, the best validated weights kept, a loss with state per epoch.
RESUMABLE = {**TINY, "extra_seeds": {"unet": [1]},
             "training": {**TINY["training"], "epochs": 4, "ema_decay": 0.9, "keep": "best", "loss": "mfb_warmup", "loss_options": {"balanced_epochs": 1}}}


def run_folder_state(folder: Path) -> dict:
    """Everything a finished run folder holds that must not depend on where it was stopped."""
    last = torch.load(folder / "last.pt", weights_only=True)
    history = [{key: value for key, value in json.loads(line).items() if key != "seconds"} for line in (folder / "history.jsonl").read_text().splitlines()]
    return {"model": last["model"], "average": last["average"] and last["average"]["model"], "moments": last["optimizer"]["state"], "scheduler": last["scheduler"],
            "best": torch.load(folder / "best.pt", weights_only=True), "history": history, "stream": last["run"]["stream"], "random": last["run"]["random"]["torch"]}


def assert_same(first, second, where: str = "") -> None:
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second), where
    elif isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_same(first[key], second[key], f"{where}/{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same(a, b, f"{where}/{index}")
    else:
        assert first == second, where


def test_two_epochs_and_a_resumed_two_equal_four_in_one_go(tmp_path):
    """Bit for bit on the CPU: weights, average, AdamW moments, schedule, kept weights, history.
    (On CUDA, cuDNN's autotuned kernels and atomics are not deterministic: equal up to that.)"""
    recipe = recipe_from_dict(RESUMABLE)
    straight = train_lockstep(recipe.members(tmp_path / "straight", "tiny"), tiny_frames(), None, LockstepRun(device="cpu"), recipe, **QUIET)
    plans = recipe.members(tmp_path / "split", "tiny")
    interim = train_lockstep(plans, tiny_frames(), None, LockstepRun(device="cpu", stop_after=2), recipe, **QUIET)
    assert [card["epochs"] for card in interim] == [2, 2, 2] and not any(card["lockstep"]["finished"] for card in interim)
    resumed = train_lockstep(recipe.members(tmp_path / "split", "tiny"), tiny_frames(), None, LockstepRun(device="cpu", resume=True), recipe, **QUIET)
    for plan, before, after in zip(plans, straight, resumed):
        assert_same(run_folder_state(tmp_path / "straight" / plan.name), run_folder_state(tmp_path / "split" / plan.name), plan.name)
        assert [record["epoch"] for record in run_folder_state(tmp_path / "split" / plan.name)["history"]] == [1, 2, 3, 4]
        assert after["val_miou"] == before["val_miou"] and after["best_epoch"] == before["best_epoch"] and after["train_seconds"] > 0
        assert after["lockstep"]["resumed_after_epochs"] == [2] and after["lockstep"]["finished"] and before["lockstep"]["resumed_after_epochs"] == []


def test_resume_cuts_the_history_back_to_the_checkpoint(tmp_path):
    """Epochs recorded after the last checkpoint (every 2 epochs here) are trained again, once."""
    recipe = recipe_from_dict({**RESUMABLE, "extra_seeds": {}, "training": {**RESUMABLE["training"], "keep": "final", "val_every": 2}})
    plans = recipe.members(tmp_path, "tiny")
    train_lockstep(plans, tiny_frames(), None, LockstepRun(device="cpu", stop_after=3, checkpoint_every=2), recipe, **QUIET)
    assert torch.load(tmp_path / "unet" / "last.pt", weights_only=True)["epoch"] == 3
    for plan in plans:
        history = tmp_path / plan.name / "history.jsonl"
        history.write_text(history.read_text() + json.dumps({"epoch": 4, "train_loss": 0.0}) + "\n")
    train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, LockstepRun(device="cpu", resume=True), recipe, **QUIET)
    for plan in plans:
        assert [json.loads(line)["epoch"] for line in (tmp_path / plan.name / "history.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_resumed_run_keeps_the_fitted_schedule_and_each_call_its_own_time_budget(tmp_path, monkeypatch):
    """The first call fits 6 of 1000 epochs (as in test_lockstep's fit test) and stops after 3;
    the second has a budget for one epoch and must not fit again; the third finishes the 6."""
    recipe = recipe_from_dict({**TINY, "training": {**TINY["training"], "epochs": 1000, "val_every": 1000}})
    logs = []
    first = LockstepRun(budget_seconds=10.0, fit_budget=True, finish_reserve_seconds=0.0, stop_after=3, device="cpu", clock=EpochClock(monkeypatch, epoch_seconds=1.0))
    cards = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, first, recipe, log=logs.append)
    assert [card["epochs"] for card in cards] == [3, 3] and cards[0]["lockstep"]["schedule_epochs"] == 6 and cards[0]["training"]["epochs"] == 6
    second = LockstepRun(budget_seconds=4.0, fit_budget=True, finish_reserve_seconds=0.0, resume=True, device="cpu", clock=EpochClock(monkeypatch, epoch_seconds=1.0))
    cards = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, second, recipe, log=logs.append)
    assert [card["epochs"] for card in cards] == [4, 4] and all(card["lockstep"]["stopped_by_time_budget"] for card in cards)
    assert cards[0]["lockstep"]["schedule_epochs"] == 6 and any("--fit-budget acts only then" in line for line in logs)
    third = LockstepRun(budget_seconds=1000.0, fit_budget=True, resume=True, device="cpu", clock=EpochClock(monkeypatch, epoch_seconds=1.0))
    cards = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, third, recipe, **QUIET)
    assert [card["epochs"] for card in cards] == [6, 6] and cards[0]["lockstep"]["finished"] and cards[0]["lockstep"]["resumed_after_epochs"] == [3, 4]
    assert cards[0]["lockstep"]["epochs_planned"] == 1000 and not cards[0]["lockstep"]["stopped_by_time_budget"]
    history = [json.loads(line) for line in (tmp_path / "unet" / "history.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5, 6] and history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_resume_refuses_a_run_that_differs_from_its_checkpoints(tmp_path):
    recipe = recipe_from_dict(TINY)
    train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, LockstepRun(device="cpu", stop_after=1), recipe, **QUIET)
    resume = LockstepRun(device="cpu", resume=True)
    changed = recipe_from_dict({**TINY, "training": {**TINY["training"], "lr": 0.002}})
    with pytest.raises(ValueError, match=r"unet: lr 0.001 in the checkpoint, 0.002 now; deeplabv3p: lr 0.001"):
        train_lockstep(changed.members(tmp_path, "tiny"), tiny_frames(), None, resume, changed, **QUIET)
    with pytest.raises(ValueError, match="lock-step run of unet, deeplabv3p; this run has unet"):
        train_lockstep(recipe.members(tmp_path, "tiny", archs=["unet"]), tiny_frames(), None, resume, recipe, **QUIET)
    with pytest.raises(ValueError, match="training frames: train 4 in the checkpoint, 3 now"):
        train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(train=3), None, resume, recipe, **QUIET)
    with pytest.raises(ValueError, match=r"other/unet/last.pt is missing"):
        train_lockstep(recipe.members(tmp_path / "other", "tiny"), tiny_frames(), None, resume, recipe, **QUIET)
    stale = torch.load(tmp_path / "unet" / "last.pt", weights_only=True)
    stale["epoch"] = 7
    torch.save(stale, tmp_path / "unet" / "last.pt")
    with pytest.raises(ValueError, match="different epochs \\(unet 7, deeplabv3p 1\\)"):
        train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, resume, recipe, **QUIET)


def write_camvid(root: Path, train: int = 4, val: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / split / f"f{index}.png")
            Image.fromarray(rng.integers(0, CAMVID.num_classes, (24, 32)).astype(np.uint8)).save(root / f"{split}annot" / f"f{index}.png")
    return root


def test_the_command_line_stops_and_resumes_a_recipe(tmp_path, capsys):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(json.dumps(TINY))
    data, out = write_camvid(tmp_path / "camvid"), tmp_path / "runs"
    command = ["train", "--recipe", str(recipe_file), "--data", str(data), "--out", str(out), "--device", "cpu"]
    segmodels_main([*command, "--stop-after", "1"])
    assert "continue with --resume" in capsys.readouterr().out
    segmodels_main([*command, "--resume"])
    assert "resumed after epoch 1 of 2" in capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in (out / "unet" / "history.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(SystemExit, match="cannot resume, the run differs from its checkpoints: unet: batch_size 2 in the checkpoint, 1 now"):
        segmodels_main([*command, "--resume", "--override", "batch_size=1"])


@pytest.mark.slow
def test_resume_restores_the_random_state_that_dropout_draws_from(tmp_path):
    """smp's DeepLabV3+ drops half its ASPP features in training (global torch generator)."""
    peers = {"name": "peers", "encoder": "efficientnet_lite0", "pretrained": False, "archs": {"deeplabv3p": {"aspp_channels": 8}}, "peers": ["deeplabv3p"],
             "training": {**TINY["training"], "epochs": 3, "crop_size": [32, 32]}}
    recipe = recipe_from_dict(peers)
    train_lockstep(recipe.members(tmp_path / "straight", "tiny"), tiny_frames(), None, LockstepRun(device="cpu"), recipe, **QUIET)
    train_lockstep(recipe.members(tmp_path / "split", "tiny"), tiny_frames(), None, LockstepRun(device="cpu", stop_after=1), recipe, **QUIET)
    train_lockstep(recipe.members(tmp_path / "split", "tiny"), tiny_frames(), None, LockstepRun(device="cpu", resume=True), recipe, **QUIET)
    assert_same(run_folder_state(tmp_path / "straight" / "smp-deeplabv3p"), run_folder_state(tmp_path / "split" / "smp-deeplabv3p"))


def test_a_model_trained_apart_from_its_recipe_sees_the_same_batches(tmp_path, monkeypatch):
    """Splitting a recipe's models over calls keeps them comparable: DeepLabV3+ trained alone
    gets the batches it gets beside U-Net (its seed's stream draws from its own generator)."""
    seen = {"together": [], "apart": []}
    real_step = ZooMember.train_step

    def recorded_step(member, images, masks, device):
        if member.name == "deeplabv3p":
            seen[member.output_dir.parent.name].append((images.clone(), masks.clone()))
        real_step(member, images, masks, device)

    monkeypatch.setattr(ZooMember, "train_step", recorded_step)
    recipe = recipe_from_dict(TINY)
    train_recipe(recipe, tiny_frames(), "tiny", tmp_path / "together", LockstepRun(device="cpu"), **QUIET)
    train_recipe(recipe, tiny_frames(), "tiny", tmp_path / "apart", LockstepRun(device="cpu"), models=["deeplabv3p"], **QUIET)
    assert len(seen["apart"]) == 4 and not (tmp_path / "apart" / "unet").exists()
    assert_same(seen["together"], seen["apart"])
    with pytest.raises(ValueError, match="no model smp-unet in this run; its models: unet, deeplabv3p"):
        train_recipe(recipe, tiny_frames(), "tiny", tmp_path / "x", LockstepRun(device="cpu"), models=["smp-unet"], **QUIET)
