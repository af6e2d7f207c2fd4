"""scripts/train_zoo_gpu.py on the CPU with tiny settings: a fake CamVid of 36x48 frames, the
encoder weights and smp's sources are packed into several parts and read back, and the
candidate recipe (ours, an extra seed and smp's peers) trains in lock-step end to end and
writes run folders that ``python -m segmodels export`` and ``evaluate`` take."""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gpu_parts
import train_zoo_gpu as gpu
from segmodels import zoo
from segmodels.cli import main as segmodels_main
from segmodels.data import CAMVID

TRAINING_CARD_KEYS = {"arch", "encoder", "num_classes", "options", "dataset", "training", "data_split", "epochs", "best_epoch", "val_miou", "val_per_class_iou",
                      "val_pixel_accuracy", "params", "flops", "flops_input_size", "train_seconds", "train_device", "world_size", "git_commit"}


def fake_camvid(root: Path, train: int = 6, val: int = 3) -> Path:
    """36x48 frames of 6x8 blocks, each a class with its own colour plus noise, with label
    maps holding every class id and void."""
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:36, 0:48]
    colours = rng.integers(30, 226, (CAMVID.num_classes + 1, 3))
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            mask = ((rows // 6) * 3 + columns // 8 + index) % (CAMVID.num_classes + 1)
            frame = colours[mask] + rng.integers(-4, 5, (36, 48, 3))
            Image.fromarray(frame.astype(np.uint8)).save(root / split / f"f{index:03d}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / f"{split}annot" / f"f{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def camvid(tmp_path_factory) -> Path:
    return fake_camvid(tmp_path_factory.mktemp("camvid"))


@pytest.fixture(scope="module")
def packed(camvid, tmp_path_factory) -> Path:
    """Parts just large enough for the encoder weights, so the frames spill into more parts."""
    out = tmp_path_factory.mktemp("packed")
    largest = max(gpu_parts.tar_bytes([len(gpu.encoder_state_bytes())]), gpu_parts.tar_bytes([len(data) for _, data in gpu.peer_sources()]))
    gpu.pack(camvid, out, part_bytes=largest + 12 * 1024)
    return out


def test_pack_spreads_pairs_over_parts_within_the_limit(packed):
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["images"] == {"train": 6, "val": 3}
    assert len(manifest["parts"]) >= 2
    for part in manifest["parts"]:
        assert part["bytes"] <= manifest["part_limit_bytes"]
        with tarfile.open(packed / part["file"]) as archive:
            names = archive.getnames()
        frames = [name for name in names if name.split("/")[0] in ("train", "val")]
        assert sorted(f"{name.split('/')[0]}annot/{Path(name).stem}.png" for name in frames) == sorted(n for n in names if "annot/" in n)


def test_read_packed_decodes_what_was_packed(packed, camvid):
    data, encoder_state, _ = gpu.read_packed(packed)
    assert "body.conv_stem.weight" in encoder_state and (packed / "python" / "segmentation_models_pytorch" / "__init__.py").is_file()
    assert data.train_images.shape == (6, 3, 36, 48) and data.train_images.dtype == torch.uint8
    assert data.val_masks.shape == (3, 36, 48)
    assert np.array_equal(data.val_images[1].permute(1, 2, 0).numpy(), np.asarray(Image.open(camvid / "val" / "f001.png")))
    assert np.array_equal(data.train_masks[2].numpy(), np.asarray(Image.open(camvid / "trainannot" / "f002.png")))
    original, other = (torch.from_numpy(np.array(Image.open(camvid / "train" / name))).permute(2, 0, 1).float() for name in ("f000.png", "f001.png"))
    jpeg_error = (data.train_images[0].float() - original).abs().mean()
    assert 0 < jpeg_error < 0.2 * (other - original).abs().mean()


def test_read_packed_names_missing_and_corrupted_parts(packed, tmp_path):
    copy = shutil.copytree(packed, tmp_path / "copy")
    first, second = sorted(copy.glob("camvid-*.tar"))[:2]
    first.unlink()
    second.write_bytes(second.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(FileNotFoundError, match=rf"{first.name} \(missing\), {second.name} \(corrupted\)"):
        gpu.read_packed(copy)


def test_check_names_the_parts_and_loads_the_packed_encoder_into_every_model(packed, tmp_path, capsys):
    copy = shutil.copytree(packed, tmp_path / "copy")
    missing = sorted(copy.glob("camvid-*.tar"))[-1]
    missing.unlink()
    assert gpu.main(["check", "--packed", str(copy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{missing.name}: missing" in lines
    assert [line.split(":")[0] for line in lines if line.endswith("packed ImageNet encoder weights loaded")] == [
        "unet", "unetpp", "unet3p", "deeplabv3p", "unet-seed1", "smp-unet", "smp-unetpp", "smp-deeplabv3p"]


def test_split_into_parts_refuses_a_group_larger_than_a_part():
    groups = [[("a", b"x" * 5000)], [("b", b"y" * 100), ("c", b"z" * 100)]]
    parts = gpu_parts.split_into_parts(groups, gpu_parts.tar_bytes([5000]))
    assert [[name for name, _ in part] for part in parts] == [["a"], ["b", "c"]]
    with pytest.raises(ValueError, match="alone needs more"):
        gpu_parts.split_into_parts(groups, 4000)


def test_pack_refuses_a_folder_git_does_not_ignore(camvid, tmp_path):
    with pytest.raises(SystemExit, match="must be a git-ignored folder"):
        gpu.main(["pack", "--data", str(camvid), "--out", str(tmp_path / "parts")])


def test_device_calls_fit_the_run_tool():
    manifest = {"checkout_bytes": 41_000_000, "parts": [{"file": f"camvid-{i}of3.tar", "bytes": 23_000_000} for i in (1, 2, 3)]}
    calls = gpu.device_calls(manifest, "packed", "recipes/camvid.yaml", 8)
    assert all(len(call["command"]) <= 2000 and len(call["carry"]) <= 8 and call["travel_mib"] < 64 for call in calls)
    assert [call["carry"][1] for call in calls] == ["packed/camvid-1of3.tar", "packed/camvid-2of3.tar", "packed/camvid-3of3.tar"]
    assert calls[0]["command"].endswith("check --packed /tmp/packed --recipe recipes/camvid.yaml") and calls[1]["command"].endswith("--parts-only")
    assert [call["timeout_s"] for call in calls[:2]] == [150, 120]
    assert "train --packed /tmp/packed --recipe recipes/camvid.yaml --budget-minutes 8" in calls[-1]["command"]
    assert calls[-1]["timeout_s"] == 540


@pytest.mark.slow
def test_the_candidate_recipe_trains_end_to_end_from_packed_parts(packed, camvid, tmp_path, capsys):
    """What the GPU calls run, on the CPU: every model of recipes/camvid.yaml, 2 epochs, 64x96
    crops, in two calls (the second resumes the first's run)."""
    runs, bundles = tmp_path / "runs", tmp_path / "bundle"
    command = ["train", "--packed", str(packed), "--out", str(runs), "--bundle-dir", str(bundles), "--device", "cpu", "--budget-minutes", "30",
               "--override", "epochs=2", "batch_size=3", "crop_size=[64,96]", "val_every=1", "flops_size=[36,48]"]
    gpu.main([*command, "--stop-after", "1"])
    gpu.main([*command, "--resume"])
    names = ["unet", "unetpp", "unet3p", "deeplabv3p", "unet-seed1", "smp-unet", "smp-unetpp", "smp-deeplabv3p"]
    cards = {name: json.loads((runs / name / "card.json").read_text()) for name in names}
    for name, card in cards.items():
        assert TRAINING_CARD_KEYS <= set(card), name
        assert card["epochs"] == 2 and card["best_epoch"] == 2 and card["kept"] == "final epoch" and card["protocol"] == "train", name
        assert card["training"]["loss"] == "ce_lovasz" and card["training"]["ema_decay"] == 0.995 and card["recipe"]["name"] == "camvid-candidate", name
        assert sorted(card["lockstep"]["models_in_lockstep"]) == sorted(names) and not card["lockstep"]["stopped_by_time_budget"]
        assert card["lockstep"]["resumed_after_epochs"] == [1] and card["lockstep"]["finished"]
        history = [json.loads(line) for line in (runs / name / "history.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in history] == [1, 2] and len(history[-1]["val_per_class_iou"]) == CAMVID.num_classes
        assert card["val_miou"] == pytest.approx(history[-1]["val_miou"], abs=2e-3)
        assert torch.load(runs / name / "last.pt", weights_only=True)["epoch"] == 2
        with tarfile.open(runs / "bundles" / f"{name}.tar") as archive:
            assert sorted(archive.getnames()) == [f"{name}/best.pt", f"{name}/card.json", f"{name}/history.jsonl"]
    returned = sorted(bundles.iterdir())
    assert len(returned) <= gpu_parts.RETURN_FILES and sum(path.stat().st_size for path in returned) <= gpu_parts.RETURN_BYTES
    left = sorted(set(names) - {path.stem for path in returned})
    assert left and f"not brought back by this call: {', '.join(left)}" in capsys.readouterr().out
    assert cards["smp-unet"]["arch"] == "smp.Unet" and cards["smp-unet"]["encoder"] == "tu-efficientnet_lite0"
    assert [entry["depth"] for entry in cards["unetpp"]["pruning"]] == [1, 2, 3, 4]

    for name in ("unet3p", "smp-deeplabv3p"):
        report = tmp_path / f"{name}.json"
        segmodels_main(["evaluate", "--model", str(runs / name / "best.pt"), "--dataset", "camvid", "--data", str(camvid), "--device", "cpu", "--json", str(report)])
        assert json.loads(report.read_text())["miou"] == pytest.approx(cards[name]["val_miou"], abs=1e-6)
    weights = tmp_path / "weights"
    zoo.export_model(runs / "deeplabv3p", "camvid/deeplabv3p", weights_dir=weights)
    assert zoo.load_model("camvid/deeplabv3p", weights_dir=weights)(torch.rand(1, 3, 36, 48)).shape == (1, CAMVID.num_classes, 36, 48)
