"""Inference for apps, notebooks and the command line:

* :func:`prepare_for_inference`: an eval-mode copy of a trained model with its batch norms
  folded into the convolutions (checked to keep the outputs) and, on the CPU, its weights in
  channels_last;
* runtimes, objects that run a prepared model: :class:`TorchRuntime` (PyTorch in float32, or
  under autocast to bfloat16 / float16) and :class:`OnnxRuntime` (ONNX Runtime on the CPU);
* :class:`Predictor`: shipped models (or any ``nn.Module``, :meth:`Predictor.register`) loaded
  once per device and prepared, one forward pass per prediction with one fixed runtime, so the
  same image gives the same mask; its locks let one model load while another runs, and up to
  ``lanes`` passes run at once (:class:`PassLanes`);
* :class:`RuntimeSelector`, owned by an app: times every runtime per model, depth and input
  size (models compared, together in interleaved rounds), keeps the latency book, runs each key
  with the fastest, and stops a benchmark when ``interrupted()`` says a request is waiting.

``python -m segmodels bench --models camvid/unet --runtimes torch torch-bf16 onnxruntime``
times the same runtime objects on the machine at hand.

Modules: :mod:`.preparation`, :mod:`.runtimes`, :mod:`.lanes`, :mod:`.predictor` (with its lock order), :mod:`.selection`."""

from .lanes import PassLanes, default_lanes
from .predictor import LoadedModel, Prediction, Predictor
from .preparation import FOLD_TOLERANCE, fold_batchnorm, prepare_for_inference
from .runtimes import MAX_SESSIONS, OnnxRuntime, Runtime, TorchRuntime, device_runtimes, onnxruntime_available, onnxruntime_session, runtime_named
from .selection import BACKENDS, LOSING_FACTOR, BenchmarkInterrupted, Latency, RuntimeSelector, single_pass_latency

__all__ = ["BACKENDS", "FOLD_TOLERANCE", "LOSING_FACTOR", "MAX_SESSIONS", "BenchmarkInterrupted", "Latency", "LoadedModel", "OnnxRuntime", "PassLanes", "Prediction", "Predictor", "Runtime",
           "RuntimeSelector", "TorchRuntime", "default_lanes", "device_runtimes", "fold_batchnorm", "onnxruntime_available", "onnxruntime_session", "prepare_for_inference", "runtime_named",
           "single_pass_latency"]
