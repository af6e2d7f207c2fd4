"""scripts/fair_recipe.py: matched decoder budgets, and CLI arguments that reproduce the recipe."""

import importlib.util
import sys
from pathlib import Path

import pytest

from segmodels.cli import build_parser
from segmodels.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fair_recipe", REPO / "scripts" / "fair_recipe.py")
fair_recipe = sys.modules.setdefault("fair_recipe", importlib.util.module_from_spec(spec))
spec.loader.exec_module(fair_recipe)


def test_every_decoder_has_the_unet_decoder_budget_within_two_percent():
    """Fails when an architecture changes (e.g. a redesigned U-Net++): re-match its widths."""
    sizes = {arch: fair_recipe.model_sizes(arch, (64, 64)) for arch in fair_recipe.ARCHS}
    budget = sizes["unet"]["decoder_params"]
    for arch, size in sizes.items():
        assert size["decoder_params"] == pytest.approx(budget, rel=0.02), arch


@pytest.mark.parametrize("arch, seed", [("unetpp", 0), ("unet", 1)])
def test_train_arguments_give_segmodels_train_the_same_config(arch, seed):
    config = fair_recipe.train_config(arch, "ohem", "/data/camvid", f"runs/x/{arch}", seed)
    args = build_parser().parse_args(["train", *fair_recipe.train_arguments(config)])
    values = {key: value for key, value in vars(args).items() if key not in ("command", "resume", "progress", "func", "stop_after")}
    assert TrainConfig.from_dict(values) == config
    assert config.epochs >= 80 and config.crop_size[0] >= 288 and config.crop_size[1] >= 384


def test_unknown_architecture_or_loss_is_refused():
    with pytest.raises(ValueError, match="the fair zoo has unet"):
        fair_recipe.train_config("segnet", "ce", "/data", "runs/x")
    with pytest.raises(ValueError, match="valid names"):
        fair_recipe.train_config("unet", "dice", "/data", "runs/x")


def test_step_cost_times_a_training_step_of_the_recipe():
    seconds = fair_recipe.step_seconds("unet", steps=1, batch_size=2, crop_size=(32, 48))
    assert 0 < seconds < 60


def test_shipped_camvid_models_were_trained_with_the_recipe():
    """The shipped CamVid set is the fair set: every card's training configuration is the
    recipe's for its architecture (where it ran aside), all 80 epochs ran, and U-Net records
    its second seed."""
    import json
    from dataclasses import asdict

    from segmodels import zoo

    where_it_ran = ("data_root", "output_dir", "device", "workers")

    cards = {name.split("/")[1]: zoo.load_card(name) for name in zoo.list_models() if name.startswith("camvid/")}
    assert set(cards) == set(fair_recipe.ARCHS)
    for arch, card in cards.items():
        expected = json.loads(json.dumps(asdict(fair_recipe.train_config(arch, "mfb", "", ""))))
        assert {key: value for key, value in card["training"].items() if key not in where_it_ran} == {key: value for key, value in expected.items() if key not in where_it_ran}, arch
        assert card["epochs"] == 80 and not card["gpu_plan"]["stopped_by_time_budget"], arch
        assert card["evaluation"]["miou"] >= 0.68, arch
    assert cards["unet"]["seed_variance"]["seeds"] == [0, 1]
