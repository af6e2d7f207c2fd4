"""Recipe files: matched decoder budgets, CLI arguments that reproduce a recipe's run, and
the shipped cards against the recipe they were trained with (recipes/camvid_fair_v1.yaml)."""

import json
from dataclasses import asdict

import pytest

import fair_recipe
from conftest import REPO
from segmodels.cli import build_parser
from segmodels.training import TrainConfig, lever_defaults, load_recipe

FAIR_V1 = load_recipe(REPO / "recipes" / "camvid_fair_v1.yaml")
CANDIDATE = load_recipe(REPO / "recipes" / "camvid.yaml")


@pytest.mark.parametrize("recipe", [FAIR_V1, CANDIDATE], ids=["fair_v1", "candidate"])
def test_every_decoder_has_the_unet_decoder_budget_within_two_percent(recipe):
    """Fails when an architecture changes (e.g. a redesigned U-Net++): re-match its widths."""
    sizes = {arch: fair_recipe.model_sizes(recipe, arch, (64, 64)) for arch in recipe.archs}
    budget = sizes["unet"]["decoder_params"]
    for arch, size in sizes.items():
        assert size["decoder_params"] == pytest.approx(budget, rel=0.02), arch


@pytest.mark.parametrize("arch, seed", [("unetpp", 0), ("unet", 1)])
def test_train_arguments_give_segmodels_train_the_same_config(arch, seed):
    config = FAIR_V1.train_config(arch, "/data/camvid", f"runs/x/{arch}", seed, loss="ohem")
    args = build_parser().parse_args(["train", *fair_recipe.train_arguments(config)])
    values = {key: value for key, value in vars(args).items() if key not in ("command", "resume", "progress", "func", "stop_after")}
    assert TrainConfig.from_dict(values) == config
    assert config.epochs >= 80 and config.crop_size[0] >= 288 and config.crop_size[1] >= 384


def test_train_args_command_reads_the_recipe_file(capsys):
    assert fair_recipe.main(["train-args", "unet3p", "--data", "/d", "--out", "/o", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("--options") + 1] == '{"cat_channels": 38}' and lines[lines.index("--loss") + 1] == "mfb" and lines[lines.index("--seed") + 1] == "1"
    with pytest.raises(SystemExit, match="has no architecture 'segnet'"):
        fair_recipe.main(["train-args", "segnet", "--data", "/d", "--out", "/o"])


def test_step_cost_times_a_training_step_of_the_recipe():
    seconds = fair_recipe.step_seconds(FAIR_V1, "unet", steps=1, batch_size=2, crop_size=(32, 48))
    assert 0 < seconds < 60


def test_shipped_camvid_models_were_trained_with_the_fair_v1_recipe():
    """The shipped CamVid set is the fair set: every card's training configuration is the
    v1 recipe's for its architecture (where it ran aside; levers the cards predate are off),
    all 80 epochs ran, and U-Net records its second seed."""
    from segmodels import zoo

    where_it_ran = ("data_root", "output_dir", "device", "workers")
    cards = {name.split("/")[1]: zoo.load_card(name) for name in zoo.list_models() if name.startswith("camvid/")}
    assert set(cards) == set(FAIR_V1.archs)
    for arch, card in cards.items():
        expected = json.loads(json.dumps(asdict(FAIR_V1.train_config(arch, "", ""))))
        recorded = {**lever_defaults(), **card["training"]}
        assert {key: value for key, value in recorded.items() if key not in where_it_ran} == {key: value for key, value in expected.items() if key not in where_it_ran}, arch
        assert card["epochs"] == 80 and not card["gpu_plan"]["stopped_by_time_budget"], arch
        assert card["evaluation"]["miou"] >= 0.68, arch
    assert cards["unet"]["seed_variance"]["seeds"] == [0, 1]


def test_the_candidate_differs_from_fair_v1_only_in_declared_settings():
    """Same encoder and architectures; the peers are smp's U-Net, U-Net++ and DeepLabV3+."""
    assert CANDIDATE.encoder == FAIR_V1.encoder and list(CANDIDATE.archs) == list(FAIR_V1.archs)
    assert CANDIDATE.peers == ["unet", "unetpp", "deeplabv3p"] and CANDIDATE.extra_seeds == {"unet": [1]}
