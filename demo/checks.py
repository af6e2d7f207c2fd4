"""A request's choices checked against what the page offers (:class:`Checks`): each bad value
becomes an :class:`InputError` whose message says what is allowed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segmodels import ARCH_NAMES
from segmodels.data import DatasetInfo

from .catalogue import ARCH_ORDER, set_label
from .choices import Choices
from .failures import InputError, short


def _number_in(value: Any, default: float, low: float, high: float, what: str) -> float:
    """``value`` as a number from ``low`` to ``high`` (``default`` for None); NaN is refused."""
    try:
        number = float(default if value is None else value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number from {low:g} to {high:g}, got {short(value)}.") from None
    if not low <= number <= high:
        raise InputError(f"{what} must be from {low:g} to {high:g}, got {short(value)}.")
    return number


class Checks:
    """The model set, models, depth, opacity and class of a request, checked."""

    def __init__(self, choices: Choices, weights_dir: Path):
        self.choices = choices
        self.weights_dir = weights_dir

    def set_name(self, set_name: Any) -> str:
        """A shipped set, by name or menu label."""
        sets = self.choices.sets()
        if not sets:
            raise InputError(f"No trained models are installed (looked in {self.weights_dir}). Export weights there or set SEGMODELS_WEIGHTS.")
        if set_name not in sets:
            labels = {set_label(s): s for s in sets}
            if set_name in labels:
                return labels[set_name]
            raise InputError(f"Unknown model set {short(set_name)}; available: {', '.join(sets)}.")
        return set_name

    def models(self, set_name: str, models: Any) -> list[str]:
        """Known, shipped architectures (by key or display name), deduplicated, in display
        order; a list longer than the architectures that exist is refused before any lookup."""
        if isinstance(models, str):
            models = [models]
        if not models:
            raise InputError("Choose at least one model to run.")
        if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
            raise InputError(f"Models must be a list of names such as {', '.join(ARCH_NAMES)}.")
        unique = list(dict.fromkeys(models))
        if len(unique) > len(ARCH_NAMES):
            raise InputError(f"At most {len(ARCH_NAMES)} different models can run ({', '.join(ARCH_NAMES)}); got {len(unique)} names.")
        names = {v: k for k, v in ARCH_NAMES.items()}
        shipped = self.choices.archs(set_name)
        archs = []
        for model in unique:
            arch = names.get(model, model)
            if arch not in ARCH_NAMES:
                raise InputError(f"Unknown model {short(model)}; choose from {', '.join(ARCH_NAMES.values())}.")
            if arch not in shipped:
                raise InputError(f"The {set_label(set_name)} set ships no {ARCH_NAMES[arch]} weights.")
            if arch not in archs:
                archs.append(arch)
        return sorted(archs, key=ARCH_ORDER.index)

    def depth(self, depth: Any) -> int:
        """The U-Net++ depth (the deepest when None), within the depths the shipped models
        declare (any from 1 when none can be pruned: the depth then changes nothing)."""
        declared = self.choices.declared_depths()
        low, high = declared or (1, math.inf)
        return int(round(_number_in(depth, high if declared else low, low, high, "The U-Net++ depth")))

    @staticmethod
    def opacity(opacity: Any) -> float:
        return _number_in(opacity, 0.8, 0.0, 1.0, "The mask opacity")

    @staticmethod
    def class_name(info: DatasetInfo, class_name: Any) -> int:
        """The index of a class of ``info``, by name."""
        if class_name not in info.class_names:
            raise InputError(f"Unknown class {short(class_name)}; the classes are {', '.join(info.class_names)}.")
        return info.class_names.index(class_name)


__all__ = ["Checks"]
