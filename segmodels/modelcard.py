"""The typed model card: what a shipped model is, how it was trained and how well it does.

Like torchvision's ``Weights.meta`` or timm's ``PretrainedCfg``, one dataclass is written by
one function (:meth:`ModelCard.to_dict`) and read by attribute; the JSON beside each weight
file is its serialised form. ``schema_version`` says which layout a file has: version 1 (no
key) is the flat dict the first rounds wrote, mapped on load; what a version does not name
is kept in ``extra`` so that a card survives a round trip unchanged.

Three evaluations can be on a card, each with the command that makes it:

- ``val`` (``python -m segmodels evaluate --split val``): the validation split, on which
  recipes, epochs and checkpoints were chosen; it runs high.
- ``test`` (``python -m segmodels test-card``): the held-out test split, evaluated once per
  finished model, with bootstrap intervals over its images; never used to choose anything.
- ``selection_val_miou``: the validation mIoU the training loop saw when it kept the
  checkpoint (on the training device and precision), for the record only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .bootstrap import Interval
from .data import DatasetInfo

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model (one pruning depth) on one split, from one confusion matrix."""

    split: str
    num_images: int
    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    per_class_iou: dict[str, float]
    confusion_matrix: list[list[int]]
    depth: int | None = None
    miou_interval: Interval | None = None
    per_class_interval: dict[str, Interval] = field(default_factory=dict)
    source: str | None = None  # the checkpoint or shipped name that was evaluated

    def to_dict(self) -> dict:
        out = {
            "split": self.split, "num_images": self.num_images, "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy, "mean_class_accuracy": self.mean_class_accuracy,
            "per_class_iou": dict(self.per_class_iou), "confusion_matrix": self.confusion_matrix,
        }
        if self.depth is not None:
            out["depth"] = self.depth
        if self.miou_interval is not None:
            out["miou_interval"] = self.miou_interval.as_dict()
        if self.per_class_interval:
            out["per_class_interval"] = {name: interval.as_dict() for name, interval in self.per_class_interval.items()}
        if self.source is not None:
            out["model"] = self.source
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Evaluation:
        interval = values.get("miou_interval")
        return cls(
            split=values["split"], num_images=int(values["num_images"]), miou=float(values["miou"]),
            pixel_accuracy=float(values["pixel_accuracy"]), mean_class_accuracy=float(values["mean_class_accuracy"]),
            per_class_iou={name: float(iou) for name, iou in values["per_class_iou"].items()},
            confusion_matrix=values["confusion_matrix"], depth=values.get("depth"),
            miou_interval=Interval.from_dict(interval) if interval else None,
            per_class_interval={name: Interval.from_dict(v) for name, v in (values.get("per_class_interval") or {}).items()},
            source=values.get("model"),
        )


@dataclass(frozen=True)
class TestRecord:
    """The held-out test evaluation of a card: one :class:`Evaluation` per depth (one with
    ``depth`` None for a model that is not pruned), the per-image confusion matrices behind
    the intervals (``per_image_file``, an ``.npz`` beside the card, keys ``full`` or
    ``depth<d>``), and the weights it was run with."""

    results: tuple[Evaluation, ...]
    per_image_file: str
    per_image_sha256: str
    weights_sha256: str
    input_size: tuple[int, int]
    resamples: int
    seed: int
    command: str

    def at_depth(self, depth: int | None) -> Evaluation | None:
        for result in self.results:
            if result.depth == depth:
                return result
        deepest = max((r.depth for r in self.results if r.depth is not None), default=None)
        return self.at_depth(deepest) if depth is None and deepest is not None else None

    def to_dict(self) -> dict:
        return {
            "results": [result.to_dict() for result in self.results], "per_image_file": self.per_image_file,
            "per_image_sha256": self.per_image_sha256, "weights_sha256": self.weights_sha256,
            "input_size": list(self.input_size), "resamples": self.resamples, "seed": self.seed, "command": self.command,
        }

    @classmethod
    def from_dict(cls, values: dict) -> TestRecord:
        return cls(
            results=tuple(Evaluation.from_dict(r) for r in values["results"]), per_image_file=values["per_image_file"],
            per_image_sha256=values["per_image_sha256"], weights_sha256=values["weights_sha256"],
            input_size=tuple(values["input_size"]), resamples=int(values["resamples"]), seed=int(values["seed"]), command=values["command"],
        )


@dataclass(frozen=True)
class PruningEntry:
    """A U-Net++ depth: its validation mIoU, parameters run and FLOPs at ``flops_input_size``."""

    depth: int
    val_miou: float | None
    params: int | None
    flops: int | None
    val_mean_class_accuracy: float | None = None


@dataclass(frozen=True)
class BenchmarkRow:
    """One ``python -m segmodels bench`` row recorded at export."""

    depth: int | None
    params_m: float | None
    gflops: float | None
    median_ms: float | None
    iqr_ms: float | None
    input: str | None
    device: str | None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict) -> BenchmarkRow:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: values.get(k) for k in known}, extra={k: v for k, v in values.items() if k not in known})

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra"} | self.extra


# Keys of a version-1 card that version 2 maps to typed fields, and those it keeps as they are.
_V1_VAL_KEYS = ("val_miou", "val_mean_class_accuracy", "val_per_class_iou", "val_pixel_accuracy")
_TYPED_KEYS = {
    "schema_version", "arch", "encoder", "num_classes", "base_channels", "options", "dataset", "training", "data_split",
    "epochs", "best_epoch", "params", "flops", "flops_input_size", "train_seconds", "train_device", "pruning",
    "evaluation", "test", "benchmark", "seed_variance", "weights_file", "weights_dtype", "sha256", *_V1_VAL_KEYS,
}


@dataclass(frozen=True)
class ModelCard:
    """Everything known about one shipped model; see the module docstring."""

    arch: str
    encoder: str
    num_classes: int
    base_channels: int
    options: dict
    dataset: DatasetInfo
    training: dict = field(default_factory=dict)
    data_split: dict = field(default_factory=dict)
    epochs: int | None = None
    best_epoch: int | None = None
    selection_val: dict = field(default_factory=dict)
    params: int | None = None
    flops: int | None = None
    flops_input_size: tuple[int, int] | None = None
    train_seconds: float | None = None
    train_device: str | None = None
    pruning: tuple[PruningEntry, ...] = ()
    val: Evaluation | None = None
    test: TestRecord | None = None
    benchmark: tuple[BenchmarkRow, ...] = ()
    seed_variance: dict | None = None
    weights_file: str | None = None
    weights_dtype: str | None = None
    sha256: str | None = None
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ reading

    @property
    def spec(self) -> dict:
        """The arguments of ``create_model`` (``segmodels.cards.model_from_spec``)."""
        return {"arch": self.arch, "encoder": self.encoder, "num_classes": self.num_classes, "base_channels": self.base_channels, "options": dict(self.options)}

    @property
    def selection_val_miou(self) -> float | None:
        return self.selection_val.get("val_miou")

    def val_miou(self, depth: int | None = None) -> float | None:
        """Validation mIoU at ``depth`` (the full model when None): the CPU re-evaluation
        of the shipped weights where the card has one, else the training loop's figure."""
        if depth is not None:
            deepest = max((entry.depth for entry in self.pruning), default=None)
            if depth != deepest:
                return next((entry.val_miou for entry in self.pruning if entry.depth == depth), None)
        if self.val is not None:
            return self.val.miou
        return self.selection_val_miou

    def val_per_class_iou(self) -> dict[str, float]:
        if self.val is not None:
            return dict(self.val.per_class_iou)
        values = self.selection_val.get("val_per_class_iou") or {}
        return dict(zip(self.dataset.class_names, values)) if isinstance(values, list) else dict(values)

    def test_result(self, depth: int | None = None) -> Evaluation | None:
        return None if self.test is None else self.test.at_depth(depth)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """The card's JSON form (the one function that writes cards)."""
        out: dict = {
            "schema_version": self.schema_version, "arch": self.arch, "encoder": self.encoder, "num_classes": self.num_classes,
            "base_channels": self.base_channels, "options": dict(self.options), "dataset": self.dataset.to_dict(),
            "training": self.training, "data_split": self.data_split, "epochs": self.epochs, "best_epoch": self.best_epoch,
            **self.selection_val, "params": self.params, "flops": self.flops,
            "flops_input_size": list(self.flops_input_size) if self.flops_input_size else None,
            "train_seconds": self.train_seconds, "train_device": self.train_device,
        }
        if self.pruning:
            out["pruning"] = [{k: v for k, v in asdict(entry).items() if v is not None or k == "val_miou"} for entry in self.pruning]
        if self.val is not None:
            out["evaluation"] = self.val.to_dict()
        if self.test is not None:
            out["test"] = self.test.to_dict()
        if self.benchmark:
            out["benchmark"] = [row.to_dict() for row in self.benchmark]
        if self.seed_variance is not None:
            out["seed_variance"] = self.seed_variance
        out.update(self.extra)
        out.update({"weights_file": self.weights_file, "weights_dtype": self.weights_dtype, "sha256": self.sha256})
        return out

    @classmethod
    def from_dict(cls, values: dict) -> ModelCard:
        """Read a card of any schema version (version 1 cards have no ``schema_version``)."""
        version = int(values.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"model card schema version {version} is newer than this library reads ({SCHEMA_VERSION}): update segmodels")
        evaluation = values.get("evaluation")
        return cls(
            arch=values["arch"], encoder=values["encoder"], num_classes=int(values["num_classes"]),
            base_channels=int(values.get("base_channels", 64)), options=dict(values.get("options") or {}),
            dataset=DatasetInfo.from_dict(values["dataset"]), training=values.get("training") or {},
            data_split=values.get("data_split") or {}, epochs=values.get("epochs"), best_epoch=values.get("best_epoch"),
            selection_val={key: values[key] for key in _V1_VAL_KEYS if key in values},
            params=values.get("params"), flops=values.get("flops"),
            flops_input_size=tuple(values["flops_input_size"]) if values.get("flops_input_size") else None,
            train_seconds=values.get("train_seconds"), train_device=values.get("train_device"),
            pruning=tuple(PruningEntry(**{k: entry.get(k) for k in ("depth", "val_miou", "params", "flops", "val_mean_class_accuracy")}) for entry in values.get("pruning") or []),
            val=Evaluation.from_dict(evaluation) if evaluation else None,
            test=TestRecord.from_dict(values["test"]) if values.get("test") else None,
            benchmark=tuple(BenchmarkRow.from_dict(row) for row in values.get("benchmark") or []),
            seed_variance=values.get("seed_variance"), weights_file=values.get("weights_file"),
            weights_dtype=values.get("weights_dtype"), sha256=values.get("sha256"),
            extra={key: value for key, value in values.items() if key not in _TYPED_KEYS},
        )

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
