"""What the dashboard knows of the model sets, in one place: each set's label and place in
the menu, its classes and colours, the order and chart colour of each architecture, the
bundled examples of each dataset, and the cards of its shipped models, read once per change
of their files (:class:`Catalogue`).

Below :mod:`demo.engine`, :mod:`demo.sources` and :mod:`demo.figures`: it imports nothing of
the dashboard but its exceptions and settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from segmodels import ARCH_NAMES, ARCHITECTURES, zoo
from segmodels.data import CAMVID, SHAPES, CamVidDataset, DatasetInfo
from segmodels.modelcard import ModelCard

from .config import DemoConfig
from .failures import ModelUnavailable

log = logging.getLogger(__name__)

ARCH_ORDER = tuple(ARCHITECTURES)

SET_LABELS = {"camvid": "CamVid (street scenes, 11 classes)", "shapes": "Shapes (synthetic, 4 classes)"}
SET_ORDER = ("camvid", "shapes")
DATASETS: dict[str, DatasetInfo] = {"shapes": SHAPES, "camvid": CAMVID}
# The colour of unlabelled (void) pixels in a dataset's colour-coded masks: black in
# CamVid (Brostow et al. 2009); Shapes has no void (black is its background class).
UNLABELLED_COLOURS: dict[str, tuple[int, int, int]] = {"camvid": (0, 0, 0)}
# What each set's models learned from, for the note on a small upload.
TRAINED_ON = {"camvid": "360x480 px street scenes", "shapes": "128x128 px pictures"}
MODEL_COLOURS = {"U-Net": "#1f77b4", "U-Net++": "#ff7f0e", "U-Net 3+": "#2ca02c", "DeepLabV3+": "#d62728"}


def set_label(set_name: str | None) -> str:
    """'CamVid (street scenes, 11 classes)'; an unknown set by its name."""
    return SET_LABELS.get(set_name or "", set_name or "")


@dataclass(frozen=True)
class Example:
    """One bundled example: a held-out Shapes image or a CamVid validation image."""

    key: str
    label: str
    dataset: str
    seed: int | None = None
    size: int = 128
    image_path: Path | None = None
    mask_path: Path | None = None


def shapes_examples(seed: int, count: int, size: int) -> list[Example]:
    return [Example(f"shapes-{seed + i}", f"Shapes #{seed + i}", "shapes", seed=seed + i, size=size) for i in range(count)]


def camvid_examples(root: Path | None, count: int) -> tuple[list[Example], str | None]:
    """Up to ``count`` evenly spaced CamVid validation images; (examples, problem or None)."""
    if root is None:
        return [], None
    try:
        dataset = CamVidDataset(root, split="val")
    except (FileNotFoundError, OSError) as error:
        log.warning("CamVid examples unavailable: %s", error)
        return [], f"CamVid examples unavailable: {error}"
    files = dataset.files
    step = max(1, len(files) // max(count, 1))
    picked = list(zip(files, dataset.mask_files))[::step][:count]
    return [Example(f"camvid-{image.stem}", f"CamVid val {image.stem}", "camvid", image_path=image, mask_path=mask) for image, mask in picked], None


@dataclass(frozen=True)
class ModelSet:
    """One model set of the zoo: its shipped architectures in display order, the cards that
    could be read and why the others could not."""

    name: str
    archs: tuple[str, ...]
    cards: dict[str, ModelCard] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return set_label(self.name)

    @property
    def info(self) -> DatasetInfo:
        """Class names and colours, from the first readable card (else the known dataset's)."""
        for arch in self.archs:
            if arch in self.cards:
                return self.cards[arch].dataset
        if self.name in DATASETS:
            return DATASETS[self.name]
        raise ModelUnavailable(f"model set {self.name!r} has no readable model card")

    def pruning_depths(self, arch: str) -> tuple[int, ...]:
        """The depths the model's card lists for it (written from the model's own
        ``pruning_depths`` when it was exported), shallowest first; () for a model that
        cannot be pruned."""
        card = self.cards.get(arch)
        return tuple(sorted(entry.depth for entry in card.pruning)) if card is not None else ()

    def card(self, arch: str) -> ModelCard:
        if arch in self.cards:
            return self.cards[arch]
        raise ModelUnavailable(self.problems.get(arch) or f"{ARCH_NAMES.get(arch, arch)} ({self.name}): no such model")


class Catalogue:
    """The model sets of a weights folder, each card read again only when its files change
    (a stat of each file per look, no parsing), and the bundled examples (``camvid_problem``
    says why there are no CamVid ones, when they could not be listed)."""

    def __init__(self, weights_dir: Path, examples: list[Example] | None = None, camvid_problem: str | None = None):
        self.weights_dir = weights_dir
        self.examples: tuple[Example, ...] = tuple(examples or ())
        self.camvid_problem = camvid_problem
        self._by_name = {e.key: e for e in self.examples} | {e.label: e for e in self.examples}
        self._sets: dict[str, tuple[dict[str, tuple], ModelSet]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: DemoConfig) -> Catalogue:
        """The models of ``config.weights_dir`` with the CamVid validation and Shapes examples the settings ask for."""
        camvid, problem = camvid_examples(config.camvid_dir, config.num_camvid_examples)
        return cls(config.weights_dir, camvid + shapes_examples(config.shapes_seed, config.num_shapes_examples, config.shapes_size), problem)

    def example(self, name: object) -> Example | None:
        """The example with this key or label, else None."""
        return self._by_name.get(name) if isinstance(name, str) else None

    def examples_of(self, dataset: str | None) -> list[Example]:
        """The examples from ``dataset`` (the one a set's models were trained on)."""
        return [e for e in self.examples if e.dataset == dataset]

    def names(self) -> dict[str, list[str]]:
        """{set: [arch, ...]} of every shipped model, sets and archs in display order."""
        found: dict[str, list[str]] = {}
        for name in zoo.list_models(self.weights_dir):
            set_name, _, arch = name.partition("/")
            if arch in ARCHITECTURES:
                found.setdefault(set_name, []).append(arch)
        order = {a: i for i, a in enumerate(ARCHITECTURES)}
        known = [s for s in SET_ORDER if s in found] + sorted(s for s in found if s not in SET_ORDER)
        return {s: sorted(found[s], key=order.get) for s in known}

    def depth_range(self) -> tuple[int, int] | None:
        """(shallowest, deepest) pruning depth of every shipped model; None when none can be pruned."""
        depths = {depth for set_name in self.names() for model_set in [self.model_set(set_name)] for arch in model_set.archs for depth in model_set.pruning_depths(arch)}
        return (min(depths), max(depths)) if depths else None

    def model_set(self, set_name: str) -> ModelSet:
        """The set as its files are now: a card is read again only when its files changed."""
        archs = tuple(self.names().get(set_name, ()))
        stamps = {arch: zoo.file_stamp(f"{set_name}/{arch}", self.weights_dir) for arch in archs}
        with self._lock:
            kept_stamps, kept = self._sets.get(set_name, ({}, None))
        if kept is not None and kept_stamps == stamps:
            return kept
        cards, problems = {}, {}
        for arch in archs:
            if kept is not None and kept_stamps.get(arch) == stamps[arch] and arch in kept.cards:
                cards[arch] = kept.cards[arch]
                continue
            try:
                cards[arch] = zoo.read_card(f"{set_name}/{arch}", self.weights_dir)
            except (zoo.WeightsError, OSError, ValueError) as error:
                problems[arch] = f"{ARCH_NAMES.get(arch, arch)} ({set_name}): model card unreadable: {error}"
        model_set = ModelSet(set_name, archs, cards, problems)
        with self._lock:
            self._sets[set_name] = (stamps, model_set)
        return model_set


__all__ = ["ARCH_ORDER", "DATASETS", "MODEL_COLOURS", "SET_LABELS", "SET_ORDER", "TRAINED_ON", "UNLABELLED_COLOURS", "Catalogue", "Example", "ModelSet", "set_label"]
