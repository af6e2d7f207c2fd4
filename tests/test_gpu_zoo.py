"""scripts/train_zoo_gpu.py on the CPU with tiny settings: a fake CamVid of 36x48 frames is
packed into several parts, read back, and the whole zoo trains in lock-step and writes run
folders that ``python -m segmodels export`` and ``evaluate`` take."""

import importlib.util
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmodels import zoo
from segmodels.cli import main as segmodels_main
from segmodels.data import CAMVID

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_zoo_gpu", REPO / "scripts" / "train_zoo_gpu.py")
gpu = sys.modules.setdefault("train_zoo_gpu", importlib.util.module_from_spec(spec))
spec.loader.exec_module(gpu)

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
    encoder_tar = gpu.tar_bytes([len(gpu.encoder_state_bytes())])
    gpu.pack(camvid, out, part_bytes=encoder_tar + 12 * 1024)
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
    data = gpu.read_packed(packed)
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
    assert [line.split(":")[0] for line in lines if line.endswith("packed ImageNet encoder weights loaded")] == ["unet", "unetpp", "unet3p", "deeplabv3p"]


def test_split_into_parts_refuses_a_group_larger_than_a_part():
    groups = [[("a", b"x" * 5000)], [("b", b"y" * 100), ("c", b"z" * 100)]]
    parts = gpu.split_into_parts(groups, gpu.tar_bytes([5000]))
    assert [[name for name, _ in part] for part in parts] == [["a"], ["b", "c"]]
    with pytest.raises(ValueError, match="alone needs more"):
        gpu.split_into_parts(groups, 4000)


def test_pack_refuses_a_folder_git_does_not_ignore(camvid, tmp_path):
    with pytest.raises(SystemExit, match="must be a git-ignored folder"):
        gpu.main(["pack", "--data", str(camvid), "--out", str(tmp_path / "parts")])


def test_device_calls_fit_the_run_tool():
    manifest = {"checkout_bytes": 41_000_000, "parts": [{"file": f"camvid-{i}of3.tar", "bytes": 23_000_000} for i in (1, 2, 3)]}
    calls = gpu.device_calls(manifest, "packed", "ohem", 8)
    assert all(len(call["command"]) <= 2000 and len(call["carry"]) <= 8 and call["travel_mib"] < 64 for call in calls)
    assert [call["carry"][1] for call in calls] == ["packed/camvid-1of3.tar", "packed/camvid-2of3.tar", "packed/camvid-3of3.tar"]
    assert "check --packed /tmp/packed && python3 scripts/device_latency.py" in calls[0]["command"] and calls[1]["command"].endswith("--parts-only")
    assert [call["timeout_s"] for call in calls[:2]] == [150, 120]
    assert "train --packed /tmp/packed --loss ohem --second-seed 1 --budget-minutes 8" in calls[-1]["command"]
    assert calls[-1]["timeout_s"] == 540


def test_crop_at_scale_one_is_an_exact_window_of_the_frame():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 8, 10)
    masks = torch.randint(0, 12, (6, 8, 10))
    crops, labels = gpu.scale_crop_flip(images, masks, (4, 6), (1.0, 1.0), generator, ignore_index=11)
    flips = 0
    for image, mask, crop, label in zip(images, masks, crops, labels):
        windows = [(top, left, flip) for top in range(5) for left in range(5) for flip in (False, True)
                   if torch.allclose((image[:, top:top + 4, left:left + 6].flip(-1) if flip else image[:, top:top + 4, left:left + 6]), crop, atol=1e-6)]
        assert len(windows) == 1
        top, left, flip = windows[0]
        window = mask[top:top + 4, left:left + 6]
        assert torch.equal(window.flip(-1) if flip else window, label)
        flips += flip
    assert 0 < flips < 6


def test_downscaled_frames_are_padded_black_with_void_labels():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 20, 20) * 0.5 + 0.5
    masks = torch.randint(0, 5, (4, 20, 20))
    crops, labels = gpu.scale_crop_flip(images, masks, (16, 16), (0.5, 0.5), generator, ignore_index=11)
    assert torch.equal(labels == 11, crops.amax(1) == 0)
    assert ((labels == 11).flatten(1).sum(1) == 16 * 16 - 10 * 10).all()
    assert set(labels.unique().tolist()) <= set(range(5)) | {11}


def test_color_jitter_scales_a_grey_frame_by_the_brightness_range_only():
    grey = torch.full((64, 3, 5, 5), 0.5)
    jittered = gpu.color_jitter(grey, torch.Generator().manual_seed(0))
    values = jittered[:, :, 0, 0]
    assert torch.allclose(jittered, values[:, :, None, None].expand_as(jittered), atol=1e-6)
    assert torch.allclose(values, values[:, :1].expand_as(values), atol=1e-5)
    assert values.min() >= 0.35 - 1e-6 and values.max() <= 0.65 + 1e-6 and values.std() > 0.03
    assert torch.allclose(gpu.hue_rotations(torch.zeros(2)), torch.eye(3, dtype=torch.float64).expand(2, 3, 3), atol=1e-12)


def test_the_zoo_trains_in_lockstep_and_writes_exportable_runs(packed, camvid, tmp_path):
    runs, bundles = tmp_path / "runs", tmp_path / "bundle"
    gpu.main(["train", "--packed", str(packed), "--loss", "mfb", "--out", str(runs), "--second-seed", "1", "--epochs", "1", "--batch-size", "3", "--crop", "32x32",
              "--val-every", "1", "--flops-size", "36x48", "--bundle-dir", str(bundles), "--device", "cpu"])
    names = ["unet", "unetpp", "unet3p", "deeplabv3p", "unet-seed1"]
    cards = {name: json.loads((runs / name / "card.json").read_text()) for name in names}
    for name, card in cards.items():
        assert TRAINING_CARD_KEYS <= set(card), name
        assert card["epochs"] == 1 and card["best_epoch"] == 1 and card["training"]["loss"] == "mfb" and 0 <= card["val_mean_class_accuracy"] <= 1
        assert card["gpu_plan"]["stopped_by_time_budget"] is False
        history = [json.loads(line) for line in (runs / name / "history.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in history] == [1] and len(history[0]["val_per_class_iou"]) == CAMVID.num_classes
        assert card["val_miou"] == pytest.approx(history[0]["val_miou"], abs=2e-3)
        with tarfile.open(bundles / f"{name}.tar") as archive:
            assert sorted(archive.getnames()) == [f"{name}/best.pt", f"{name}/card.json", f"{name}/history.jsonl"]
    assert cards["unet-seed1"]["training"]["seed"] == 1 and cards["unet"]["training"]["seed"] == 0
    assert [entry["depth"] for entry in cards["unetpp"]["pruning"]] == [1, 2, 3, 4]
    assert cards["unet3p"]["options"] == {"cat_channels": 38}

    seed0, seed1 = (torch.load(runs / name / "best.pt", weights_only=True)["model"] for name in ("unet", "unet-seed1"))
    assert all(value.dtype == torch.float16 for value in seed0.values() if value.is_floating_point())
    assert any(not torch.equal(seed0[key], seed1[key]) for key in seed0 if not key.startswith("encoder."))

    report = tmp_path / "eval.json"
    segmodels_main(["evaluate", "--model", str(runs / "unet3p" / "best.pt"), "--dataset", "camvid", "--data", str(camvid), "--device", "cpu", "--json", str(report)])
    assert json.loads(report.read_text())["miou"] == pytest.approx(cards["unet3p"]["val_miou"], abs=1e-6)
    weights = tmp_path / "weights"
    zoo.export_model(runs / "deeplabv3p", "camvid/deeplabv3p", weights_dir=weights)
    model = zoo.load_model("camvid/deeplabv3p", weights_dir=weights)
    assert model(torch.rand(1, 3, 36, 48)).shape == (1, CAMVID.num_classes, 36, 48)


def test_time_budget_stops_every_model_at_the_same_epoch_and_still_writes_results(packed, tmp_path):
    run = gpu.GpuRun(packed=packed, loss="ce", out=tmp_path / "runs", archs=("unet", "deeplabv3p"), epochs=3, batch_size=3, crop_size=(32, 32), val_every=2,
                     flops_size=(36, 48), budget_seconds=1.0, device="cpu")
    cards = gpu.train_zoo(run, log=lambda text: None)
    assert [card["epochs"] for card in cards] == [1, 1]
    assert all(card["gpu_plan"]["stopped_by_time_budget"] and card["best_epoch"] == 1 for card in cards)
    history = [json.loads(line) for line in (tmp_path / "runs" / "unet" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["val_miou"] == pytest.approx(cards[0]["val_miou"], abs=2e-3)
