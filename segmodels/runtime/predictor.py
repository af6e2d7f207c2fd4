"""A :class:`Predictor`: models loaded once per device, prepared for inference, one forward
pass per prediction with one fixed :class:`~segmodels.runtime.Runtime` unless a call names
another, so the same image gives the same mask every time.

Locking (a server loads models in one thread while requests run in others):

* :attr:`Predictor.lanes` (:class:`~segmodels.runtime.PassLanes`) is held only around forward
  passes: a prediction takes one of its lanes, so up to ``lanes`` passes run at once, each on
  :attr:`Predictor.pass_threads` threads; work that must run alone (one timed pass, a FLOP
  count, hooks on a shared model) holds :meth:`Predictor.alone`, which waits for the lanes to
  empty;
* a **load lock per model** is held while that model is read, SHA-checked, folded and prepared,
  and nothing else: a request for a loaded model never waits for another model's load, a request
  for model X waits only for X's load (or does it itself), and two threads that need X load it
  once;
* a runtime's own locks (:class:`~segmodels.runtime.OnnxRuntime` builds a session under a
  build lock per session), taken without the lanes;
* a short **state lock** guards the caches and is held for no work.

Lock order: a lane or the device alone, then a runtime's build lock, then a load lock, then the
state lock. A thread takes a lock only while it holds none of those after it, and no lock waits
for one before it (a load never takes a lane or another model's load lock; a build never takes a
lane), so the locks cannot deadlock. :class:`Predictor` itself loads and builds before it takes
a lane; a caller that holds the device alone for work of its own (hooks or gradients on a shared
model) may still load, as the order allows, at the cost of the passes that wait meanwhile."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import zoo
from ..cards import count_flops, count_parameters
from .lanes import PassLanes
from .preparation import prepare_for_inference
from .runtimes import Runtime, TorchRuntime

FLOPS_KEPT = 512


@dataclass
class Prediction:
    """One model's output on one image."""

    labels: np.ndarray  # H x W uint8 class ids
    forward_ms: float  # wall time of this forward pass (argmax included)
    backend: str = "torch"  # Runtime.name of what ran it: "torch", "torch-bf16", "onnxruntime"


@dataclass
class LoadedModel:
    model: nn.Module
    stamp: tuple  # the zoo files' stamp, or ("registered", n) for a module given to Predictor.register
    params: dict[int | None, int]  # parameters that run at each pruning depth (None: all)


def _depth_options(depth: int | None) -> dict:
    return {} if depth is None else {"depth": depth}


class Predictor:
    """Models for inference on one device.

    A shipped model (a name such as ``camvid/unetpp``) is read once from ``weights_dir``
    (SHA-256 checked), prepared with :func:`~segmodels.runtime.prepare_for_inference`, and read
    again only when its weight file or card is replaced; any other ``nn.Module`` of
    B x 3 x H x W images (with a ``depth`` option if it can be pruned) is given a name with
    :meth:`register`. Up to ``lanes`` forward passes run at once (:attr:`lanes`), each on
    :attr:`pass_threads` threads; loading a model holds only that model's lock (the lock order
    is in :mod:`segmodels.runtime.predictor`).

    Args:
        weights_dir: the zoo (``<set>/<arch>.pt`` + ``.json``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads for the passes, all lanes together (None: torch's setting).
        lanes: forward passes at once on a CPU (one on any other device), each on
            ``threads // lanes`` threads (at least one).
        channels_last: store weights and inputs in channels_last (default: on the CPU, where it
            won on 2 cores; not on CUDA, where these batch-1 models are launch-bound:
            ``scripts/device_latency.py`` times both).
        runtime: what runs every prediction that names none (default
            :class:`~segmodels.runtime.TorchRuntime` in float32).

    Example:
        >>> predictor = Predictor()
        >>> x = predictor.to_tensor(image)                    # H x W x 3 uint8
        >>> predictor.predict("camvid/unetpp", x, depth=2).labels
    """

    def __init__(self, weights_dir: Path | str = zoo.WEIGHTS_DIR, device: str = "auto", threads: int | None = None, channels_last: bool | None = None,
                 runtime: Runtime | None = None, lanes: int = 1):
        self.weights_dir = Path(weights_dir)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        self.runtime = runtime or TorchRuntime()
        if not self.runtime.available_on(self.device):
            raise ValueError(f"the {self.runtime.name} runtime does not run on device {self.device}")
        self.threads = threads
        self.lanes = PassLanes(lanes if self.device.type == "cpu" else 1)
        self.pass_threads = max(1, (threads or torch.get_num_threads()) // self.lanes.count) if threads or self.lanes.count > 1 else None
        if self.pass_threads:
            torch.set_num_threads(self.pass_threads)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self._state_lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._models: dict[str, LoadedModel] = {}
        self._registered = itertools.count()
        self._flops: OrderedDict[tuple, int] = OrderedDict()

    # ------------------------------------------------------------------ models

    def model(self, name: str) -> nn.Module:
        """The prepared model (loaded on first use, reloaded when its files change)."""
        return self._loaded(name).model

    def register(self, name: str, module: nn.Module) -> nn.Module:
        """Prepare any model of B x 3 x H x W images for inference under ``name`` (replacing a
        model of that name); returns the prepared copy. ``module`` itself is left as it is."""
        module = module.to(self.device).eval()
        params = {None: count_parameters(module)} | {d: count_parameters(module, depth=d) for d in getattr(module, "pruning_depths", ())}
        loaded = LoadedModel(prepare_for_inference(module, channels_last=self.channels_last), ("registered", next(self._registered)), params)
        with self._state_lock:
            self._models[name] = loaded
        return loaded.model

    def version(self, name: str) -> tuple:
        """What identifies the model now running under ``name``: its files' stamp, or its
        registration; caches keyed by it stop matching when the model is replaced."""
        return self._loaded(name).stamp

    def _loaded(self, name: str) -> LoadedModel:
        """The model as loaded from its current files: read and prepared under its own load
        lock only, by the first thread that needs it while the others that need it wait."""
        loaded = self._models.get(name)
        if loaded is not None and loaded.stamp[0] == "registered":
            return loaded
        stamp = zoo.file_stamp(name, self.weights_dir)
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        with self._state_lock:
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            loaded = self._models.get(name)
            if loaded is not None and loaded.stamp == stamp:
                return loaded
            raw = zoo.read_model(name, self.weights_dir)
            params = {None: count_parameters(raw)} | {d: count_parameters(raw, depth=d) for d in raw.pruning_depths}
            loaded = LoadedModel(prepare_for_inference(raw.to(self.device), channels_last=self.channels_last), stamp, params)
            with self._state_lock:
                self._models[name] = loaded
            return loaded

    def pruning_depths(self, name: str) -> tuple[int, ...]:
        return tuple(getattr(self.model(name), "pruning_depths", ()))

    def parameters(self, name: str, depth: int | None = None) -> int:
        """Parameters of the trained model (before folding) that run at ``depth``."""
        return self._loaded(name).params[depth]

    def flops(self, name: str, size: tuple[int, int], depth: int | None = None) -> int:
        """FLOPs of one pass at ``size`` (cached)."""
        loaded = self._loaded(name)
        key = (name, loaded.stamp, depth, tuple(size))
        if key not in self._flops:
            with self.alone():
                flops = count_flops(loaded.model, tuple(size), **_depth_options(depth))
            with self._state_lock:
                self._flops[key] = flops
                while len(self._flops) > FLOPS_KEPT:
                    self._flops.popitem(last=False)
        return self._flops[key]

    # ------------------------------------------------------------------ running

    def _use_threads(self, threads: int | None) -> None:
        """Give the calling thread's work ``threads`` threads (OpenMP keeps the count per
        thread, so a worker thread that started with another count runs with this one)."""
        if threads:
            torch.set_num_threads(threads)

    @contextmanager
    def alone(self, as_a_pass: bool = False) -> Iterator[None]:
        """Hold the device with no pass running beside this thread's work: hooks or gradients on
        a shared model, on every lane's threads; or, ``as_a_pass``, a timed pass, on
        :attr:`pass_threads` threads as a pass in a lane runs."""
        with self.lanes.alone():
            self._use_threads(self.pass_threads if as_a_pass or not self.pass_threads else self.threads or self.pass_threads * self.lanes.count)
            yield

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1] on the device, moved once and
        shared by every model of a request."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        tensor = tensor.to(self.device, non_blocking=True).float().div_(255.0)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def random_input(self, size: tuple[int, int]) -> torch.Tensor:
        """A fixed random 1 x 3 x ``size`` image on the device, laid out as :meth:`to_tensor` lays out one."""
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def check_depth(self, name: str, depth: int | None) -> nn.Module:
        """The prepared model, once ``depth`` is known to be one of its pruning depths (or None)."""
        model = self.model(name)
        depths = tuple(getattr(model, "pruning_depths", ()))
        if depth is not None and depth not in depths:
            allowed = ", ".join(map(str, depths)) or "none: it cannot be pruned"
            raise ValueError(f"{name}: pruning depth {depth} is not available (depths: {allowed})")
        return model

    def ready(self, name: str, size: tuple[int, int], depth: int | None = None, runtime: Runtime | None = None) -> tuple[nn.Module, Runtime]:
        """The prepared model and the runtime that will run it at ``size`` and ``depth``
        (``runtime``, or :attr:`runtime`, made ready; its stand-in where it cannot run the
        model), both done without a lane."""
        model = self.check_depth(name, depth)
        return model, (runtime or self.runtime).for_pass(model, tuple(size), depth)

    def predict(self, name: str, x: torch.Tensor, depth: int | None = None, runtime: Runtime | None = None) -> Prediction:
        """Class ids of one forward pass on the prepared tensor ``x`` with ``runtime`` (default:
        :attr:`runtime`), how long it took and what ran it. The model is loaded and the runtime
        made ready first; a lane is held for the pass only."""
        model, runtime = self.ready(name, x.shape[-2:], depth, runtime)
        with self.lanes.lane():
            self._use_threads(self.pass_threads)
            started = time.perf_counter()
            labels = runtime.labels(model, x, depth)
            return Prediction(labels, (time.perf_counter() - started) * 1000, runtime.name)
