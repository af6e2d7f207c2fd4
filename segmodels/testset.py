"""The held-out test evaluation of a shipped model, written into its card once.

Protocol (CamVid's README): recipes, epochs and checkpoints are chosen on val (or train);
test is evaluated once per finished model and reported, never used to choose. So
:func:`record_test` refuses to evaluate a model whose card already holds a test record for
the same weight file (``again=True`` re-runs it, for a check that must reproduce the figures).

For each depth the model runs at (every U-Net++ pruning depth; one pass otherwise) it keeps
the per-image confusion matrices in ``<arch>.test.npz`` beside the card, and writes to the
card the dataset metrics (one matrix summed over the split) with percentile bootstrap
intervals over the images (``segmodels.bootstrap``). The dashboard compares models with a
paired bootstrap over those same per-image matrices.
"""

from __future__ import annotations

import functools
import io
import shlex
from pathlib import Path

import numpy as np

from . import zoo
from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, Entrant, Interval, against_best, bootstrap
from .cards import sha256_of
from .data import build_dataset, eval_transform
from .evaluation import evaluate_per_image
from .metrics import ConfusionMatrix
from .modelcard import Evaluation, ModelCard, TestRecord

TEST_SPLIT = "test"


class AlreadyEvaluatedOnTest(RuntimeError):
    """The card already holds a test evaluation of these weights."""


def per_image_key(depth: int | None) -> str:
    return "full" if depth is None else f"depth{depth}"


def summarise(per_image: np.ndarray, class_names: tuple[str, ...], depth: int | None, source: str,
              resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Evaluation:
    """The :class:`Evaluation` of ``N x K x K`` per-image matrices: metrics of their sum and
    bootstrap intervals of the mIoU and of each class's IoU."""
    metrics = ConfusionMatrix.from_counts(per_image.sum(0)).compute()
    intervals = bootstrap(per_image, resamples, seed)
    return Evaluation(
        split=TEST_SPLIT, num_images=int(per_image.shape[0]), miou=metrics["miou"], pixel_accuracy=metrics["pixel_accuracy"],
        mean_class_accuracy=metrics["mean_class_accuracy"], per_class_iou=dict(zip(class_names, metrics["per_class_iou"])),
        confusion_matrix=metrics["confusion_matrix"], depth=depth, miou_interval=intervals.miou,
        per_class_interval=dict(zip(class_names, intervals.per_class_iou)), source=source,
    )


def read_per_image(name: str, depth: int | None = None, weights_dir: Path = zoo.WEIGHTS_DIR) -> np.ndarray:
    """The per-image test confusion matrices of a shipped model at ``depth`` (the full
    model when None), read-only; the file is checked against the SHA-256 in its card and
    read once while it stays the same."""
    card = zoo.read_card(name, weights_dir)
    if card.test is None:
        raise zoo.WeightsError(f"{name} has no test evaluation; run python -m segmodels test-card {name} --data DIR")
    result = card.test_result(depth)
    if result is None:
        raise zoo.WeightsError(f"{name} has no test evaluation at depth {depth}")
    path = zoo.card_path(name, weights_dir).parent / card.test.per_image_file
    try:
        stat = path.stat()
    except OSError:
        raise zoo.WeightsError(f"{path} is missing: the test record of {name} needs it") from None
    return _per_image_arrays(path, card.test.per_image_sha256, (stat.st_ino, stat.st_size, stat.st_mtime_ns))[per_image_key(result.depth)]


@functools.lru_cache(maxsize=32)
def _per_image_arrays(path: Path, sha256: str, stamp: tuple) -> dict[str, np.ndarray]:
    if sha256_of(path) != sha256:
        raise zoo.WeightsError(f"{path} is missing or does not match its card's SHA-256")
    with np.load(path) as arrays:
        loaded = {key: arrays[key] for key in arrays.files}
    for array in loaded.values():
        array.flags.writeable = False
    return loaded


def record_test(name: str, data_root: str | Path, weights_dir: Path = zoo.WEIGHTS_DIR, device: str = "cpu",
                again: bool = False, show_progress: bool = False, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> ModelCard:
    """Evaluate a shipped model on its dataset's test split at every depth, write the
    per-image matrices beside the card and the :class:`TestRecord` into it; returns the card."""
    card = zoo.read_card(name, weights_dir)
    if card.test is not None and card.test.weights_sha256 == card.sha256 and not again:
        raise AlreadyEvaluatedOnTest(f"{name} was already evaluated on test with these weights (test is evaluated once per finished model); pass --again to reproduce it")
    dataset = build_dataset(card.dataset.name, data_root, split=TEST_SPLIT, transform=eval_transform())
    model = zoo.read_model(name, weights_dir).to(device)
    depths = tuple(model.pruning_depths) or (None,)
    arrays, results = {}, []
    for depth in depths:
        options = {} if depth is None else {"depth": depth}
        per_image = evaluate_per_image(model, dataset, card.num_classes, card.dataset.ignore_index, device, show_progress=show_progress, **options)
        arrays[per_image_key(depth)] = per_image
        results.append(summarise(per_image, card.dataset.class_names, depth, name, resamples, seed))
    image_sizes = {tuple(dataset[i][1].shape) for i in (0, len(dataset) - 1)}
    per_image_path = zoo.card_path(name, weights_dir).with_suffix(".test.npz")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    per_image_path.write_bytes(buffer.getvalue())
    record = TestRecord(
        results=tuple(results), per_image_file=per_image_path.name, per_image_sha256=sha256_of(per_image_path),
        weights_sha256=card.sha256, input_size=max(image_sizes), resamples=resamples, seed=seed,
        command=shlex.join(["python", "-m", "segmodels", "test-card", name, "--data", "DIR"]),
    )
    updated = ModelCard.from_dict(card.to_dict() | {"test": record.to_dict()})
    zoo.write_card(name, updated, weights_dir)
    return updated


def paired_standings(set_name: str, weights_dir: Path = zoo.WEIGHTS_DIR) -> list[tuple[str, Interval | None, str]]:
    """Every full model of a set with a test record against the best of them
    (:func:`segmodels.bootstrap.against_best`), highest mIoU first: (name, the paired-bootstrap
    interval of its mIoU minus the best's, verdict); the best has None."""
    records = {}
    for name in zoo.list_models(weights_dir):
        if name.startswith(f"{set_name}/"):
            card = zoo.read_card(name, weights_dir)
            if card.test is not None:
                records[name] = card
    entrants = [Entrant(card.test_result(None).miou, read_per_image(name, None, weights_dir), None, card.test.resamples, card.test.seed) for name, card in records.items()]
    standings = sorted(zip(records, entrants, against_best(entrants)), key=lambda row: -row[1].miou)
    return [(name, standing.difference, "best" if standing.best else standing.verdict) for name, _, standing in standings]
