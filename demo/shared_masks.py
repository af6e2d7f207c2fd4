"""Masks already computed, shared by every session (:class:`SharedPredictions`), so a class on
the teacher's example costs one forward pass per model."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from segmodels.runtime import Latency


def image_digest(image: np.ndarray) -> str:
    """A key for an image's content: its shape and a BLAKE2b hash of its pixels."""
    return f"{image.shape}:{hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()}"


@dataclass(frozen=True)
class SharedPrediction:
    labels: np.ndarray  # read-only: every session that asks for it gets this array
    backend: str
    latency: Latency  # the one pass that computed it, for a figure while no benchmark exists


class SharedPredictions:
    """Masks already computed, shared by every session: a class that runs the teacher's
    example asks for the same image forty times, and each model runs on it once. Keyed by the
    image's content, the model's files and the pruning depth; the least recently used are
    dropped beyond ``max_bytes`` (0 keeps nothing)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, SharedPrediction] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> SharedPrediction | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: SharedPrediction) -> None:
        if entry.labels.nbytes > self.max_bytes:
            return
        entry.labels.flags.writeable = False
        with self._lock:
            previous = self._entries.pop(key, None)
            self._bytes += entry.labels.nbytes - (previous.labels.nbytes if previous else 0)
            self._entries[key] = entry
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.labels.nbytes

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["SharedPrediction", "SharedPredictions", "image_digest"]
