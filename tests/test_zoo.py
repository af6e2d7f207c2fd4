import json

import pytest
import torch

from segmodels import zoo
from segmodels.cards import model_spec
from segmodels.models import create_model


def make_run(directory, arch, seed):
    torch.manual_seed(seed)
    spec = model_spec(arch, "plain", 4, base_channels=4)
    model = create_model(arch, 4, base_channels=4)
    directory.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, directory / "best.pt")
    (directory / "card.json").write_text(json.dumps({**spec, "val_miou": 0.5}))
    return model


@pytest.fixture
def weights_dir(tmp_path):
    make_run(tmp_path / "runs" / "unet", "unet", 0)
    make_run(tmp_path / "runs" / "unetpp", "unetpp", 1)
    target = tmp_path / "weights"
    zoo.export_model(tmp_path / "runs" / "unet", "toy/unet", weights_dir=target, extra={"evaluation": {"miou": 0.5}})
    zoo.export_model(tmp_path / "runs" / "unetpp", "toy/unetpp", weights_dir=target)
    zoo.clear_cache()
    yield target
    zoo.clear_cache()


def test_exported_models_list_load_once_and_predict(weights_dir):
    assert zoo.list_models(weights_dir) == ["toy/unet", "toy/unetpp"]
    card = zoo.load_card("toy/unet", weights_dir)
    assert card["weights_dtype"] == "float16" and len(card["sha256"]) == 64 and card["evaluation"] == {"miou": 0.5}
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


def test_shipped_models_match_their_cards():
    for name in zoo.list_models():
        card = zoo.load_card(name)
        model = zoo.load_model(name, "cpu")
        assert sum(p.numel() for p in model.parameters()) == card["params"]
        assert card["arch"] in name


def test_shipped_assets_fit_the_budget_and_record_their_evidence():
    assets = zoo.WEIGHTS_DIR.parent
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
    card["benchmark"] = [{"depth": d, "params_m": d, "gflops": 2.0 * d, "median_ms": 10.0 * d, "input": "64x64", "device": "cpu"} for d in (1, 2, 3, 4)]
    card_path.write_text(json.dumps(card))
    rows = zoo.summary(weights_dir)
    assert [r["model"] for r in rows] == ["toy/unet", "toy/unetpp L1", "toy/unetpp L2", "toy/unetpp L3", "toy/unetpp L4"]
    assert rows[0]["val_miou"] == 0.5 and rows[0]["median_ms"] is None
    assert [r["median_ms"] for r in rows[1:]] == [10.0, 20.0, 30.0, 40.0]
    assert rows[3]["val_miou"] == pytest.approx(0.3)
    assert main(["zoo", "--weights", str(weights_dir)]) == 0
    table = capsys.readouterr().out
    assert "| toy/unetpp L4 | 0.4000 | 4.00 | 8.00 | 40.0 | 64x64 cpu |" in table
