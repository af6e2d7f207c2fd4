"""Latency benchmarks measured only while the server is idle (:class:`IdleBenchmarker`), so a
click costs one forward pass per model."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from segmodels.runtime import BenchmarkInterrupted, RuntimeSelector

log = logging.getLogger(__name__)
BACKGROUND_NICENESS = 19


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Give the calling thread the lowest CPU priority (Linux keeps a niceness per thread, and
    the threads it starts after this, the OpenMP and ONNX Runtime thread pools of its passes,
    inherit it), so background work (the warm-up, idle benchmarks, an ONNX export that cannot
    be interrupted) yields the cores to a student's request instead of sharing them. Elsewhere,
    or where it is refused, the thread keeps its priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError) as error:
        log.debug("thread priority left as it is: %s", error)


class IdleBenchmarker:
    """Measures latency benchmarks in a background thread, only while no request is running
    and none ran for ``idle_seconds``: the models a request compared, timed together. A figure
    older than ``max_age_s``, a noisy one, or one taken while other processes kept the machine
    busy is measured again when a request asks for it.
    Requests hold :meth:`busy`; the benchmark holds the device alone one pass at a time
    (:meth:`segmodels.runtime.Predictor.alone`) and stops (to be measured again when idle) as soon as a request is running, so a request
    waits for at most one forward pass. ``clock`` tells how long the machine has been quiet (tests pass a fake one).
    ``on_idle`` is called once each time the server falls quiet, after the benchmarks pending
    then (the app hands freed memory back to the system there:
    :func:`demo.memory.release_free_memory`)."""

    def __init__(self, selector: RuntimeSelector, idle_seconds: float = 2.0, max_age_s: float = 1800.0, warmup: int = 1, repeats: int = 5, max_pending: int = 256,
                 clock: Callable[[], float] = time.monotonic, on_idle: Callable[[], object] | None = None):
        self._clock = clock
        self.on_idle = on_idle
        self._idle_done = on_idle is None
        self.selector = selector
        self.warmup, self.repeats = warmup, repeats
        self.idle_seconds = idle_seconds
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self._pending: dict[tuple, tuple[list[tuple[str, int | None]], tuple[int, int]]] = {}
        self._active = 0
        self._last_request = 0.0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._condition:
            self._active += 1
        try:
            yield
        finally:
            with self._condition:
                self._active -= 1
                self._last_request = self._clock()
                self._idle_done = self.on_idle is None
                self._condition.notify_all()

    def _requested(self) -> bool:
        return self._active > 0

    def request(self, name: str, size: tuple[int, int], depth: int | None) -> None:
        """Ask for a benchmark of this key unless a fresh, steady one is cached."""
        self.request_together([(name, depth)], size)

    def request_together(self, models: list[tuple[str, int | None]], size: tuple[int, int]) -> None:
        """Ask for a benchmark of ``models`` timed together (:meth:`RuntimeSelector.measure_together`)
        unless fresh figures of them, steady and taken on a quiet machine, are cached."""
        models = list(dict.fromkeys(models))
        if len(models) == 1:
            figures = [self.selector.latency(models[0][0], size, models[0][1])]
        else:
            figures = list((self.selector.latency_together(models, size) or {None: None}).values())
        if all(figure is not None and not figure.noisy and not figure.busy and time.time() - figure.measured_at < self.max_age_s for figure in figures):
            return
        key = (tuple(sorted(models, key=str)), tuple(size))
        with self._condition:
            if key not in self._pending and len(self._pending) < self.max_pending:
                self._pending[key] = (models, tuple(size))
                self._condition.notify_all()

    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="idle-benchmark", daemon=True)
            self._thread.start()

    def _wait_for_idle(self) -> tuple[list[tuple[str, int | None]], tuple[int, int]] | None:
        """The next pending benchmark once the server is quiet; then None (once per quiet spell,
        when there is an ``on_idle``) to call that."""
        with self._condition:
            while True:
                quiet = self._clock() - self._last_request
                if self._active == 0 and quiet >= self.idle_seconds:
                    if self._pending:
                        key = next(iter(self._pending))
                        return self._pending.pop(key)
                    if not self._idle_done:
                        self._idle_done = True
                        return None
                waiting_for_quiet = self._pending or not self._idle_done
                self._condition.wait(timeout=max(0.05, self.idle_seconds - quiet) if waiting_for_quiet else None)

    def _loop(self) -> None:
        lower_thread_priority()
        while True:
            work = self._wait_for_idle()
            if work is None:
                try:
                    self.on_idle()
                except Exception as error:  # noqa: BLE001 - a failed hook must not end the benchmarks
                    log.warning("the idle hook failed: %s", error)
                continue
            models, size = work
            try:
                self.selector.measure_together(models, size, self.warmup, self.repeats, interrupted=self._requested)
            except BenchmarkInterrupted:
                self.request_together(models, size)
            except Exception as error:  # noqa: BLE001 - a broken model is reported by requests, not here
                log.warning("latency benchmark of %s failed: %s", ", ".join(name for name, _ in models), error)

    def run_pending(self) -> None:
        """Measure everything pending now, in this thread (tests and scripts)."""
        while self._pending:
            with self._condition:
                key = next(iter(self._pending))
                models, size = self._pending.pop(key)
            self.selector.measure_together(models, size, self.warmup, self.repeats)


__all__ = ["IdleBenchmarker"]
