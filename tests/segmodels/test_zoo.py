import json

import pytest
import torch

from conftest import REPO, assert_fingerprint
from segmodels import zoo
from segmodels.cards import model_from_spec, model_spec
from segmodels.data import SHAPES
from segmodels.models import create_model

# Output fingerprints of every shipped model (U-Net++ at each pruning depth) on
# shipped_model_input(), recorded at commit db183c4, before the encoder/decoder/heads redesign;
# shapes/unetpp re-recorded when it was retrained as the paper-exact U-Net++ (transposed convs),
# the CamVid models when the fair set (one recipe, scripts/train_zoo_gpu.py) replaced them.
SHIPPED_OUTPUTS = {
    "camvid/deeplabv3p": {"class_sums": [-19668.372, 16008.928, 124.447, -18871.78, -38947.614, 13719.441, 4205.145, -23772.801, -5144.413, -23758.497, -30425.148], "projection": 24.999},
    "camvid/unet": {"class_sums": [-12424.404, -11772.673, 865.595, -17758.885, -12243.233, 33511.554, -2598.549, -8006.825, -14079.88, -21600.01, -22843.537], "projection": -329.5},
    "camvid/unet3p": {"class_sums": [-20738.428, 1.375, -5079.535, -12059.217, -22814.332, 31776.71, -8368.948, -13245.354, -40811.964, -39345.984, -31502.032], "projection": 622.222},
    "camvid/unetpp@1": {"class_sums": [-19392.711, 746.32, -2673.601, -28881.144, -20053.581, 18320.703, 1220.317, -4988.07, -4278.052, -18515.115, -13069.482], "projection": -680.292},
    "camvid/unetpp@2": {"class_sums": [-13388.71, -1666.033, -3084.825, -30283.406, -17269.042, 28221.947, -2541.651, -8621.089, -19428.989, -19695.966, -27656.312], "projection": -322.108},
    "camvid/unetpp@3": {"class_sums": [-10253.381, -3057.336, -11251.475, -28348.946, -18438.315, 35723.887, -14138.895, -7186.871, -21197.657, -21292.691, -22890.023], "projection": -22.014},
    "camvid/unetpp@4": {"class_sums": [-3196.766, -877.745, -4886.702, -24336.383, -15329.781, 40923.03, -12105.262, -10462.77, -15569.898, -32908.171, -14239.885], "projection": -37.121},
    "shapes/deeplabv3p": {"class_sums": [-2530.2, -18176.647, -11764.765, -2719.884], "projection": 202.612},
    "shapes/unet": {"class_sums": [-22663.168, -20737.815, -11959.725, 14843.285], "projection": 251.254},
    "shapes/unet3p": {"class_sums": [-9559.213, -25499.561, -23431.498, 16071.335], "projection": 548.154},
    "shapes/unetpp@1": {"class_sums": [-4917.848, -466.325, -2077.682, -1002.133], "projection": 22.181},
    "shapes/unetpp@2": {"class_sums": [-7662.455, -362.033, -2958.275, 10279.898], "projection": 344.547},
    "shapes/unetpp@3": {"class_sums": [175.282, -10725.475, -4500.823, 2911.633], "projection": 307.427},
    "shapes/unetpp@4": {"class_sums": [-7306.483, -26275.061, -13928.513, -1969.965], "projection": -91.909},
}


def shipped_model_input() -> torch.Tensor:
    return torch.rand(1, 3, 72, 100, generator=torch.Generator().manual_seed(0))


TOY_EVALUATION = {"split": "val", "num_images": 2, "miou": 0.5, "pixel_accuracy": 0.8, "mean_class_accuracy": 0.6, "per_class_iou": {}, "confusion_matrix": []}


def make_run(directory, arch, seed):
    torch.manual_seed(seed)
    spec = model_spec(arch, "plain", 4, base_channels=4)
    model = create_model(arch, 4, base_channels=4)
    directory.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, directory / "best.pt")
    (directory / "card.json").write_text(json.dumps({**spec, "dataset": SHAPES.to_dict(), "val_miou": 0.5}))
    return model


@pytest.fixture
def weights_dir(tmp_path):
    make_run(tmp_path / "runs" / "unet", "unet", 0)
    make_run(tmp_path / "runs" / "unetpp", "unetpp", 1)
    target = tmp_path / "weights"
    zoo.export_model(tmp_path / "runs" / "unet", "toy/unet", weights_dir=target, extra={"evaluation": TOY_EVALUATION})
    zoo.export_model(tmp_path / "runs" / "unetpp", "toy/unetpp", weights_dir=target)
    zoo.clear_cache()
    yield target
    zoo.clear_cache()


def test_exported_models_list_load_once_and_predict(weights_dir):
    assert zoo.list_models(weights_dir) == ["toy/unet", "toy/unetpp"]
    card = zoo.load_card("toy/unet", weights_dir)
    assert card["weights_dtype"] == "float16" and len(card["sha256"]) == 64 and card["evaluation"] == TOY_EVALUATION
    model = zoo.load_model("toy/unet", "cpu", weights_dir)
    assert zoo.load_model("toy/unet", "cpu", weights_dir) is model
    assert not model.training
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 20, 30)).shape == (1, 4, 20, 30)


def test_weights_match_the_trained_model_up_to_fp16(weights_dir, tmp_path):
    original = torch.load(tmp_path / "runs" / "unet" / "best.pt", weights_only=True)["model"]
    loaded = zoo.load_model("toy/unet", "cpu", weights_dir).state_dict()
    for key, value in original.items():
        assert torch.allclose(loaded[key].float(), value.float(), atol=1e-2, rtol=1e-3), key


def test_corrupted_weights_are_detected_before_loading(weights_dir):
    path = weights_dir / "toy" / "unet.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.WeightsError, match="corrupted or was swapped"):
        zoo.load_model("toy/unet", "cpu", weights_dir)
    assert zoo.load_model("toy/unetpp", "cpu", weights_dir) is not None


def test_swapped_weights_are_detected(weights_dir):
    (weights_dir / "toy" / "unet.pt").write_bytes((weights_dir / "toy" / "unetpp.pt").read_bytes())
    with pytest.raises(zoo.WeightsError, match="SHA-256"):
        zoo.load_model("toy/unet", "cpu", weights_dir)


def test_missing_weights_and_bad_names(weights_dir):
    (weights_dir / "toy" / "unet.pt").unlink()
    with pytest.raises(zoo.WeightsError, match="missing"):
        zoo.load_model("toy/unet", "cpu", weights_dir)
    with pytest.raises(zoo.WeightsError, match="no shipped model"):
        zoo.load_card("toy/segnet", weights_dir)
    for bad in ("unet", "../etc/passwd", "toy/../../x"):
        with pytest.raises(zoo.WeightsError):
            zoo.load_card(bad, weights_dir)


def test_deeplab_cards_without_separable_hold_dense_weights():
    """DeepLabV3+ became depthwise separable by default after dense weights were shipped: a
    spec without the option rebuilds the dense form; a new spec writes the option out."""
    dense = create_model("deeplabv3p", 4, base_channels=4, aspp_channels=8, low_level_channels=4, separable=False)
    legacy = {"arch": "deeplabv3p", "encoder": "plain", "num_classes": 4, "base_channels": 4, "options": {"aspp_channels": 8, "low_level_channels": 4}}
    model_from_spec(legacy).load_state_dict(dense.state_dict())  # strict: every key and shape matches
    spec = model_spec("deeplabv3p", "plain", 4, 4, {"aspp_channels": 8, "low_level_channels": 4})
    assert spec["options"]["separable"] is True
    assert sum(p.numel() for p in model_from_spec(spec).parameters()) < sum(p.numel() for p in dense.parameters())
    assert model_spec("unet", "plain", 4, 4)["options"] == {}
    for name in ("camvid/deeplabv3p", "shapes/deeplabv3p"):
        assert zoo.load_card(name)["options"]["separable"] is False


def test_shipped_models_match_their_cards():
    for name in zoo.list_models():
        card = zoo.load_card(name)
        model = zoo.load_model(name, "cpu")
        assert sum(p.numel() for p in model.parameters()) == card["params"]
        assert card["arch"] in name


def test_shipped_models_predict_what_they_predicted_before_the_redesign():
    image = shipped_model_input()
    recorded = set()
    for name in zoo.list_models():
        model = zoo.load_model(name, "cpu")
        for depth in model.pruning_depths or [None]:
            key = name if depth is None else f"{name}@{depth}"
            with torch.inference_mode():
                logits = model(image, depth=depth)
            assert_fingerprint(logits, SHIPPED_OUTPUTS[key], abs_tolerance=0.05)
            recorded.add(key)
    assert recorded == set(SHIPPED_OUTPUTS)


def test_the_weights_folder_is_set_by_segmodels_weights_else_the_checkouts(monkeypatch, weights_dir):
    monkeypatch.setenv("SEGMODELS_WEIGHTS", str(weights_dir))
    assert zoo.default_weights_dir() == weights_dir
    monkeypatch.setenv("SEGMODELS_WEIGHTS", " ")
    assert zoo.default_weights_dir() == zoo.CHECKOUT_WEIGHTS_DIR == REPO / "assets" / "weights"
    monkeypatch.delenv("SEGMODELS_WEIGHTS")
    assert zoo.default_weights_dir() == zoo.CHECKOUT_WEIGHTS_DIR
    with pytest.raises(zoo.WeightsError, match="set SEGMODELS_WEIGHTS"):
        zoo.load_card("toy/segnet", weights_dir)


def test_shipped_unetpp_models_are_the_paper_exact_design():
    """Both shipped U-Net++ models upsample with 2x2 transposed convolutions, as the paper."""
    for name in zoo.list_models():
        if zoo.load_card(name)["arch"] == "unetpp":
            assert zoo.load_card(name)["options"].get("upsampling", "transposed") == "transposed", name
            assert zoo.load_model(name).decoder.upsampling == "transposed", name


def test_shipped_assets_fit_the_budget_and_record_their_evidence():
    assets = zoo.CHECKOUT_WEIGHTS_DIR.parent
    assert sum(f.stat().st_size for f in assets.rglob("*") if f.is_file()) < 60e6
    for name in zoo.list_models():
        card = zoo.load_card(name)
        assert card["evaluation"]["miou"] == pytest.approx(card["val_miou"], abs=0.02), name
        assert card["benchmark"], name
        if card["arch"] == "unetpp":
            by_depth = sorted(card["pruning"], key=lambda row: row["depth"])
            assert [row["depth"] for row in by_depth] == [1, 2, 3, 4]
            for shallower, deeper in zip(by_depth, by_depth[1:]):
                assert shallower["params"] < deeper["params"] and shallower["flops"] < deeper["flops"], name


def test_zoo_summary_and_command_report_the_recorded_numbers(weights_dir, capsys):
    from segmodels.cli import main

    card_path = weights_dir / "toy" / "unetpp.json"
    card = json.loads(card_path.read_text())
    card["pruning"] = [{"depth": d, "val_miou": 0.1 * d} for d in (1, 2, 3, 4)]
    card["evaluation"] = {"split": "val", "num_images": 3, "miou": 0.4, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.7,  # evaluate runs the full model: L4
                          "per_class_iou": {}, "confusion_matrix": []}
    card["benchmark"] = [{"depth": d, "params_m": d, "gflops": 2.0 * d, "median_ms": 10.0 * d, "input": "64x64", "device": "cpu"} for d in (1, 2, 3, 4)]
    card_path.write_text(json.dumps(card))
    rows = zoo.summary(weights_dir)
    assert [r["model"] for r in rows] == ["toy/unet", "toy/unetpp L1", "toy/unetpp L2", "toy/unetpp L3", "toy/unetpp L4"]
    assert rows[0]["val_miou"] == 0.5 and rows[0]["median_ms"] is None
    assert [r["median_ms"] for r in rows[1:]] == [10.0, 20.0, 30.0, 40.0]
    assert rows[3]["val_miou"] == pytest.approx(0.3)
    assert main(["zoo", "--weights", str(weights_dir)]) == 0
    table = capsys.readouterr().out
    assert "| toy/unetpp L4 | 0.4000 | 0.7000 | - | - | 4.00 | 8.00 | 40.0 | 64x64 cpu |" in table
    assert "| toy/unetpp L1 | 0.1000 | - | - | - | 1.00 |" in table  # no class accuracy recorded for a pruned depth, no test record


def test_export_records_the_seed_spread_of_the_same_recipe(tmp_path, capsys):
    from segmodels.cli import main

    recipe = {"arch": "unet", "lr": 0.001, "epochs": 80}
    runs = {"unet": (0, 0.70, {}), "unet-seed1": (1, 0.7125, {}), "unet-lr": (2, 0.60, {"lr": 0.01}), "unet-again": (0, 0.69, {})}
    for name, (seed, miou, change) in runs.items():
        make_run(tmp_path / name, "unet", seed)
        card = json.loads((tmp_path / name / "card.json").read_text())
        card |= {"val_miou": miou, "training": {**recipe, **change, "seed": seed, "output_dir": name}}
        (tmp_path / name / "card.json").write_text(json.dumps(card))
    target = tmp_path / "weights"
    with pytest.raises(ValueError, match="not trained with the same recipe: lr differ"):
        zoo.export_model(tmp_path / "unet", "toy/unet", weights_dir=target, seed_run_dirs=[tmp_path / "unet-lr"])
    with pytest.raises(ValueError, match="repeats seed 0"):
        zoo.export_model(tmp_path / "unet", "toy/unet", weights_dir=target, seed_run_dirs=[tmp_path / "unet-again"])
    assert not target.exists() and zoo.seed_noise("toy", target) is None  # a refused export writes nothing
    zoo.export_model(tmp_path / "unet", "toy/unet", weights_dir=target, seed_run_dirs=[tmp_path / "unet-seed1"])
    noise = zoo.seed_noise("toy", target)
    assert noise["model"] == "toy/unet" and noise["seeds"] == [0, 1] and noise["val_miou"] == [0.70, 0.7125]
    assert noise["spread"] == pytest.approx(0.0125)
    assert zoo.seed_noise("other", target) is None
    assert main(["zoo", "--weights", str(target)]) == 0
    assert ("toy run-to-run noise: toy/unet trained with the same recipe, val mIoU seed 0 0.7000, seed 1 0.7125: spread 0.0125 "
            "(each seed at its best validation: not used for verdicts)") in capsys.readouterr().out
    (target / "toy" / "aaa.json").write_text("{not json")  # listed first, unreadable: passed over
    assert zoo.seed_noise("toy", target)["model"] == "toy/unet"
