"""segmodels.training's lock-step trainer, recipes, weight averaging, the smp peer and
test-time augmentation, at tiny size on the CPU."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO
from segmodels import evaluation
from segmodels.cli import main as segmodels_main
from segmodels.data import CAMVID
from segmodels.training import FrameSet, LockstepRun, SmpPeer, TrainConfig, Trainer, loop, peer_spec, train_lockstep
from segmodels.training.ema import WeightAverage
from segmodels.training.loop import epochs_that_fit
from segmodels.training.recipe import load_recipe, recipe_from_dict

TINY = {"name": "tiny", "encoder": "plain", "pretrained": False, "archs": {"unet": {}, "deeplabv3p": {}},
        "training": {"base_channels": 4, "epochs": 2, "batch_size": 2, "crop_size": [16, 24], "val_every": 1, "flops_size": [24, 32], "warmup_epochs": 0}}


def tiny_frames(train: int = 4, val: int = 2) -> FrameSet:
    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, CAMVID.num_classes, (train + val, 24, 32), generator=generator, dtype=torch.uint8)
    images = (masks[:, None].float() * 20 + torch.rand(train + val, 3, 24, 32, generator=generator) * 10).to(torch.uint8)
    return FrameSet(images[:train], masks[:train], images[train:], masks[train:], [f"t{i}" for i in range(train)], [f"v{i}" for i in range(val)], "tiny")


def test_recipe_errors_name_the_key_at_fault(tmp_path):
    cases = [({**TINY, "speed": 1}, "unknown key speed"), ({**TINY, "archs": {"segnet": {}}}, "unknown architecture 'segnet'"),
             ({**TINY, "training": {"epochz": 3}}, "training has no setting epochz"), ({**TINY, "peers": ["unet3p"]}, "not one of the recipe's archs"),
             ({**TINY, "training": {"protocol": "train+val"}}, "set keep: final"), ({**TINY, "training": {"loss": "dice"}}, "unknown loss 'dice'"),
             ({**TINY, "training": {"photometric": "wild"}}, "photometric must be one of none, jitter, strong")]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            recipe_from_dict(values)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(broken)
    with pytest.raises(FileNotFoundError, match="no recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_the_candidate_recipe_lists_ours_the_extra_seed_and_the_peers():
    plans = load_recipe(REPO / "recipes" / "camvid.yaml").members(Path("runs/x"), "/data")
    assert [(plan.name, plan.peer, plan.config.seed) for plan in plans] == [
        ("unet", False, 0), ("unetpp", False, 0), ("unet3p", False, 0), ("deeplabv3p", False, 0), ("unet-seed1", False, 1),
        ("smp-unet", True, 0), ("smp-unetpp", True, 0), ("smp-deeplabv3p", True, 0)]
    assert plans[5].config.options == {} and plans[3].config.output_dir == "runs/x/deeplabv3p"


def test_the_peer_gets_our_imagenet_encoder_weights_and_our_input_convention():
    from segmodels import create_model

    ours = create_model("unet", 11, encoder="efficientnet_lite0", pretrained=True)
    peer = SmpPeer(peer_spec("deeplabv3p", "efficientnet_lite0", 11))
    peer.load_encoder_state(ours.encoder.state_dict())
    theirs = peer.model.encoder.model.state_dict()
    assert all(torch.equal(value, theirs[key.removeprefix("body.")]) for key, value in ours.encoder.state_dict().items())
    outputs = peer.eval()(torch.rand(1, 3, 37, 50), return_all=True)
    assert len(outputs) == 1 and outputs[0].shape == (1, 11, 37, 50)
    with pytest.raises(ValueError, match="smp has no peer for 'unet3p'"):
        peer_spec("unet3p", "efficientnet_lite0", 11)


def test_weight_average_follows_the_closed_form():
    model = nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.5)
    expected = model.weight.item()
    for value in (1.0, 2.0, 3.0, 4.0):
        model.weight.data.fill_(value)
        decay = min(0.5, (1 + average.updates) / (10 + average.updates))
        expected = decay * expected + (1 - decay) * value
        average.update(model)
    assert average.model.weight.item() == pytest.approx(expected) and not average.model.weight.requires_grad
    with pytest.raises(ValueError, match="decay must lie in"):
        WeightAverage(model, 1.0)


def test_epochs_that_fit_the_budget():
    assert epochs_that_fit(planned=200, done=1, epoch_seconds=10, seconds_left=500, finish_seconds=50, val_round_seconds=5, val_every=5) == 1 + 450 // 13.5
    assert epochs_that_fit(planned=20, done=1, epoch_seconds=10, seconds_left=5000, finish_seconds=50, val_round_seconds=5, val_every=5) == 20
    assert epochs_that_fit(planned=20, done=1, epoch_seconds=10, seconds_left=10, finish_seconds=50, val_round_seconds=5, val_every=5) == 1


def test_lockstep_keeps_the_final_averaged_weights_checkpoints_each_epoch_and_writes_cards(tmp_path):
    recipe = recipe_from_dict({**TINY, "training": {**TINY["training"], "keep": "final", "ema_decay": 0.9, "loss": "mfb_warmup", "loss_options": {"balanced_epochs": 1}}})
    plans = recipe.members(tmp_path, "tiny")
    cards = train_lockstep(plans, tiny_frames(), None, LockstepRun(device="cpu"), recipe, log=lambda text: None)
    for plan, card in zip(plans, cards):
        run = tmp_path / plan.name
        assert card["kept"] == "final epoch" and card["best_epoch"] == 2 and card["weights"].startswith("exponential moving average")
        assert card["recipe"]["name"] == "tiny" and card["lockstep"]["models_in_lockstep"] == ["unet", "deeplabv3p"]
        last = torch.load(run / "last.pt", weights_only=True)
        kept = torch.load(run / "best.pt", weights_only=True)["model"]
        assert last["epoch"] == 2 and last["average"]["updates"] == 4
        assert all(torch.equal(kept[key], value.half()) for key, value in last["average"]["model"].items() if value.is_floating_point())
        assert any(not torch.equal(kept[key], value.half()) for key, value in last["model"].items() if value.is_floating_point())
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in history] == [1, 2] and card["val_miou"] == pytest.approx(history[-1]["val_miou"], abs=2e-3)


def test_train_val_protocol_trains_on_both_splits_and_says_so(tmp_path):
    recipe = recipe_from_dict({**TINY, "archs": {"unet": {}}, "training": {**TINY["training"], "epochs": 1, "keep": "final", "protocol": "train+val"}})
    (card,) = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, LockstepRun(device="cpu"), recipe, log=lambda text: None)
    assert card["protocol"] == "train+val" and card["val_seen_in_training"] and card["data_split"]["train_images"] == 6


class EpochClock:
    """A clock that moves only when an epoch trains: every epoch takes ``epoch_seconds``, and
    validation takes no time, whatever the machine's load."""

    def __init__(self, monkeypatch, epoch_seconds: float):
        self.now = 0.0
        real_train_epoch = loop.train_epoch

        def timed_train_epoch(*args):
            losses = real_train_epoch(*args)
            self.now += epoch_seconds
            return losses

        monkeypatch.setattr(loop, "train_epoch", timed_train_epoch)

    def __call__(self) -> float:
        return self.now


def test_the_time_budget_stops_every_model_at_the_same_epoch_and_still_writes_results(tmp_path, monkeypatch):
    recipe = recipe_from_dict({**TINY, "training": {**TINY["training"], "epochs": 5, "val_every": 2}})
    run = LockstepRun(budget_seconds=40.0, device="cpu", clock=EpochClock(monkeypatch, epoch_seconds=10.0))
    cards = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, run, recipe, log=lambda text: None)
    assert [card["epochs"] for card in cards] == [1, 1] and all(card["lockstep"]["stopped_by_time_budget"] and card["best_epoch"] == 1 for card in cards)


def test_fit_budget_shortens_every_schedule_so_the_learning_rate_still_ends_at_zero(tmp_path, monkeypatch):
    """1 s epochs, a 10 s budget and two unvalidated models charged 2 x 0.5 s each for the
    final evaluations: after epoch 2, floor((8 - 2) / 1.25) = 4 more epochs fit."""
    recipe = recipe_from_dict({**TINY, "training": {**TINY["training"], "epochs": 1000, "val_every": 1000}})
    logs = []
    run = LockstepRun(budget_seconds=10.0, fit_budget=True, finish_reserve_seconds=0.0, device="cpu", clock=EpochClock(monkeypatch, epoch_seconds=1.0))
    cards = train_lockstep(recipe.members(tmp_path, "tiny"), tiny_frames(), None, run, recipe, log=logs.append)
    assert [card["epochs"] for card in cards] == [6, 6] and all(card["training"]["epochs"] == 6 and not card["lockstep"]["stopped_by_time_budget"] for card in cards)
    assert cards[0]["lockstep"]["epochs_planned"] == 1000
    last_lr = json.loads((tmp_path / "unet" / "history.jsonl").read_text().splitlines()[-1])["lr"]
    assert last_lr == pytest.approx(0.0, abs=1e-9) and any("every schedule now ends after epoch" in line for line in logs)


def test_the_one_model_trainer_names_the_levers_it_leaves_to_the_lockstep_trainer():
    with pytest.raises(ValueError, match="does not implement ema_decay=0.9, photometric=strong; the lock-step trainer does"):
        Trainer(TrainConfig(ema_decay=0.9, photometric="strong"))


def test_test_time_augmentation_averages_probabilities_over_scales_and_mirrors():
    class Colour(nn.Module):
        """Flip-equivariant: per-pixel logits from the colour only."""

        def forward(self, images):
            return images * 4

    images = torch.rand(1, 3, 8, 10)
    plain = evaluation.augmented_probabilities(Colour(), images, (8, 10), evaluation.TestTimeAugmentation())
    torch.testing.assert_close(plain, (images * 4).softmax(1))
    torch.testing.assert_close(evaluation.augmented_probabilities(Colour(), images, (8, 10), evaluation.TestTimeAugmentation(flip=True)), plain)
    multi = evaluation.augmented_probabilities(Colour(), images, (8, 10), evaluation.TestTimeAugmentation((0.5, 1.0, 1.5), flip=True))
    assert multi.shape == (1, 3, 8, 10) and torch.allclose(multi.sum(1), torch.ones(1, 8, 10))
    with pytest.raises(ValueError, match="positive factors"):
        evaluation.TestTimeAugmentation((0.0,))


def test_evaluate_with_tta_reports_its_passes_and_time(tmp_path):
    report = tmp_path / "report.json"
    segmodels_main(["evaluate", "--model", "shapes/unet", "--dataset", "shapes", "--split", "val", "--device", "cpu", "--images", "2", "--tta-flip",
                    "--tta-scales", "0.75", "1", "--json", str(report)])
    written = json.loads(report.read_text())
    assert written["tta"] == {"scales": [0.75, 1.0], "flip": True, "passes": 4} and written["num_images"] == 2 and written["seconds_per_image"] > 0


def test_train_recipe_refuses_one_model_options_and_needs_data(capsys):
    with pytest.raises(SystemExit, match="--epochs would be ignored"):
        segmodels_main(["train", "--recipe", "recipes/camvid.yaml", "--data", "/d", "--epochs", "3"])
    with pytest.raises(SystemExit, match="needs --data"):
        segmodels_main(["train", "--recipe", "recipes/camvid.yaml"])
