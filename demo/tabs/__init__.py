"""One module per tab of the dashboard; each exposes ``build(shared) -> gr.Tab`` (see
:class:`demo.context.Shared`), owning its layout, its events and its handlers."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from . import compare, instances, losses, pruning, receptive, testset

OPTIONAL_AFTER_LOSSES = ("losslab", "inside")  # "Loss lab" and "Inside the network", where installed


def tab_modules() -> list[ModuleType]:
    """The tab modules in display order."""
    optional = [importlib.import_module(f"{__name__}.{name}") for name in OPTIONAL_AFTER_LOSSES if importlib.util.find_spec(f"{__name__}.{name}") is not None]
    return [compare, pruning, receptive, losses, *optional, testset, instances]


__all__ = ["tab_modules"]
