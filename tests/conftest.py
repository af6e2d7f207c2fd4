"""Shared fixtures: a temporary model zoo of tiny, untrained Shapes models (nothing is trained),
a fake CamVid folder with a tiny CamVid model, and the real CamVid folder where there is one.

The tests that need real CamVid data find it through the ``camvid_root`` fixture:
``$SEGMODELS_CAMVID``, else ``../shared/datasets/camvid`` beside the repository; without it they
are skipped, and ``pytest -ra`` (``make test``) names the folder they looked for."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CAMVID = REPO.parent / "shared" / "datasets" / "camvid"

# Narrow layers so that every forward pass takes milliseconds on a CPU.
TINY_OPTIONS = {"unet": {}, "unetpp": {}, "unet3p": {"cat_channels": 4}, "deeplabv3p": {"aspp_channels": 8, "low_level_channels": 4}}
TEST_VAL_MIOU = {"unet": 0.61, "unetpp": 0.64, "unet3p": 0.63, "deeplabv3p": 0.66}


def build_tiny_zoo(weights_dir: Path, run_root: Path) -> Path:
    """Export the four architectures (plain encoder, base_channels=4, 4 Shapes classes) as
    ``shapes/<arch>`` with cards whose scores are made up and labelled as such."""
    from segmodels import create_model, zoo
    from segmodels.cards import count_flops, count_parameters, model_spec
    from segmodels.data import SHAPES

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for arch, options in TINY_OPTIONS.items():
        model = create_model(arch, SHAPES.num_classes, encoder="plain", pretrained=False, base_channels=4, **options).eval()
        spec = model_spec(arch, "plain", SHAPES.num_classes, 4, options)
        run_dir = run_root / arch
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, run_dir / "best.pt")
        card = {
            **spec,
            "note": "TEST FIXTURE: untrained tiny model; every score below is made up",
            "dataset": SHAPES.to_dict(),
            "val_miou": TEST_VAL_MIOU[arch],
            "val_per_class_iou": {name: round(TEST_VAL_MIOU[arch] - 0.05 * i, 2) for i, name in enumerate(SHAPES.class_names)},
            "params": count_parameters(model),
            "flops": count_flops(model, (64, 64)),
            "flops_input_size": [64, 64],
        }
        if model.pruning_depths:
            card["pruning"] = [{"depth": d, "val_miou": 0.4 + 0.06 * d, "params": count_parameters(model, depth=d), "flops": count_flops(model, (64, 64), depth=d)} for d in model.pruning_depths]
        (run_dir / "card.json").write_text(json.dumps(card))
        zoo.export_model(run_dir, f"shapes/{arch}", weights_dir=weights_dir)
    torch.set_num_threads(threads)
    return weights_dir


def output_fingerprint(logits: torch.Tensor) -> dict:
    """A checksum of a model's output that survives float reordering: each class's logit
    sum and one fixed random projection of all logits, in float64."""
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = logits.double()
    return {"class_sums": [round(v, 3) for v in logits.sum((0, 2, 3)).tolist()], "projection": round(float((logits * weights).sum()), 3)}


def assert_fingerprint(logits: torch.Tensor, expected: dict, abs_tolerance: float) -> None:
    actual = output_fingerprint(logits)
    assert actual["class_sums"] == pytest.approx(expected["class_sums"], abs=abs_tolerance), actual
    assert actual["projection"] == pytest.approx(expected["projection"], abs=abs_tolerance), actual


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """A weights directory with shapes/{unet,unetpp,unet3p,deeplabv3p}."""
    root = tmp_path_factory.mktemp("tiny_zoo")
    return build_tiny_zoo(root / "weights", root / "runs")


@pytest.fixture
def own_zoo(tiny_zoo, tmp_path) -> Path:
    """A private copy of the tiny zoo (its own cache entries; safe to damage)."""
    target = tmp_path / "weights"
    shutil.copytree(tiny_zoo, target)
    return target


@pytest.fixture
def tiny_config(tiny_zoo):
    """Build a fast DemoConfig on the tiny zoo; keyword arguments override fields."""
    from demo import DemoConfig

    def make(**overrides):
        fields = {"weights_dir": tiny_zoo, "camvid_dir": None, "device": "cpu", "warmup": 1, "repeats": 2, "num_shapes_examples": 3, "shapes_size": 64, "rf_input_size": (64, 64),
                  "torch_threads": 1, "warm_up": False}
        return DemoConfig(**(fields | overrides))

    return make


def camvid_folder() -> Path:
    """Where the tests look for CamVid: ``$SEGMODELS_CAMVID``, else ``../shared/datasets/camvid``."""
    return Path(os.environ.get("SEGMODELS_CAMVID") or DEFAULT_CAMVID).expanduser()


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder (SegNet layout: train, val, test and their ``*annot``); the test
    is skipped, naming the folder it looked for, when it is not there."""
    root = camvid_folder()
    missing = [split for split in ("train", "trainannot", "val", "valannot") if not (root / split).is_dir()]
    if missing:
        pytest.skip(f"CamVid not found at {root} (no {', '.join(missing)}): set SEGMODELS_CAMVID to a CamVid folder")
    return root


def build_fake_camvid(root: Path, weights: Path, tiny_zoo: Path, run_dir: Path) -> tuple[Path, Path]:
    """A fake CamVid folder (two 36x48 val images, void = 11 in the masks) and a zoo holding
    the tiny Shapes models plus a tiny 11-class camvid/unet (card values made up)."""
    import numpy as np
    from PIL import Image

    from segmodels import create_model, zoo
    from segmodels.cards import model_spec
    from segmodels.data import CAMVID

    rng = np.random.default_rng(0)
    for split in ("val", "valannot"):
        (root / split).mkdir(parents=True)
    for name in ("0001TP_000010", "0001TP_000040"):
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(root / "val" / f"{name}.png")
        Image.fromarray(rng.integers(0, 12, (36, 48)).astype(np.uint8), mode="L").save(root / "valannot" / f"{name}.png")
    shutil.copytree(tiny_zoo, weights)
    model = create_model("unet", CAMVID.num_classes, encoder="plain", pretrained=False, base_channels=4)
    run_dir.mkdir(parents=True)
    spec = model_spec("unet", "plain", CAMVID.num_classes, 4, {})
    torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, run_dir / "best.pt")
    card = {**spec, "note": "TEST FIXTURE: made-up scores", "dataset": CAMVID.to_dict(), "val_miou": 0.5, "val_per_class_iou": dict.fromkeys(CAMVID.class_names, 0.5)}
    (run_dir / "card.json").write_text(json.dumps(card))
    zoo.export_model(run_dir, "camvid/unet", weights_dir=weights)
    return root, weights


class FakeClock:
    """A monotonic clock whose seconds pass only when a test moves ``now``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def eventually(probe, accept=bool, timeout_s: float = 30.0, what: str = "the condition"):
    """Poll ``probe()`` until ``accept`` takes its value, and return that value; fail with its
    last value after ``timeout_s`` (a bound far above how long it takes on a loaded machine,
    reached only when it never comes)."""
    deadline = time.monotonic() + timeout_s
    while not accept(value := probe()):
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout_s:g} s"
        time.sleep(0.02)
    return value
