"""What the page offers: the model sets, their architectures and examples, the pruning depths,
each as the menus show it, from the catalogue of shipped models (:class:`Choices`)."""

from __future__ import annotations

from segmodels import ARCH_NAMES
from segmodels.data import DatasetInfo

from .catalogue import DATASETS, Example, set_label
from .engine import Engine
from .failures import ModelUnavailable


class Choices:
    """The sets, models, examples and depths on offer, as they are now (a model added to or
    removed from the weights folder shows at the next look)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.catalogue = engine.model_sets

    def sets(self) -> list[str]:
        return list(self.engine.catalogue())

    def set_choices(self) -> list[tuple[str, str]]:
        return [(set_label(s), s) for s in self.sets()]

    def default_set(self) -> str | None:
        """The first set whose own examples are available (so the first view has ground
        truth), else the first set."""
        sets = self.sets()
        with_examples = [s for s in sets if self.catalogue.examples_of(s)]
        return (with_examples or sets or [None])[0]

    def archs(self, set_name: str | None) -> list[str]:
        return self.engine.catalogue().get(set_name, []) if set_name else []

    def model_choices(self, set_name: str | None) -> list[tuple[str, str]]:
        return [(ARCH_NAMES[a], a) for a in self.archs(set_name)]

    def pruning_depths(self, set_name: str | None, arch: str) -> tuple[int, ...]:
        """The depths the shipped model can be pruned to (empty when it cannot be, or is broken)."""
        try:
            return self.engine.pruning_depths(set_name, arch) if set_name else ()
        except ModelUnavailable:
            return ()

    def prunable(self, set_name: str | None, archs: list[str] | None) -> list[str]:
        """The architectures among ``archs`` whose shipped model can be pruned."""
        return [a for a in archs or [] if a in self.archs(set_name) and self.pruning_depths(set_name, a)]

    def declared_depths(self) -> tuple[int, int] | None:
        """(shallowest, deepest) depth the shipped models' cards list; None when none can be pruned."""
        return self.catalogue.depth_range()

    def depth_range(self) -> tuple[int, int]:
        """(shallowest, deepest) depth the shipped models can be pruned to, from their cards
        ((1, 1) when none can be: the depth then changes nothing)."""
        return self.declared_depths() or (1, 1)

    def gallery_examples(self, set_name: str | None) -> list[Example]:
        """The examples offered for a set: its own (all of them when it has none)."""
        return self.catalogue.examples_of(set_name) or list(self.catalogue.examples)

    def example_choices(self, set_name: str | None) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.gallery_examples(set_name)]

    def default_example(self, set_name: str | None) -> str | None:
        chosen = self.gallery_examples(set_name)
        return chosen[0].key if chosen else None

    def info(self, set_name: str | None) -> DatasetInfo:
        if set_name in self.sets():
            return self.engine.dataset_info(set_name)
        return DATASETS.get(set_name or "", DATASETS["shapes"])


__all__ = ["Choices"]
