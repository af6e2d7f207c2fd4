"""How many forward passes share the device at once.

On a CPU, a batch-1 pass does not keep every core busy: its small layers, its Python and its
memory-bound steps leave cores idle, so two passes on half the threads each finish more images
per second than one pass on all of them (``python scripts/lanes_throughput.py`` measures both
on the machine at hand). :class:`PassLanes` lets up to ``count`` passes run at once,
each in a *lane*, and lets work that must run alone (a timed benchmark pass, hooks or gradients
on a shared model, a FLOP count) wait for the lanes to empty and hold the device by itself.

* :meth:`PassLanes.lane`: one of ``count`` lanes; waits while all are taken, while a thread
  holds the device alone, or while one waits to (so a benchmark is not starved by a stream of
  passes).
* :meth:`PassLanes.alone`: waits for every lane to empty, then holds the device by itself.
  Reentrant: the holder may take it again, or take a lane (which then costs nothing).

A thread in a lane may not ask to be alone (it would wait for its own lane): that raises
``RuntimeError`` at once instead of deadlocking."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def default_lanes(threads: int | None = None) -> int:
    """Two lanes when there are at least two threads for the passes (``threads``, else
    PyTorch's count), else one."""
    return 2 if (threads or torch.get_num_threads()) >= 2 else 1


class PassLanes:
    """Up to ``count`` forward passes at once, or one holder alone."""

    def __init__(self, count: int = 1):
        if count < 1:
            raise ValueError(f"lanes must be at least 1, got {count}")
        self.count = count
        self._condition = threading.Condition()
        self._in_lanes = 0
        self._owner: int | None = None  # the thread that holds the device alone
        self._depth = 0  # how many times the owner took it
        self._waiting_alone = 0
        self._local = threading.local()

    @property
    def in_lanes(self) -> int:
        """Passes running in lanes now."""
        return self._in_lanes

    def _holds_lane(self) -> bool:
        return getattr(self._local, "lane", False)

    @contextmanager
    def lane(self) -> Iterator[None]:
        if self._owner == threading.get_ident() or self._holds_lane():
            yield
            return
        with self._condition:
            while self._owner is not None or self._waiting_alone or self._in_lanes >= self.count:
                self._condition.wait()
            self._in_lanes += 1
        self._local.lane = True
        try:
            yield
        finally:
            self._local.lane = False
            with self._condition:
                self._in_lanes -= 1
                self._condition.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
            else:
                if self._holds_lane():
                    raise RuntimeError("a thread running a pass in a lane cannot hold the device alone (it would wait for itself)")
                self._waiting_alone += 1
                try:
                    while self._owner is not None or self._in_lanes:
                        self._condition.wait()
                finally:
                    self._waiting_alone -= 1
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._condition:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._condition.notify_all()


__all__ = ["PassLanes", "default_lanes"]
