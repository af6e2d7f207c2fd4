"""Inference: preparing models (:mod:`.preparation`), the runtimes that run them
(:mod:`.runtimes`), a :class:`Predictor` that loads and runs them (:mod:`.predictor`, with its
lock order), and a :class:`RuntimeSelector` that times the runtimes and runs each key with the
fastest (:mod:`.selection`). :mod:`segmodels.inference` is the same API under its older name."""

from .predictor import LoadedModel, Prediction, Predictor
from .preparation import FOLD_TOLERANCE, fold_batchnorm, prepare_for_inference
from .runtimes import MAX_SESSIONS, OnnxRuntime, Runtime, TorchRuntime, device_runtimes, onnxruntime_available, onnxruntime_session, runtime_named
from .selection import BACKENDS, LOSING_FACTOR, BenchmarkInterrupted, Latency, RuntimeSelector, single_pass_latency

__all__ = ["BACKENDS", "FOLD_TOLERANCE", "LOSING_FACTOR", "MAX_SESSIONS", "BenchmarkInterrupted", "Latency", "LoadedModel", "OnnxRuntime", "Prediction", "Predictor", "Runtime",
           "RuntimeSelector", "TorchRuntime", "device_runtimes", "fold_batchnorm", "onnxruntime_available", "onnxruntime_session", "prepare_for_inference", "runtime_named",
           "single_pass_latency"]
