"""Runtimes: the ways a prepared model (:func:`segmodels.runtime.prepare_for_inference`) runs
one forward pass, each an object that owns what it needs to run a model (as ONNX Runtime's
execution providers own theirs). A pass takes a 1 x 3 x H x W float image and returns the
H x W uint8 class ids (argmax included).

* :class:`TorchRuntime` ``()``: **PyTorch** in float32, always available, on any device.
* :class:`TorchRuntime` ``(dtype)``: **PyTorch under autocast** to ``dtype`` (bfloat16 or
  float16; :func:`segmodels.precision.autocast_dtype` picks it for a device). On a CPU with
  bfloat16 matrix units (this project's Xeon has AMX) bfloat16 beats float32;
  on one without, it is slower than float32 (``python -m segmodels bench --models
  camvid/unet --runtimes torch torch-bf16`` measures both on the machine at hand). Its masks
  are not float32's: ``scripts/runtime_agreement.py`` measures how many pixels agree and what
  it does to val mIoU.
* :class:`OnnxRuntime` ``(threads)``: **ONNX Runtime** on the CPU, when ``onnxruntime`` and
  ``onnx`` are installed. The model, its pruning depth and the argmax are exported with
  ``torch.onnx.export`` for one input size, on its first pass at that size (the bench command
  above with ``--runtimes onnxruntime`` prints how long), into an in-memory
  ``InferenceSession`` with no memory arena (the arena's extra speed cost about twice the
  memory) and no spinning idle threads, so nothing else in the process loses its cores. A
  session holds Python's GIL once per pass, PyTorch once per layer, so a web server's thread
  and the forward pass wait less for each other. Sessions are cached per model, depth and
  size (the :data:`MAX_SESSIONS` most recently used); a model that cannot be exported runs
  in PyTorch float32 instead (:meth:`Runtime.for_pass` says so).

Locking: building a session holds that session's build lock and nothing else, so a pass of
another model or size never waits for it; ``OnnxRuntime`` never takes a lock of its caller."""

from __future__ import annotations

import importlib.util
import io
import logging
import threading
import warnings
import weakref
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from ..precision import autocast_dtype

log = logging.getLogger(__name__)

MAX_SESSIONS = 16  # ONNX Runtime sessions kept (about 30-90 MB each for the CamVid models at 360x480)
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(package) is not None for package in ("onnxruntime", "onnx"))


def _depth_options(depth: int | None) -> dict:
    return {} if depth is None else {"depth": depth}


class Runtime:
    """One way to run a prepared model; :attr:`name` is what a :class:`Prediction` and a
    latency figure record."""

    name: str = ""

    def available_on(self, device: torch.device) -> bool:
        raise NotImplementedError

    def for_pass(self, model: nn.Module, size: tuple[int, int], depth: int | None) -> Runtime:
        """The runtime that will run ``model`` at ``size`` and ``depth``: this one, made ready
        (a session built), or the one that stands in where this one cannot run the model."""
        return self

    def labels(self, model: nn.Module, x: torch.Tensor, depth: int | None) -> np.ndarray:
        """H x W uint8 class ids of one pass of ``model`` on the 1 x 3 x H x W ``x``."""
        raise NotImplementedError

    def forget(self, model: nn.Module, size: tuple[int, int], depth: int | None) -> None:
        """Drop what :meth:`for_pass` built for this model, size and depth (nothing, by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class TorchRuntime(Runtime):
    """PyTorch, in float32 (``dtype`` None) or under autocast to ``dtype``."""

    def __init__(self, dtype: torch.dtype | None = None):
        if dtype is not None and dtype not in DTYPE_NAMES:
            raise ValueError(f"autocast dtype must be one of {', '.join(map(str, DTYPE_NAMES))} or None (float32), got {dtype}")
        self.dtype = dtype
        self.name = "torch" if dtype is None else f"torch-{DTYPE_NAMES[dtype]}"

    @classmethod
    def autocast(cls, device: torch.device | str) -> TorchRuntime:
        """Autocast in the device's reduced precision (:func:`segmodels.precision.autocast_dtype`)."""
        return cls(autocast_dtype(device))

    def available_on(self, device: torch.device) -> bool:
        return self.dtype is None or autocast_dtype(device) == self.dtype

    def labels(self, model: nn.Module, x: torch.Tensor, depth: int | None) -> np.ndarray:
        precision = nullcontext() if self.dtype is None else torch.autocast(x.device.type, dtype=self.dtype)
        with torch.inference_mode(), precision:
            return model(x, **_depth_options(depth)).argmax(1)[0].to(torch.uint8).cpu().numpy()


class _LabelsAt(nn.Module):
    """A model at one pruning depth, ending in its argmax: what an exported session returns."""

    def __init__(self, model: nn.Module, depth: int | None):
        super().__init__()
        self.model = model
        self.options = _depth_options(depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.options).argmax(1).to(torch.uint8)


def onnxruntime_session(model: nn.Module, size: tuple[int, int], depth: int | None, threads: int):
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


class OnnxRuntime(Runtime):
    """ONNX Runtime on the CPU with ``threads`` intra-op threads (None: torch's at build time);
    one session per model, depth and input size, built on the first pass."""

    name = "onnxruntime"

    def __init__(self, threads: int | None = None):
        if not onnxruntime_available():
            raise ValueError("the onnxruntime runtime needs the onnxruntime and onnx packages (pip install -r requirements-dev.txt)")
        self.threads = threads
        self.stand_in = TorchRuntime()
        self._sessions: OrderedDict[tuple, tuple[weakref.ref, object]] = OrderedDict()  # (model id, depth, size) -> (model, session or None)
        self._build_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def available_on(self, device: torch.device) -> bool:
        return device.type == "cpu"

    @staticmethod
    def _key(model: nn.Module, size, depth: int | None) -> tuple:
        return (id(model), depth, tuple(int(s) for s in size))

    def _cached(self, key: tuple, model: nn.Module) -> tuple[bool, object]:
        """(whether a session of this very model is cached, the session or None)."""
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None or entry[0]() is not model:
                return False, None
            self._sessions.move_to_end(key)
            return True, entry[1]

    def session(self, model: nn.Module, size: tuple[int, int], depth: int | None):
        """The session of ``model`` at ``depth`` for ``size`` (built first, under its own build
        lock), or None where the export failed."""
        key = self._key(model, size, depth)
        found, session = self._cached(key, model)
        if found:
            return session
        with self._lock:
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:
            found, session = self._cached(key, model)
            if found:
                return session
            try:
                session = onnxruntime_session(model, key[2], depth, self.threads or torch.get_num_threads())
            except Exception as error:  # noqa: BLE001 - PyTorch runs what cannot be exported
                log.warning("%s (depth %s, %s): ONNX export failed, PyTorch runs it: %s", type(model).__name__, depth, key[2], error)
                session = None
            with self._lock:
                self._sessions[key] = (weakref.ref(model), session)
                while len(self._sessions) > MAX_SESSIONS:
                    self._build_locks.pop(self._sessions.popitem(last=False)[0], None)
        return session

    def forget(self, model: nn.Module, size: tuple[int, int], depth: int | None) -> None:
        """Drop this session (a benchmark found another runtime faster for it)."""
        with self._lock:
            self._sessions.pop(self._key(model, size, depth), None)

    def for_pass(self, model: nn.Module, size: tuple[int, int], depth: int | None) -> Runtime:
        return self if self.session(model, size, depth) is not None else self.stand_in

    def labels(self, model: nn.Module, x: torch.Tensor, depth: int | None) -> np.ndarray:
        session = self.session(model, x.shape[-2:], depth)
        if session is None:
            return self.stand_in.labels(model, x, depth)
        return session.run(None, {"image": x.contiguous().cpu().numpy()})[0][0]


def runtime_named(name: str, device: torch.device, threads: int | None = None) -> Runtime:
    """The runtime of a name (``torch``, ``torch-bf16``, ``torch-fp16``, ``onnxruntime``), checked
    against ``device``; a clear ValueError otherwise."""
    runtimes = {"torch": TorchRuntime, "torch-bf16": lambda: TorchRuntime(torch.bfloat16), "torch-fp16": lambda: TorchRuntime(torch.float16),
                "onnxruntime": lambda: OnnxRuntime(threads)}
    if name not in runtimes:
        raise ValueError(f"runtime must be one of {', '.join(runtimes)}, got {name!r}")
    runtime = runtimes[name]()
    if not runtime.available_on(device):
        raise ValueError(f"the {name} runtime does not run on device {device}")
    return runtime


def device_runtimes(device: torch.device, threads: int | None = None) -> tuple[Runtime, ...]:
    """The runtimes worth timing on ``device``: PyTorch in float32 and in bfloat16, and ONNX
    Runtime where installed, on the CPU; PyTorch in float32 on CUDA (these batch-1 models are
    launch-bound there: ``scripts/device_latency.py`` times autocast on the device)."""
    if device.type != "cpu":
        return (TorchRuntime(),)
    return (TorchRuntime(), TorchRuntime(torch.bfloat16)) + ((OnnxRuntime(threads),) if onnxruntime_available() else ())
