"""The shipped model zoo: weights the project trained itself, under
``<weights folder>/<set>/<arch>.pt`` with a model card ``<arch>.json`` beside each. The weights
folder is :data:`WEIGHTS_DIR` unless a caller passes ``weights_dir`` (:func:`default_weights_dir`).

A weight file is checked against the SHA-256 in its card before
``torch.load(weights_only=True)``; a model is loaded once per device and cached until its files change."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch

from .cards import model_from_spec, sha256_of
from .modelcard import ModelCard
from .models import SegmentationModel

CHECKOUT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"


def default_weights_dir() -> Path:
    """The weights folder when none is passed: the environment variable ``SEGMODELS_WEIGHTS``,
    else ``assets/weights`` of the checkout this package runs from (``pip install -e .``)."""
    configured = os.environ.get("SEGMODELS_WEIGHTS", "").strip()
    return Path(configured).expanduser() if configured else CHECKOUT_WEIGHTS_DIR


WEIGHTS_DIR = default_weights_dir()  # read once, when segmodels.zoo is imported


class WeightsError(RuntimeError):
    """A shipped model cannot be used: missing, corrupted or swapped weights."""


_cache: dict[tuple[str, str], tuple[tuple, SegmentationModel]] = {}
_lock = threading.RLock()  # load_model holds it while read_card takes it again


def list_models(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names like ``shapes/unet`` of every shipped model with a card."""
    return sorted(f"{card.parent.name}/{card.stem}" for card in weights_dir.glob("*/*.json"))


def _paths(name: str, weights_dir: Path) -> tuple[Path, Path]:
    set_name, _, arch = name.partition("/")
    if not set_name or not arch or ".." in name:
        raise WeightsError(f"model names look like 'shapes/unet'; got {name!r}. Shipped: {', '.join(list_models(weights_dir)) or 'none'}")
    return weights_dir / set_name / f"{arch}.pt", weights_dir / set_name / f"{arch}.json"


def card_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return _paths(name, weights_dir)[1]


def load_card(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The model card of a shipped model as its JSON dict (:func:`read_card` types it)."""
    path = card_path(name, weights_dir)
    if not path.is_file():
        raise WeightsError(f"no shipped model {name!r} in {weights_dir} (set SEGMODELS_WEIGHTS to another folder); shipped: {', '.join(list_models(weights_dir)) or 'none'}")
    return json.loads(path.read_text())


_card_cache: dict[Path, tuple[tuple, ModelCard]] = {}
_card_lock = threading.Lock()  # its own: load_model reads cards while it holds _lock


def read_card(name: str, weights_dir: Path = WEIGHTS_DIR) -> ModelCard:
    """The typed model card of a shipped model; the file is parsed again only when it changes."""
    path = card_path(name, weights_dir)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    stamp = None if stat is None else (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _card_lock:
        cached = _card_cache.get(path)
    if cached is not None and stamp is not None and cached[0] == stamp:
        return cached[1]
    try:
        card = ModelCard.from_dict(load_card(name, weights_dir))
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"the model card of {name} is unreadable: {type(error).__name__}: {error}") from error
    if stamp is not None:
        with _card_lock:
            _card_cache[path] = (stamp, card)
    return card


def write_card(name: str, card: ModelCard, weights_dir: Path = WEIGHTS_DIR) -> None:
    card.write(card_path(name, weights_dir))


def load_state_dict_checked(weights_path: Path, expected_sha256: str) -> dict:
    """Verify the file's SHA-256, then load it with ``weights_only=True``."""
    if not weights_path.is_file():
        raise WeightsError(f"weight file {weights_path} is missing")
    actual = sha256_of(weights_path)
    if actual != expected_sha256:
        raise WeightsError(f"weight file {weights_path} is corrupted or was swapped: SHA-256 {actual[:12]}... does not match its card ({expected_sha256[:12]}...)")
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def file_stamp(name: str, weights_dir: Path = WEIGHTS_DIR) -> tuple:
    """(inode, size, mtime) of the weight file and the card: changes when either is replaced."""
    stamp = []
    for path in _paths(name, weights_dir):
        try:
            stat = path.stat()
            stamp.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def read_model(name: str, weights_dir: Path = WEIGHTS_DIR) -> SegmentationModel:
    """A new copy of a shipped model, in eval mode on the CPU (not cached)."""
    card = read_card(name, weights_dir)
    weights_path, _ = _paths(name, weights_dir)
    state = load_state_dict_checked(weights_path, card.sha256)
    model = model_from_spec(card.spec, pretrained=False)
    model.load_state_dict(state)
    return model.eval()


def pretrained(name: str, device: torch.device | str = "cpu", weights_dir: Path | None = None) -> SegmentationModel:
    """The one way to get a shipped model: ``segmodels.pretrained("camvid/unetpp")`` builds it
    from its card, checks its weight file's SHA-256, and returns a new copy in eval mode on
    ``device`` (``segmodels.model_card`` gives its card)."""
    return read_model(name, weights_dir or WEIGHTS_DIR).to(device)


def load_model(name: str, device: torch.device | str = "cpu", weights_dir: Path = WEIGHTS_DIR) -> SegmentationModel:
    """Load a shipped model in eval mode onto ``device``; later calls return the same object
    until its weight file or card is replaced."""
    key = (str(weights_dir / name), str(torch.device(device)))
    stamp = file_stamp(name, weights_dir)
    with _lock:
        cached = _cache.get(key)
        if cached is None or cached[0] != stamp:
            _cache[key] = (stamp, read_model(name, weights_dir).to(device))
        return _cache[key][1]


def summary(weights_dir: Path = WEIGHTS_DIR) -> list[dict]:
    """One row per shipped model (U-Net++: per pruning depth), from its card: validation
    and test figures (``evaluate``, ``test-card``), the ``bench`` result recorded at export,
    and how it was trained."""
    rows = []
    for name in list_models(weights_dir):
        card = read_card(name, weights_dir)
        timings = {row.depth: row for row in card.benchmark}
        depths = [entry.depth for entry in card.pruning] or [None]
        deepest = max((d for d in depths if d is not None), default=None)
        for depth in depths:
            timing = timings.get(depth)
            test = card.test_result(depth)
            entry = next((e for e in card.pruning if e.depth == depth), None)
            class_accuracy = card.val.mean_class_accuracy if card.val is not None and depth == deepest else (entry.val_mean_class_accuracy if entry else None)
            rows.append({
                "model": f"{name} L{depth}" if depth else name,
                "val_miou": card.val_miou(depth),
                "val_mean_class_accuracy": class_accuracy,
                "test_miou": test.miou if test else None,
                "test_interval": (test.miou_interval.low, test.miou_interval.high) if test and test.miou_interval else None,
                "test_mean_class_accuracy": test.mean_class_accuracy if test else None,
                "params_m": timing.params_m if timing else None,
                "gflops": timing.gflops if timing else None,
                "median_ms": timing.median_ms if timing else None,
                "bench_input": timing.input if timing else None,
                "bench_device": timing.device if timing else None,
                "epochs": card.epochs,
                "train_minutes": (card.train_seconds or 0) / 60,
                "train_device": card.train_device,
            })
    return rows


def clear_cache() -> None:
    with _lock:
        _cache.clear()
    with _card_lock:
        _card_cache.clear()


SEED_FREE_KEYS = ("seed", "output_dir")


def seed_variance(card: dict, seed_run_dirs: list[Path]) -> dict:
    """The card's run and the same recipe trained with other seeds (each folder's
    ``card.json``): their seeds, val mIoUs and spread (largest minus smallest), the run-to-run
    noise of the recipe. A run whose training configuration differs in anything but the seed
    and output folder is refused."""
    recipe = {key: value for key, value in card["training"].items() if key not in SEED_FREE_KEYS}
    seeds, mious = [card["training"]["seed"]], [card["val_miou"]]
    for run_dir in seed_run_dirs:
        other = json.loads((Path(run_dir) / "card.json").read_text())
        differing = sorted(key for key in recipe.keys() | other["training"].keys() if key not in SEED_FREE_KEYS and other["training"].get(key) != recipe.get(key))
        if differing:
            raise ValueError(f"{run_dir} was not trained with the same recipe: {', '.join(differing)} differ")
        if other["training"]["seed"] in seeds:
            raise ValueError(f"{run_dir} repeats seed {other['training']['seed']}")
        seeds.append(other["training"]["seed"])
        mious.append(other["val_miou"])
    return {"seeds": seeds, "val_miou": mious, "spread": max(mious) - min(mious)}


def seed_noise(set_name: str, weights_dir: Path = WEIGHTS_DIR) -> dict | None:
    """The run-to-run noise recorded for a model set: the ``seed_variance`` of the first of its
    readable cards that has one, with that model's name (``None`` without one). An unreadable
    card is passed over: it is reported where its model is used."""
    for name in list_models(weights_dir):
        if name.startswith(f"{set_name}/"):
            try:
                variance = read_card(name, weights_dir).seed_variance
            except (WeightsError, OSError, ValueError):
                continue
            if variance:
                return {"model": name, **variance}
    return None


def export_model(run_dir: str | Path, name: str, weights_dir: Path = WEIGHTS_DIR, extra: dict | None = None, seed_run_dirs: list[Path] = ()) -> Path:
    """Copy a run's ``best.pt`` into the zoo as an fp16 state dict with its card (plus
    ``extra`` entries such as evaluation and benchmark results, the seed variance against
    ``seed_run_dirs`` when given) and the file's SHA-256."""
    run_dir = Path(run_dir)
    card = json.loads((run_dir / "card.json").read_text())
    card.update(extra or {})
    if seed_run_dirs:
        card["seed_variance"] = seed_variance(card, list(seed_run_dirs))
    weights_path, card_path = _paths(name, weights_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in best["model"].items()}
    torch.save(half, weights_path)
    card["weights_file"] = weights_path.name
    card["weights_dtype"] = "float16"
    card["sha256"] = sha256_of(weights_path)
    card_path.write_text(json.dumps(card, indent=2))
    return weights_path
