"""The identity of an image and one browser tab's state, carried through every result.

A click resolves its image once into a :class:`CurrentImage`; every result keeps the image's
identity, and :class:`SessionCache` records which image the page shows, so a result computed
for another image is dropped, never shown beside this one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segmodels.data import DatasetInfo


@dataclass(eq=False)
class CurrentImage:
    """The image of a request, decoded, with what the chosen model set knows about it."""

    key: str  # identity of the picture: example key, or "upload-<digest>[-mask-<digest>]"
    label: str
    image: np.ndarray  # H x W x 3 uint8
    gt: np.ndarray | None  # H x W class ids of this set, or None
    set_name: str
    info: DatasetInfo
    notes: list[str] = field(default_factory=list)
    instances: np.ndarray | None = None  # H x W ground-truth instance ids (0 = none), or None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def identity(self) -> str:
        """What results are computed for: the picture under this set's models."""
        return f"{self.set_name}/{self.key}"

    def summary(self) -> str:
        truth = "with ground truth" if self.gt is not None else "no ground truth"
        return f"**Current image:** {self.label}, {self.size[1]}x{self.size[0]} px, {truth}."


@dataclass(frozen=True)
class PredictionKey:
    """One model's prediction: the architecture and the pruning depth it ran at (None for
    models that cannot be pruned)."""

    arch: str
    depth: int | None


@dataclass(eq=False)
class SessionCache:
    """One browser tab's state (a ``gr.State``, handed to every callback by reference).

    ``shown`` is the identity of the image the page shows, set by whatever shows an image
    (the preview as soon as a new image is picked, a run as it starts), ``version`` counts
    those settings; ``predictions`` are the model outputs on image ``image``; ``results`` the
    identity of the image each tab's results on screen were computed for; ``parsed`` carries
    a click's request from its queue note to its run, so it is checked and decoded once."""

    shown: str | None = None
    version: int = 0
    image: str | None = None
    predictions: dict[PredictionKey, np.ndarray] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    parsed: tuple[tuple, Request] | None = None  # the last request a queue note parsed, with its raw inputs

    def keep_parsed(self, inputs: tuple, request: Request) -> None:
        """Keep the request a queue note parsed for the run that follows it."""
        self.parsed = (inputs, request)

    def take_parsed(self, inputs: tuple) -> Request | None:
        """The request kept for these very inputs (once), else None."""
        kept, self.parsed = self.parsed, None
        return kept[1] if kept is not None and kept[0] == inputs else None

    def predictions_for(self, current: CurrentImage) -> dict[PredictionKey, np.ndarray]:
        return dict(self.predictions) if self.image == current.identity else {}

    def remember(self, current: CurrentImage, key: PredictionKey, labels: np.ndarray) -> None:
        if self.image != current.identity:
            self.image, self.predictions = current.identity, {}
        self.predictions[key] = labels

    def show(self, identity: str) -> None:
        """The page now shows image ``identity`` ("" for none)."""
        self.shown = identity
        self.version += 1

    def mark(self, tab: str, current: CurrentImage) -> None:
        """``tab`` now shows results computed on ``current``."""
        self.results[tab] = current.identity

    def watch(self, current: CurrentImage, tab: str) -> StaleWatch:
        """Start a job of ``tab`` on ``current``: its results will be of that image."""
        self.mark(tab, current)
        return StaleWatch(self, current.identity, self.shown)

    def stale_note(self, current: CurrentImage) -> str:
        return f"Not shown: the image changed while this ran on **{current.label}**. Press the button again."

    def outdated(self, tab: str, identity: str) -> bool:
        """Whether ``tab`` shows results of another image than ``identity`` (they are then
        forgotten); results of that very image stay, even when its preview arrives late."""
        if self.results.get(tab) == identity:
            return False
        self.results.pop(tab, None)
        return True


@dataclass
class StaleWatch:
    """Tells a running job whether the page moved on to another image since it started."""

    session: SessionCache
    identity: str
    shown_at_start: str | None

    @property
    def stale(self) -> bool:
        return self.session.shown not in (self.shown_at_start, self.identity)


def session_of(value: Any) -> SessionCache:
    """A callback's session value as a :class:`SessionCache` (a new one for an API call, which has none)."""
    return value if isinstance(value, SessionCache) else SessionCache()


@dataclass(eq=False)
class Request:
    """One click, parsed once: the page's image (decoded once; None for a tab that uses no
    image), the tab's checked choices, and the browser tab's session. ``watch`` is set when a
    job starts on the image and tells whether the page has moved on since. ``pictures`` keeps
    the files of the pictures its updates showed, by name, so a later update of the same
    request repeats them without drawing and encoding them again."""

    current: CurrentImage | None
    session: SessionCache
    archs: list[str] = field(default_factory=list)
    depth: int | None = None
    opacity: float | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    watch: StaleWatch | None = None
    pictures: dict[str, str | None] = field(default_factory=dict)

    def picture(self, name: str, draw: Callable[[], str | None]) -> str | None:
        """The file of the picture ``name``, drawn by ``draw`` the first time it is asked for."""
        if name not in self.pictures:
            self.pictures[name] = draw()
        return self.pictures[name]

    @property
    def stale(self) -> bool:
        return self.watch is not None and self.watch.stale


__all__ = ["CurrentImage", "PredictionKey", "Request", "SessionCache", "StaleWatch", "session_of"]
