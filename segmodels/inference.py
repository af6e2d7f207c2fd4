"""Inference for apps, notebooks and the command line: a :class:`Predictor` loads shipped
models once per device, prepares them for inference, runs exactly one forward pass per
prediction, and keeps latency figures apart from predictions.

Preparing a model for inference (:func:`prepare_for_inference`):

* **BatchNorm folding.** In eval mode a batch norm after a convolution is an affine map per
  channel, ``y = gamma (z - mu) / sqrt(var + eps) + beta`` with ``z = W x + b``, so it folds
  into the convolution: ``W' = W gamma / sqrt(var + eps)``, ``b' = (b - mu) gamma /
  sqrt(var + eps) + beta`` (``torch.nn.utils.fuse_conv_bn_eval``). One pass over memory per
  layer is saved; the outputs are unchanged up to float rounding, which is checked.
* **channels_last** memory format, where it measurably wins (``scripts/inference_speed.py``
  measures it on the machine at hand).

Running a prepared model (a *runtime*, chosen per model, depth and input size):

* ``torch``: **PyTorch** in float32, always available, on any device.
* ``torch-bf16``: **PyTorch under bfloat16 autocast**, on the CPU. Where the processor has
  bfloat16 matrix units (this project's Xeon has AMX) it took 295-321 ms against 739-778 ms
  in float32 for the four CamVid models (360x480, 2 threads, two runs of
  ``scripts/inference_speed.py``);
  where it has none it is slower than float32, and is then never chosen (below). On the CamVid
  val split its masks agree with float32's on 99.6-99.8 % of the pixels and move val mIoU by
  at most 0.003, less than the 0.0052 between two training seeds
  (``scripts/runtime_agreement.py``).
* ``onnxruntime``: **ONNX Runtime** on the CPU, when ``onnxruntime`` and ``onnx`` are
  installed: the model, its pruning depth and the argmax are exported with
  ``torch.onnx.export`` for one input size (0.45-0.9 s a model, printed by
  ``scripts/inference_speed.py``) into an in-memory ``InferenceSession`` with no memory arena
  (the arena's extra speed cost about twice the memory) and no spinning idle threads, so nothing
  else in the process loses its cores. A session holds Python's GIL once per pass, PyTorch once
  per layer, so a web server's thread and the forward pass wait less for each other.

``backend="auto"`` times every runtime the device offers, side by side, when a key is
benchmarked (:meth:`Predictor.measure_latency`, which an app calls while idle) and runs the
key with the fastest from then on; until then, and for a size never benchmarked, PyTorch in
float32 runs it. A fixed backend runs every key with that runtime (``onnxruntime`` once the
key's session is built, PyTorch before).

Latency does not depend on an image's content, only on the model, its pruning depth, the
input size, the device, the runtime and the number of threads. :meth:`Predictor.measure_latency` times
warm-up plus repeated passes once per such key and caches the median and interquartile
range; a request then needs one forward pass, not eight.

Models that are compared are timed together (:meth:`Predictor.measure_together`): one pass of
each per round, round after round, so a slowdown of the machine (another program, another
job) falls on all of them alike and their order is measured under the same conditions. Each
figure records how much of the machine other processes used meanwhile
(:class:`segmodels.benchmark.MachineLoad`), so a figure taken on a busy machine is flagged.

Locking (a server loads models in one thread while requests run in others):

* :attr:`Predictor.run_lock` is held only around forward passes (a prediction, one timed pass,
  a FLOP count), so one pass at a time has every thread;
* a **load lock per model** is held while that model is read, SHA-checked, folded and prepared,
  and nothing else: a request for a loaded model never waits for another model's load, a request
  for model X waits only for X's load (or does it itself), and two threads that need X load it
  once;
* a **build lock per ONNX Runtime session key** is held while that session is exported and
  built (it needs the model, so it may take the model's load lock, never the run lock);
* a short **state lock** guards the caches and is held for no work.

Lock order: run lock, then a session build lock, then a load lock, then the state lock. A thread
takes a lock only while it holds none of those after it, and no lock is held while waiting for one
before it (a load never takes the run lock or another model's load lock), so the locks cannot
deadlock. :class:`Predictor` itself loads and builds before it takes the run lock; a caller that
holds the run lock for work of its own (hooks or gradients on a shared model) may still load, as
the order allows, at the cost of the passes that wait meanwhile."""

from __future__ import annotations

import copy
import importlib.util
import io
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import zoo
from .benchmark import MachineLoad, summarize_timings, time_forward
from .cards import count_flops, count_parameters
from .models import SegmentationModel

log = logging.getLogger(__name__)

FOLD_TOLERANCE = 1e-3  # largest |folded - original| logit difference, relative to the logits' range
BACKENDS = ("auto", "torch", "torch-bf16", "onnxruntime")
CPU_ONLY = ("torch-bf16", "onnxruntime")
LOSING_FACTOR = 3.0  # a runtime this many times slower than the best in its first timed pass is not timed further
MAX_SESSIONS = 16  # ONNX Runtime sessions kept (about 30-90 MB each for the CamVid models at 360x480)


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    return {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor, **forward_options) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the batch norm's input is exactly the convolution's output,
    found by running ``example`` once with hooks."""
    produced: list[tuple[torch.Tensor, nn.Conv2d]] = []
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(module, _inputs, output):
        produced.append((output, module))

    def before_bn(module, inputs):
        conv = next((c for out, c in produced if out is inputs[0]), None)
        if conv is not None and all(bn is not module for _, bn in pairs):
            pairs.append((conv, module))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            model(example, **forward_options)
    finally:
        for hook in hooks:
            hook.remove()
    convs = [conv for conv, _ in pairs]
    return [(conv, bn) for conv, bn in pairs if convs.count(conv) == 1]


def _without_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a batch norm once folded: nothing, or the activation that timm's
    ``BatchNormAct2d`` applies after normalising."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))


def fold_batchnorm(model: nn.Module, example: torch.Tensor, **forward_options) -> int:
    """Fold, in place, every eval-mode batch norm that directly follows a convolution into
    that convolution (see the module docstring); returns how many were folded."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (training batch norm uses batch statistics)")
    pairs = _conv_bn_pairs(model, example, **forward_options)
    parents = _parents(model)
    for conv, bn in pairs:
        conv_parent, conv_name = parents[id(conv)]
        bn_parent, bn_name = parents[id(bn)]
        setattr(conv_parent, conv_name, torch.nn.utils.fuse_conv_bn_eval(conv, bn))
        setattr(bn_parent, bn_name, _without_norm(bn))
    return len(pairs)


def prepare_for_inference(model: nn.Module, channels_last: bool = False, example_size: tuple[int, int] = (64, 64)) -> nn.Module:
    """An eval-mode copy of ``model`` (a :class:`SegmentationModel`, or any model of B x 3 x H
    x W images such as a :mod:`segmodels.peers` one) with its batch norms folded (kept
    unfolded if the outputs would change by more than :data:`FOLD_TOLERANCE`) and, optionally,
    its weights in channels_last. The original is left as it is."""
    model = model.eval()
    device = next(model.parameters()).device
    example = torch.rand(1, 3, *example_size, generator=torch.Generator().manual_seed(0)).to(device)
    options = {"depth": max(model.pruning_depths)} if getattr(model, "pruning_depths", ()) else {}
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded, example, **options)
    with torch.inference_mode():
        reference = model(example, **options)
        difference = (folded(example, **options) - reference).abs().max().item()
    scale = max(1.0, (reference.max() - reference.min()).item())
    if difference > FOLD_TOLERANCE * scale:
        log.warning("batch-norm folding changed the logits by %.2g; keeping the unfolded model", difference)
        folded = copy.deepcopy(model)
    else:
        log.debug("folded %d batch norms (largest logit change %.2g)", count, difference)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(package) is not None for package in ("onnxruntime", "onnx"))


def device_runtimes(device: torch.device) -> tuple[str, ...]:
    """The runtimes ``backend="auto"`` times on ``device``."""
    if device.type != "cpu":
        return ("torch",)
    return ("torch", "torch-bf16") + (("onnxruntime",) if onnxruntime_available() else ())


class _LabelsAt(nn.Module):
    """A model at one pruning depth, ending in its argmax: what an exported session returns."""

    def __init__(self, model: SegmentationModel, depth: int | None):
        super().__init__()
        self.model = model
        self.options = {} if depth is None else {"depth": depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.options).argmax(1).to(torch.uint8)


def onnxruntime_session(model: SegmentationModel, size: tuple[int, int], depth: int | None, threads: int):
    """``model`` at ``depth`` (argmax included, uint8 class ids out) for 1 x 3 x ``size``
    inputs, exported to memory and loaded into ONNX Runtime on the CPU with ``threads``
    threads, no memory arena and no spinning."""
    import onnxruntime

    wrapped = _LabelsAt(model, depth).eval()
    exported = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on constant shapes: a session is built for one size
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (torch.zeros(1, 3, *size),), exported, input_names=["image"], output_names=["labels"], dynamo=False, opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])


def run_prepared(model: nn.Module, x: torch.Tensor, depth: int | None, runtime: str, session=None, amp: bool = False) -> np.ndarray:
    """H x W uint8 class ids of one pass of a prepared model on the 1 x 3 x H x W ``x`` with
    ``runtime`` (``session``, from :func:`onnxruntime_session`, for ``onnxruntime``): what
    :meth:`Predictor.predict` runs and times. ``amp`` autocasts the ``torch`` runtime too."""
    if runtime == "onnxruntime":
        return session.run(None, {"image": x.contiguous().cpu().numpy()})[0][0]
    bf16 = runtime == "torch-bf16"
    dtype = torch.bfloat16 if bf16 or x.device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=amp or bf16):
        return model(x, **({} if depth is None else {"depth": depth})).argmax(1)[0].to(torch.uint8).cpu().numpy()


class BenchmarkInterrupted(RuntimeError):
    """A latency benchmark stopped because ``interrupted()`` said so; nothing was cached."""


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
    runtime: str = ""  # the runtime timed ("torch", "torch-bf16", "onnxruntime")

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


@dataclass
class Prediction:
    """One model's output on one image."""

    labels: np.ndarray  # H x W uint8 class ids
    forward_ms: float  # wall time of this forward pass (argmax included)
    backend: str = "torch"  # the runtime that ran it: "torch", "torch-bf16" or "onnxruntime"


@dataclass
class LoadedModel:
    model: SegmentationModel
    stamp: tuple
    params: dict[int | None, int]  # parameters that run at each pruning depth (None: all)


class Predictor:
    """Shipped models for inference on one device.

    Every model is read once from ``weights_dir`` (SHA-256 checked), prepared with
    :func:`prepare_for_inference`, and read again only when its weight file or card is
    replaced. :attr:`run_lock` serialises forward passes, so one pass at a time uses every
    thread; loading a model and building a session hold only their own locks (see the module
    docstring for the lock order).

    Args:
        weights_dir: the zoo (``<set>/<arch>.pt`` + ``.json``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch intra-op threads (None: leave torch's setting).
        channels_last: store weights and inputs in channels_last (default: on the CPU, where it
            won on 2 cores, see scripts/inference_speed.py; not on CUDA, see ``amp``).
        amp: autocast to bfloat16 (float16 where bfloat16 is unsupported). Default: off. On an
            H200 these batch-1 models are launch-bound, and autocast with channels_last made a
            click 1.31x slower than fp32 NCHW (scripts/device_latency.py).
        backend: ``auto`` (the fastest runtime measured for each key), or one runtime for all:
            ``torch``, ``torch-bf16`` or ``onnxruntime`` (the last two on the CPU only); see
            the module docstring.

    Example:
        >>> predictor = Predictor()
        >>> x = predictor.to_tensor(image)                    # H x W x 3 uint8
        >>> predictor.predict("camvid/unetpp", x, depth=2).labels
        >>> predictor.measure_latency("camvid/unetpp", (360, 480), depth=2).median_ms
    """

    def __init__(self, weights_dir: Path | str = zoo.WEIGHTS_DIR, device: str = "auto", threads: int | None = None, channels_last: bool | None = None, amp: bool | None = None,
                 backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.weights_dir = Path(weights_dir)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        if backend in CPU_ONLY and self.device.type != "cpu":
            raise ValueError(f"the {backend} backend needs device cpu")
        if backend == "onnxruntime" and not onnxruntime_available():
            raise ValueError("the onnxruntime backend needs the onnxruntime and onnx packages")
        self.backend = backend
        self.runtimes = device_runtimes(self.device) if backend == "auto" else (backend,)
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.amp = bool(amp)
        self.run_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._build_locks: dict[tuple, threading.Lock] = {}
        self._models: dict[str, LoadedModel] = {}
        self._latency: OrderedDict[tuple, Latency] = OrderedDict()
        self._flops: OrderedDict[tuple, int] = OrderedDict()
        self._sessions: OrderedDict[tuple, object] = OrderedDict()  # (name, depth, size) -> ONNX Runtime session, or None where export failed
        self._chosen: OrderedDict[tuple, str] = OrderedDict()  # (name, depth, size) -> the runtime its benchmark chose
        self._together: OrderedDict[tuple, dict[tuple[str, int | None], Latency]] = OrderedDict()  # models timed together -> their figures

    # ------------------------------------------------------------------ models

    def model(self, name: str) -> SegmentationModel:
        """The prepared model (loaded on first use, reloaded when its files change)."""
        return self._loaded(name).model

    def _loaded(self, name: str) -> LoadedModel:
        """The model as loaded from its current files: read and prepared under its own load
        lock only, by the first thread that needs it while the others that need it wait."""
        stamp = zoo.file_stamp(name, self.weights_dir)
        loaded = self._models.get(name)
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        with self._lock_of(self._load_locks, name):
            loaded = self._models.get(name)
            if loaded is not None and loaded.stamp == stamp:
                return loaded
            raw = zoo.read_model(name, self.weights_dir)
            params = {None: count_parameters(raw)} | {d: count_parameters(raw, depth=d) for d in raw.pruning_depths}
            loaded = LoadedModel(prepare_for_inference(raw.to(self.device), channels_last=self.channels_last), stamp, params)
            with self._state_lock:
                self._models[name] = loaded
                self._forget(name)
            return loaded

    def _lock_of(self, locks: dict, key) -> threading.Lock:
        with self._state_lock:
            return locks.setdefault(key, threading.Lock())

    def _forget(self, name: str) -> None:
        for cache in (self._latency, self._flops, self._sessions, self._chosen):
            for key in [k for k in cache if k[0] == name]:
                del cache[key]
        for key in [k for k in self._together if any(model == name for model, _ in k[0])]:
            del self._together[key]

    def pruning_depths(self, name: str) -> tuple[int, ...]:
        return tuple(self.model(name).pruning_depths)

    def parameters(self, name: str, depth: int | None = None) -> int:
        """Parameters of the trained model (before folding) that run at ``depth``."""
        return self._loaded(name).params[depth]

    def flops(self, name: str, size: tuple[int, int], depth: int | None = None) -> int:
        """FLOPs of one pass at ``size`` (cached)."""
        key = (name, depth, tuple(size))
        model = self.model(name)
        if key not in self._flops:
            with self.run_lock:
                flops = count_flops(model, tuple(size), **self._options(depth))
            with self._state_lock:
                self._flops[key] = flops
                _trim(self._flops)
        return self._flops[key]

    # ------------------------------------------------------------------ running

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1] on the device, moved once and
        shared by every model of a request."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        tensor = tensor.to(self.device, non_blocking=True).float().div_(255.0)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    @staticmethod
    def _options(depth: int | None) -> dict:
        return {} if depth is None else {"depth": depth}

    def runtime(self, name: str, size: tuple[int, int], depth: int | None = None) -> str:
        """What runs this key now: the runtime its benchmark chose, else the fixed backend's
        (PyTorch until an ONNX Runtime session is built)."""
        chosen = self._chosen.get(self._session_key(name, size, depth))
        if chosen is not None:
            return chosen
        return self.backend if self.backend in ("torch", "torch-bf16") else "torch"

    def _session(self, name: str, size: tuple[int, int], depth: int | None, build: bool = False):
        """The ONNX Runtime session of this key (built first when ``build``), or None."""
        if "onnxruntime" not in self.runtimes:
            return None
        key = self._session_key(name, size, depth)
        if key not in self._sessions and build:
            with self._lock_of(self._build_locks, key):
                if key not in self._sessions:
                    try:
                        session = onnxruntime_session(self.model(name), key[2], depth, self.threads or torch.get_num_threads())
                    except Exception as error:  # noqa: BLE001 - PyTorch runs what cannot be exported
                        log.warning("%s (depth %s, %s): ONNX export failed, PyTorch runs it: %s", name, depth, key[2], error)
                        session = None
                    with self._state_lock:
                        self._sessions[key] = session
                        _trim(self._sessions, MAX_SESSIONS)
        with self._state_lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
            return self._sessions.get(key)

    @staticmethod
    def _session_key(name: str, size: tuple[int, int], depth: int | None) -> tuple:
        return (name, depth, tuple(int(s) for s in size))

    def _labels(self, model: SegmentationModel, x: torch.Tensor, depth: int | None, runtime: str, session) -> np.ndarray:
        return run_prepared(model, x, depth, runtime, session, self.amp)

    def predict(self, name: str, x: torch.Tensor, depth: int | None = None) -> Prediction:
        """Class ids of one forward pass on the prepared tensor ``x``, how long it took and
        what ran it. The model is loaded first, if need be; :attr:`run_lock` is held for the
        pass alone."""
        model = self.model(name)
        self._check_depth(name, model, depth)
        runtime = self.runtime(name, x.shape[-2:], depth)
        session = self._session(name, x.shape[-2:], depth) if runtime == "onnxruntime" else None
        with self.run_lock:
            started = time.perf_counter()
            labels = self._labels(model, x, depth, runtime, session)
            return Prediction(labels, (time.perf_counter() - started) * 1000, runtime)

    @staticmethod
    def _check_depth(name: str, model: SegmentationModel, depth: int | None) -> None:
        if depth is not None and depth not in model.pruning_depths:
            allowed = ", ".join(map(str, model.pruning_depths)) or "none: it cannot be pruned"
            raise ValueError(f"{name}: pruning depth {depth} is not available (depths: {allowed})")

    # ------------------------------------------------------------------ latency

    def latency_key(self, name: str, size: tuple[int, int], depth: int | None = None) -> tuple:
        key = self._session_key(name, size, depth)
        return (*key, str(self.device), torch.get_num_threads(), self.channels_last, self.amp, self.runtime(name, size, depth))

    def latency(self, name: str, size: tuple[int, int], depth: int | None = None) -> Latency | None:
        """The cached benchmark for this key, or None when it was never measured."""
        return self._latency.get(self.latency_key(name, size, depth))

    def time_runtimes(self, name: str, size: tuple[int, int], depth: int | None = None, warmup: int = 1, repeats: int = 5,
                      interrupted: Callable[[], bool] | None = None) -> dict[str, list[float]]:
        """Milliseconds of ``repeats`` passes of every runtime of :attr:`runtimes` on a random
        image of ``size`` (:meth:`time_together` for one model)."""
        timings = self.time_together([(name, depth)], size, warmup, repeats, interrupted, every_runtime=True)
        return {runtime: values for (_, runtime), values in timings.items()}

    def time_together(self, models: list[tuple[str, int | None]], size: tuple[int, int], warmup: int = 1, repeats: int = 5,
                      interrupted: Callable[[], bool] | None = None, every_runtime: bool = False) -> dict[tuple[tuple[str, int | None], str], list[float]]:
        """Milliseconds of ``repeats`` passes of each (model, depth) of ``models`` with each
        runtime tried, on a random image of ``size``, in interleaved rounds (one pass of every
        pair per round) after ``warmup`` passes each. A model whose runtime an earlier benchmark
        chose is timed with that one (``every_runtime``: with every runtime of :attr:`runtimes`
        again); for the others an ONNX Runtime session is built first (left out where the
        export fails). Holds :attr:`run_lock` for one pass at a time, so a waiting job gets the
        device between passes; sessions are built without it. A runtime whose first timed pass is over :data:`LOSING_FACTOR`
        times its model's best one is left out of the rounds (bfloat16 on a processor without
        bfloat16 units would hold the device for seconds a pass). Before every pass
        ``interrupted()`` is asked, and before every session build; when it is true, :class:`BenchmarkInterrupted` is raised and
        nothing is cached (an app asks whether a request is waiting, so a benchmark never
        delays one by more than one pass)."""
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        passes = {}

        def stop_if_interrupted():
            if interrupted is not None and interrupted():
                raise BenchmarkInterrupted(f"{', '.join(name for name, _ in models)} ({size}): a request came first")

        for name, depth in models:
            model = self.model(name)
            self._check_depth(name, model, depth)
            chosen = None if every_runtime else self._chosen.get(self._session_key(name, size, depth))
            if chosen in (None, "onnxruntime") and "onnxruntime" in self.runtimes:
                stop_if_interrupted()
            session = self._session(name, size, depth, build=chosen in (None, "onnxruntime"))
            for runtime in (chosen,) if chosen else self.runtimes:
                if runtime != "onnxruntime" or session is not None:
                    passes[((name, depth), runtime)] = (model, depth, session)

        def one_pass(runtime: str, pair: tuple):
            stop_if_interrupted()
            model, depth, session = passes[pair]
            with self.run_lock:
                self._labels(model, x, depth, runtime, session)

        timings = {pair: time_forward(partial(one_pass, pair[1], pair), self.device, warmup, 1) for pair in passes}
        best = {key: min(values[0] for (other, _), values in timings.items() if other == key) for key, _ in timings}
        timings = {pair: values for pair, values in timings.items() if values[0] <= LOSING_FACTOR * best[pair[0]]}
        for _ in range(repeats - 1):
            for pair in timings:
                timings[pair] += time_forward(partial(one_pass, pair[1], pair), self.device, 0, 1)
        return timings

    def measure_latency(self, name: str, size: tuple[int, int], depth: int | None = None, warmup: int = 1, repeats: int = 5,
                        interrupted: Callable[[], bool] | None = None) -> Latency:
        """Benchmark the key with every runtime (:meth:`time_runtimes`), run it from now on with
        the runtime of the lowest median, and cache that runtime's latency. A session that lost
        is dropped."""
        load = MachineLoad()
        timings = self.time_runtimes(name, size, depth, warmup, repeats, interrupted)
        return self._keep({((name, depth), runtime): values for runtime, values in timings.items()}, size, load.others_share())[(name, depth)]

    def measure_together(self, models: list[tuple[str, int | None]], size: tuple[int, int], warmup: int = 1, repeats: int = 5,
                         interrupted: Callable[[], bool] | None = None) -> dict[tuple[str, int | None], Latency]:
        """Benchmark the (model, depth) pairs of ``models`` together, in interleaved rounds
        (:meth:`time_together`), so their figures can be compared; each is cached as its key's
        latency, and all of them as the figures of this group (:meth:`latency_together`)."""
        models = list(dict.fromkeys(models))
        load = MachineLoad()
        timings = self.time_together(models, size, warmup, repeats, interrupted)
        figures = self._keep(timings, size, load.others_share())
        with self._state_lock:
            self._together[self._group_key(models, size)] = figures
            _trim(self._together)
        return figures

    def latency_together(self, models: list[tuple[str, int | None]], size: tuple[int, int]) -> dict[tuple[str, int | None], Latency] | None:
        """The figures of ``models`` timed together at ``size`` (:meth:`measure_together`), or
        None when they were not, or when a model now runs with another runtime than was timed."""
        figures = self._together.get(self._group_key(list(dict.fromkeys(models)), size))
        if figures is None or any(latency.runtime != self.runtime(name, size, depth) for (name, depth), latency in figures.items()):
            return None
        return figures

    def _group_key(self, models: list[tuple[str, int | None]], size: tuple[int, int]) -> tuple:
        return (tuple(sorted(models, key=str)), tuple(int(s) for s in size), str(self.device), torch.get_num_threads(), self.channels_last, self.amp)

    def _keep(self, timings: dict[tuple[tuple[str, int | None], str], list[float]], size: tuple[int, int], others_share: float | None) -> dict[tuple[str, int | None], Latency]:
        """For each model of ``timings``: run it from now on with its runtime of the lowest
        median and cache that runtime's figure (a session that lost is dropped)."""
        models = list(dict.fromkeys(key for key, _ in timings))
        figures, now = {}, time.time()
        for name, depth in models:
            summaries = {runtime: summarize_timings(values) for (key, runtime), values in timings.items() if key == (name, depth)}
            fastest = min(summaries, key=lambda runtime: summaries[runtime]["median_ms"])
            figure = Latency(summaries[fastest]["median_ms"], summaries[fastest]["iqr_ms"], len(timings[((name, depth), fastest)]), "benchmark", now, others_share, len(models), fastest)
            key = self._session_key(name, size, depth)
            with self._state_lock:
                self._chosen[key] = fastest
                _trim(self._chosen)
                if fastest != "onnxruntime":
                    self._sessions.pop(key, None)
                self._latency[self.latency_key(name, size, depth)] = figure
                _trim(self._latency)
            figures[(name, depth)] = figure
        return figures


def single_pass_latency(prediction: Prediction) -> Latency:
    """A one-sample latency figure from a prediction (always flagged as noisy)."""
    return Latency(prediction.forward_ms, 0.0, 1, "single pass", time.time(), runtime=prediction.backend)


def _trim(cache: OrderedDict, limit: int = 512) -> None:
    while len(cache) > limit:
        cache.popitem(last=False)


__all__ = ["BenchmarkInterrupted", "Latency", "Prediction", "Predictor", "device_runtimes", "fold_batchnorm", "onnxruntime_available", "onnxruntime_session",
           "prepare_for_inference", "run_prepared", "single_pass_latency"]
