"""What the dashboard knows of the model sets, in one place: each set's label and place in
the menu, its classes and colours, the colour of each architecture in the charts, and the
cards of its shipped models, read once per change of their files (:class:`Catalogue`).

Below :mod:`demo.engine`, :mod:`demo.sources` and :mod:`demo.figures`: it imports nothing of
the dashboard but its exceptions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from segmodels import ARCH_NAMES, ARCHITECTURES, zoo
from segmodels.data import CAMVID, SHAPES, DatasetInfo
from segmodels.modelcard import ModelCard

from .failures import ModelUnavailable

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
    (a stat of each file per look, no parsing)."""

    def __init__(self, weights_dir: Path):
        self.weights_dir = weights_dir
        self._sets: dict[str, tuple[dict[str, tuple], ModelSet]] = {}
        self._lock = threading.Lock()

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


__all__ = ["DATASETS", "MODEL_COLOURS", "SET_LABELS", "SET_ORDER", "TRAINED_ON", "UNLABELLED_COLOURS", "Catalogue", "ModelSet", "set_label"]
