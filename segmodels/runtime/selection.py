"""Choosing a runtime per model, depth and input size by timing them: a
:class:`RuntimeSelector`, owned by whoever serves predictions (an app), keeps a latency book and
runs each key with the runtime its benchmark found fastest.

Latency does not depend on an image's content, only on the model, its pruning depth, the input
size, the device, the runtime and the number of threads. :meth:`RuntimeSelector.measure_latency`
times warm-up plus repeated passes once per key with every runtime, side by side, and keeps the
median and interquartile range of the fastest; a request then needs one forward pass, not eight.
Until a key is benchmarked (and for a size never benchmarked) the predictor's own runtime runs
it, so a benchmark can change which runtime runs a key, and with it the mask (a
:class:`~segmodels.runtime.Prediction` says which ran); a selector of one runtime never does.

Models that are compared are timed together (:meth:`RuntimeSelector.measure_together`): one pass
of each per round, round after round, so a slowdown of the machine (another program, another
job) falls on all of them alike and their order is measured under the same conditions. Each
figure records how much of the machine other processes used meanwhile
(:class:`segmodels.benchmark.MachineLoad`), so a figure taken on a busy machine is flagged. A
benchmark asks ``interrupted()`` before every pass and every session build and stops when it is
true, so a request never waits for more than one of them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from ..benchmark import MachineLoad, summarize_timings, time_forward
from .predictor import Prediction, Predictor
from .runtimes import Runtime, device_runtimes, runtime_named

LOSING_FACTOR = 3.0  # a runtime this many times slower than the best in its first timed pass is not timed further
BACKENDS = ("auto", "torch", "torch-bf16", "onnxruntime")  # what an app may be told to run (auto: the fastest measured)
KEPT = 512  # latency figures and groups kept (least recently stored dropped first)

Pair = tuple[str, int | None]  # (model name, pruning depth)


class BenchmarkInterrupted(RuntimeError):
    """A latency benchmark stopped because ``interrupted()`` said so; nothing was kept."""


@dataclass(frozen=True)
class Latency:
    """Median and interquartile range of ``samples`` timed forward passes (ms)."""

    median_ms: float
    iqr_ms: float
    samples: int
    source: str  # "benchmark" (warm-up + repeated passes) or "single pass"
    measured_at: float  # time.time()
    others_share: float | None = None  # share of the machine's CPU time other processes used meanwhile (None: unknown)
    together: int = 1  # models timed in the same interleaved rounds, this one included
    runtime: str = ""  # Runtime.name of what was timed

    NOISY_IQR_SHARE = 0.25
    BUSY_SHARE = 0.25

    @property
    def noisy(self) -> bool:
        """Too few samples, or an IQR above a quarter of the median: another job probably
        shared the cores."""
        return self.samples < 3 or self.iqr_ms > self.NOISY_IQR_SHARE * self.median_ms

    @property
    def busy(self) -> bool:
        """Other processes used more than a quarter of the machine while it was measured: every
        pass may have been slowed alike, which the IQR does not show."""
        return self.others_share is not None and self.others_share > self.BUSY_SHARE


def single_pass_latency(prediction: Prediction) -> Latency:
    """A one-sample latency figure from a prediction (always flagged as noisy)."""
    return Latency(prediction.forward_ms, 0.0, 1, "single pass", time.time(), runtime=prediction.backend)


class RuntimeSelector:
    """Runs each (model, depth, size) of ``predictor`` with the fastest of ``runtimes`` measured
    for it (default: :func:`~segmodels.runtime.device_runtimes` of its device, with its
    threads), and keeps the latency book those measurements fill.

    Example:
        >>> selector = RuntimeSelector(Predictor())
        >>> selector.measure_latency("camvid/unetpp", (360, 480), depth=2).median_ms
        >>> selector.predict("camvid/unetpp", x, depth=2).backend   # the fastest runtime timed
    """

    def __init__(self, predictor: Predictor, runtimes: Sequence[Runtime] | None = None):
        self.predictor = predictor
        self.runtimes = tuple(runtimes) if runtimes else device_runtimes(predictor.device, predictor.pass_threads)
        unavailable = [runtime.name for runtime in self.runtimes if not runtime.available_on(predictor.device)]
        if unavailable:
            raise ValueError(f"{', '.join(unavailable)} cannot run on device {predictor.device}")
        self._lock = threading.Lock()
        self._book: OrderedDict[tuple, Latency] = OrderedDict()  # key -> the fastest runtime's figure
        self._together: OrderedDict[tuple, dict[Pair, Latency]] = OrderedDict()  # models timed together -> their figures

    @classmethod
    def for_backend(cls, predictor: Predictor, backend: str = "auto") -> RuntimeSelector:
        """``auto``: every runtime of the predictor's device, each key run with the fastest
        measured; a runtime's name (:data:`BACKENDS`): that runtime for every key."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        return cls(predictor, None if backend == "auto" else [runtime_named(backend, predictor.device, predictor.pass_threads)])

    # ------------------------------------------------------------------ the book

    def key(self, name: str, size: tuple[int, int], depth: int | None = None) -> tuple:
        """What a latency figure depends on besides the runtime; the device and the memory
        format are the predictor's."""
        return (name, self.predictor.version(name), depth, tuple(int(s) for s in size), self.predictor.pass_threads or torch.get_num_threads())

    def latency(self, name: str, size: tuple[int, int], depth: int | None = None) -> Latency | None:
        """The figure of the runtime that runs this key, or None when it was never benchmarked."""
        return self._book.get(self.key(name, size, depth))

    def runtime(self, name: str, size: tuple[int, int], depth: int | None = None) -> Runtime:
        """What runs this key: the runtime its benchmark found fastest, else the predictor's own
        (the only one, when the selector has one runtime)."""
        if len(self.runtimes) == 1:
            return self.runtimes[0]
        figure = self.latency(name, size, depth)
        chosen = next((runtime for runtime in self.runtimes if figure is not None and runtime.name == figure.runtime), None)
        return chosen or self.predictor.runtime

    def predict(self, name: str, x: torch.Tensor, depth: int | None = None) -> Prediction:
        return self.predictor.predict(name, x, depth, self.runtime(name, x.shape[-2:], depth))

    def keep(self, figures: dict[Pair, Latency], size: tuple[int, int]) -> None:
        """Store each figure as its key's (a figure's ``runtime`` then runs that key)."""
        with self._lock:
            for (name, depth), figure in figures.items():
                self._book[self.key(name, size, depth)] = figure
                while len(self._book) > KEPT:
                    self._book.popitem(last=False)

    def latency_together(self, models: list[Pair], size: tuple[int, int]) -> dict[Pair, Latency] | None:
        """The figures of ``models`` timed together at ``size`` (:meth:`measure_together`), or
        None when they were not, or when a model now runs with another runtime than was timed."""
        figures = self._together.get(self._group_key(list(dict.fromkeys(models)), size))
        if figures is None or any(latency.runtime != self.runtime(name, size, depth).name for (name, depth), latency in figures.items()):
            return None
        return figures

    def _group_key(self, models: list[Pair], size: tuple[int, int]) -> tuple:
        return tuple(sorted((self.key(name, size, depth) for name, depth in models), key=str))

    # ------------------------------------------------------------------ timing

    def time_together(self, models: list[Pair], size: tuple[int, int], warmup: int = 1, repeats: int = 5,
                      interrupted: Callable[[], bool] | None = None, every_runtime: bool = False, keep_losers: bool = False) -> dict[tuple[Pair, str], list[float]]:
        """Milliseconds of ``repeats`` passes of each (model, depth) of ``models`` with each
        runtime tried, on a random image of ``size``, in interleaved rounds (one pass of every
        pair per round) after ``warmup`` passes each. A model whose runtime an earlier benchmark
        chose is timed with that one (``every_runtime``: with every runtime of :attr:`runtimes`
        again); a runtime that cannot run a model (an export that failed) is left out for it.
        Holds the device alone (:meth:`Predictor.alone`) for one pass at a time, so a waiting job
        gets the device between passes; sessions are built without it. A runtime whose first timed pass is over
        :data:`LOSING_FACTOR` times its model's best one is left out of the rounds (bfloat16 on
        a processor without bfloat16 units would hold the device for seconds a pass), unless
        ``keep_losers`` (a benchmark that reports every runtime). Before
        every pass and every session build ``interrupted()`` is asked; when it is true,
        :class:`BenchmarkInterrupted` is raised and nothing is kept."""
        x = self.predictor.random_input(size)

        def stop_if_interrupted():
            if interrupted is not None and interrupted():
                raise BenchmarkInterrupted(f"{', '.join(name for name, _ in models)} ({size}): a request came first")

        passes = {}
        for name, depth in models:
            figure = None if every_runtime else self.latency(name, size, depth)
            for runtime in self.runtimes if figure is None else (self.runtime(name, size, depth),):
                stop_if_interrupted()
                model, ready = self.predictor.ready(name, size, depth, runtime)
                if ready is runtime:
                    passes[((name, depth), runtime.name)] = (model, depth, runtime)

        def one_pass(runtime_name: str, pair: tuple):
            stop_if_interrupted()
            model, depth, runtime = passes[pair]
            with self.predictor.alone(as_a_pass=True):
                runtime.labels(model, x, depth)

        device = self.predictor.device
        timings = {pair: time_forward(partial(one_pass, pair[1], pair), device, warmup, 1) for pair in passes}
        best = {key: min(values[0] for (other, _), values in timings.items() if other == key) for key, _ in timings}
        timings = {pair: values for pair, values in timings.items() if keep_losers or values[0] <= LOSING_FACTOR * best[pair[0]]}
        for _ in range(repeats - 1):
            for pair in timings:
                timings[pair] += time_forward(partial(one_pass, pair[1], pair), device, 0, 1)
        return timings

    def measure_latency(self, name: str, size: tuple[int, int], depth: int | None = None, warmup: int = 1, repeats: int = 5,
                        interrupted: Callable[[], bool] | None = None) -> Latency:
        """Benchmark the key with every runtime, run it from now on with the runtime of the
        lowest median, and keep that runtime's latency."""
        load = MachineLoad()
        timings = self.time_together([(name, depth)], size, warmup, repeats, interrupted, every_runtime=True)
        return self._choose(timings, size, load.others_share())[(name, depth)]

    def measure_together(self, models: list[Pair], size: tuple[int, int], warmup: int = 1, repeats: int = 5,
                         interrupted: Callable[[], bool] | None = None) -> dict[Pair, Latency]:
        """Benchmark the (model, depth) pairs of ``models`` together, in interleaved rounds
        (:meth:`time_together`), so their figures can be compared; each is kept as its key's
        latency, and all of them as the figures of this group (:meth:`latency_together`)."""
        models = list(dict.fromkeys(models))
        load = MachineLoad()
        timings = self.time_together(models, size, warmup, repeats, interrupted)
        figures = self._choose(timings, size, load.others_share())
        with self._lock:
            self._together[self._group_key(models, size)] = figures
            while len(self._together) > KEPT:
                self._together.popitem(last=False)
        return figures

    def _choose(self, timings: dict[tuple[Pair, str], list[float]], size: tuple[int, int], others_share: float | None) -> dict[Pair, Latency]:
        """For each model of ``timings``: the figure of its runtime of the lowest median, kept
        (so that runtime runs it from now on); a session of a runtime that lost is dropped."""
        models = list(dict.fromkeys(pair for pair, _ in timings))
        figures, now = {}, time.time()
        for pair in models:
            summaries = {runtime: summarize_timings(values) for (other, runtime), values in timings.items() if other == pair}
            fastest = min(summaries, key=lambda runtime: summaries[runtime]["median_ms"])
            figures[pair] = Latency(summaries[fastest]["median_ms"], summaries[fastest]["iqr_ms"], len(timings[(pair, fastest)]), "benchmark", now, others_share,
                                    len(models), fastest)
            for runtime in self.runtimes:
                if runtime.name != fastest:
                    runtime.forget(self.predictor.model(pair[0]), size, pair[1])
        self.keep(figures, size)
        return figures


__all__ = ["BACKENDS", "BenchmarkInterrupted", "LOSING_FACTOR", "Latency", "RuntimeSelector", "single_pass_latency"]
