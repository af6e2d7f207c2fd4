"""Registries of named building blocks, filled by decorators (as timm's ``register_model``).

An entry pairs a name with its display name and its factory (a class or a function). The
factory's signature is the one source of truth for the options it takes:
:meth:`RegistryEntry.check_options` rejects anything else with a ``ValueError`` that lists
what is allowed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    display_name: str
    factory: Callable[..., Any]

    def options(self, reserved: Collection[str] = ()) -> tuple[str, ...]:
        """Keyword options of the factory, without the ``reserved`` ones the caller supplies."""
        parameters = inspect.signature(self.factory).parameters.values()
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(p.name for p in parameters if p.kind in keyword and p.name not in reserved)

    def default(self, option: str) -> Any:
        """The factory's default value for ``option`` (``inspect.Parameter.empty`` if none)."""
        return inspect.signature(self.factory).parameters[option].default

    def check_options(self, options: Mapping[str, Any], reserved: Collection[str] = ()) -> None:
        allowed = self.options(reserved)
        unknown = [name for name in options if name not in allowed]
        if unknown:
            raise ValueError(
                f"{self.display_name} has no option {', '.join(repr(name) for name in unknown)}; "
                f"its options are: {', '.join(allowed) or 'none'}"
            )


class Registry(Mapping[str, RegistryEntry]):
    """Name -> :class:`RegistryEntry`, in registration order. ``kind`` names what it holds
    ("architecture", "encoder") in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, RegistryEntry] = {}

    def register(self, name: str, display_name: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator adding a class or factory function under ``name``."""

        def add(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._entries[name].factory.__qualname__})")
            self._entries[name] = RegistryEntry(name, display_name or name, factory)
            return factory

        return add

    def entry(self, name: str) -> RegistryEntry:
        """The entry of ``name``; a ``ValueError`` listing the registered names if unknown."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> RegistryEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._entries)})"


class DisplayNames(Mapping[str, str]):
    """Live view name -> display name of a :class:`Registry` (e.g. ``"unetpp" -> "U-Net++"``)."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, name: str) -> str:
        return self._registry[name].display_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def __repr__(self) -> str:
        return repr(dict(self))
