"""Running the shipped models for the dashboard: the app's policy around
:class:`segmodels.runtime.Predictor` and the :class:`segmodels.runtime.RuntimeSelector`
it owns.

The predictor does the generic work (loading once per device, batch-norm folding, one
forward pass per prediction); the selector keeps the latency book and picks each key's runtime. This module decides what a
classroom server needs: which model set a name belongs to, turning every failure into a
message, running a request's models in the predictor's lanes (two passes at once on a CPU with
two or more cores) with each result streamed, in order, as soon as it is ready, measuring latency only while the server is idle (:class:`demo.benchmarker.IdleBenchmarker`), so a
click costs one forward pass per model, and sharing the masks of an image every session
asks for (:class:`demo.shared_masks.SharedPredictions`), so a class on the teacher's example costs one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from segmodels import ARCH_NAMES, zoo
from segmodels.data import DatasetInfo
from segmodels.metrics import ConfusionMatrix
from segmodels.modelcard import ModelCard
from segmodels.receptive_field import LayerField, effective_receptive_field, theoretical_receptive_field
from segmodels.runtime import Latency, Predictor, RuntimeSelector, default_lanes, single_pass_latency

from .benchmarker import IdleBenchmarker
from .catalogue import Catalogue, ModelSet
from .config import DemoConfig
from .failures import ModelUnavailable, OutOfMemory, is_out_of_memory
from .memory import release_free_memory
from .shared_masks import SharedPrediction, SharedPredictions, image_digest

log = logging.getLogger(__name__)



@dataclass
class ModelRun:
    """The outcome of one model on one image."""

    arch: str
    name: str
    depth: int | None = None
    labels: np.ndarray | None = None  # H x W uint8 predicted class ids
    error: str | None = None
    latency: Latency | None = None
    backend: str | None = None  # the runtime of the forward pass: "torch", "torch-bf16" or "onnxruntime"
    reused: bool = False  # the mask was computed for an earlier request on the same image
    timed_together: bool = False  # ``latency`` comes from the same interleaved rounds as the other runs' of its request
    params: int | None = None
    flops: int | None = None
    metrics: dict | None = None  # ConfusionMatrix.compute() on this image when there is ground truth

    @property
    def ok(self) -> bool:
        return self.error is None


def run_label(arch: str, depth: int | None) -> str:
    return ARCH_NAMES.get(arch, arch) + (f" L{depth}" if depth is not None else "")


def image_metrics(labels: np.ndarray, gt: np.ndarray, info: DatasetInfo) -> dict:
    """mIoU, per-class IoU etc. of one prediction, computed by :class:`segmodels.metrics.ConfusionMatrix`."""
    matrix = ConfusionMatrix(info.num_classes, info.ignore_index)
    matrix.update(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    return matrix.compute()


class Engine:
    """Loads, caches and runs the shipped models of one weights directory. ``clock`` tells
    when a model that failed to load is due to be tried again (tests pass a fake one)."""

    def __init__(self, config: DemoConfig, model_sets: Catalogue, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.predictor = Predictor(config.weights_dir, device=config.device, threads=config.torch_threads, lanes=config.lanes or default_lanes(config.torch_threads))
        self.selector = RuntimeSelector.for_backend(self.predictor, config.backend)
        self._passes = ThreadPoolExecutor(self.predictor.lanes.count, thread_name_prefix="model-pass")
        self.model_sets = model_sets
        self._rf: dict[tuple, list[LayerField]] = {}
        self._failures: dict[str, tuple[tuple, str, float]] = {}
        self.shared = SharedPredictions(config.shared_predictions_mb * 2**20)
        self.first_set_warm = threading.Event()
        self.benchmarker = IdleBenchmarker(self.selector, config.idle_seconds, config.latency_max_age_s, config.warmup, config.repeats, on_idle=release_free_memory)

    # ------------------------------------------------------------------ what is shipped

    @property
    def weights_dir(self) -> Path:
        return self.config.weights_dir

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def catalogue(self) -> dict[str, list[str]]:
        """{set: [arch, ...]} of every shipped model, sets and archs in display order."""
        return self.model_sets.names()

    def model_set(self, set_name: str) -> ModelSet:
        return self.model_sets.model_set(set_name)

    def card(self, set_name: str, arch: str) -> ModelCard:
        """The model's card, read once per change of its files."""
        return self.model_set(set_name).card(arch)

    def dataset_info(self, set_name: str) -> DatasetInfo:
        """Class names and colours of a set, from the first readable model card."""
        return self.model_set(set_name).info

    # ------------------------------------------------------------------ models

    def model(self, set_name: str, arch: str) -> torch.nn.Module:
        """The prepared model; raises :class:`ModelUnavailable` with a clear message. A model
        whose files failed is tried again when they change, or ``model_retry_s`` later (a
        failure can be passing: no file descriptor left, a file being copied)."""
        name = f"{set_name}/{arch}"
        stamp = zoo.file_stamp(name, self.weights_dir)
        failed = self._failures.get(name)
        if failed is not None and failed[0] == stamp and self.clock() - failed[2] < self.config.model_retry_s:
            raise ModelUnavailable(failed[1])
        try:
            return self.predictor.model(name)
        except Exception as error:  # noqa: BLE001 - any broken file must not take the app down
            if is_out_of_memory(error):
                raise
            message = f"{ARCH_NAMES.get(arch, arch)} ({set_name}) is unavailable: {error}"
            if not isinstance(error, zoo.WeightsError):
                message = f"{ARCH_NAMES.get(arch, arch)} ({set_name}) is unavailable: its weight file or model card could not be loaded ({type(error).__name__}: {error})"
            log.warning("%s", message)
            self._failures[name] = (stamp, message, self.clock())
            raise ModelUnavailable(message) from error

    def pruning_depths(self, set_name: str, arch: str) -> tuple[int, ...]:
        return tuple(self.model(set_name, arch).pruning_depths)

    def depth_for(self, set_name: str, arch: str, depth: int | None) -> int | None:
        """``depth`` for a model that can be pruned to it (the deepest it has when ``depth`` is
        deeper), None for every other model."""
        depths = self.pruning_depths(set_name, arch)
        if not depths or depth is None:
            return None
        return min(depth, max(depths))

    @contextmanager
    def guard(self, exclusive: bool = True) -> Iterator[None]:
        """Turn out-of-memory into :class:`OutOfMemory` after freeing the cache. ``exclusive``
        also holds the device alone (:meth:`Predictor.alone`), for model work outside
        :meth:`Predictor.predict` (hooks, gradients, other networks); predictions need not,
        since the predictor holds a lane around each forward pass only and loads a model under
        that model's own lock (the lock order is in :mod:`segmodels.runtime.predictor`)."""
        with self.predictor.alone() if exclusive else nullcontext():
            try:
                yield
            except Exception as error:
                if not is_out_of_memory(error) or isinstance(error, OutOfMemory):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("out of memory: %s", error)
                raise OutOfMemory(
                    f"The {self.device.type.upper()} ran out of memory while running the models. Nothing was lost: "
                    "try again with fewer models or a smaller image."
                ) from error

    # ------------------------------------------------------------------ running

    def _predict(self, name: str, x: torch.Tensor, depth: int | None, digest: str) -> tuple[SharedPrediction, bool]:
        """The model's mask on ``x``, from :class:`SharedPredictions` when this image was run
        before (and whether it was)."""
        key = (digest, name, depth, zoo.file_stamp(name, self.weights_dir))
        shared = self.shared.get(key)
        if shared is not None:
            return shared, True
        prediction = self.selector.predict(name, x, depth)
        shared = SharedPrediction(prediction.labels, prediction.backend, single_pass_latency(prediction))
        self.shared.put(key, shared)
        return shared, False

    def _run_one(self, set_name: str, arch: str, x: torch.Tensor, depth: int | None, gt: np.ndarray | None, info: DatasetInfo | None, digest: str) -> ModelRun:
        result = ModelRun(arch, run_label(arch, None))
        name = f"{set_name}/{arch}"
        size = tuple(x.shape[-2:])
        try:
            depths = tuple(self.model(set_name, arch).pruning_depths)  # the request's one handle on this model
            depth = min(depth, max(depths)) if depths and depth is not None else None
            result.name, result.depth = run_label(arch, depth), depth
            prediction, result.reused = self._predict(name, x, depth, digest)
            result.labels = prediction.labels
            result.backend = prediction.backend
            result.latency = self.selector.latency(name, size, depth) or prediction.latency
            result.params = self.predictor.parameters(name, depth)
            result.flops = self.predictor.flops(name, size, depth)
        except ModelUnavailable as error:
            result.error = str(error)
            return result
        except Exception as error:  # noqa: BLE001
            if is_out_of_memory(error):
                raise
            log.exception("%s failed", result.name)
            result.error = f"{result.name} failed on this image ({type(error).__name__}: {error})"
            return result
        if gt is not None and info is not None:
            result.metrics = image_metrics(result.labels, gt, info)
        return result

    def is_shared(self, set_name: str, arch: str, image: np.ndarray, depth: int | None) -> bool:
        """Whether this model's mask of ``image`` (at ``depth``, as :meth:`run_models` would
        prune it) is already among the :class:`SharedPredictions`, so no forward pass will run."""
        if self._failed(set_name, arch):
            return False
        name = f"{set_name}/{arch}"
        return self.shared.get((image_digest(image), name, self.declared_depth(set_name, arch, depth), zoo.file_stamp(name, self.weights_dir))) is not None

    def time_together(self, set_name: str, runs: list[ModelRun], size: tuple[int, int]) -> None:
        """Give the runs that succeeded the latency of their models timed together, in the same
        interleaved rounds, when such figures are cached (else they keep a figure timed apart or
        their single pass), and ask for such a benchmark when none is, or it is stale, noisy or
        was taken on a busy machine."""
        done = [run for run in runs if run.ok]
        models = [(f"{set_name}/{run.arch}", run.depth) for run in done]
        if not models:
            return
        self.benchmarker.request_together(models, size)
        figures = self.selector.latency_together(models, size)
        for run, model in zip(done, models):
            if figures is not None:
                run.latency, run.timed_together = figures[model], True

    def label(self, set_name: str, arch: str, depth: int | None) -> str:
        """The name a run of ``arch`` will carry ("U-Net++ L3" for a pruned U-Net++)."""
        return run_label(arch, None if self._failed(set_name, arch) else self.declared_depth(set_name, arch, depth))

    def declared_depth(self, set_name: str, arch: str, depth: int | None) -> int | None:
        """:meth:`depth_for` from the depths the model's card declares: no model is loaded."""
        depths = self.model_set(set_name).pruning_depths(arch)
        return min(depth, max(depths)) if depths and depth is not None else None

    def _failed(self, set_name: str, arch: str) -> bool:
        """Whether the model failed to load, and is not yet to be tried again (see :meth:`model`)."""
        name = f"{set_name}/{arch}"
        failed = self._failures.get(name)
        return failed is not None and failed[0] == zoo.file_stamp(name, self.weights_dir) and self.clock() - failed[2] < self.config.model_retry_s

    @property
    def lanes(self) -> int:
        """Forward passes that run at once (:class:`segmodels.runtime.PassLanes`)."""
        return self.predictor.lanes.count

    def _in_lanes(self, runs: list[Callable[[], ModelRun]]) -> Iterator[ModelRun]:
        """Each of ``runs`` done, in order, computed by the engine's pass workers, up to
        :attr:`lanes` at a time: the first of a request's runs is yielded while its next ones
        are running, and another request's runs queue behind them, first in first out. Runs not
        started when the iterator is closed are cancelled."""
        def guarded(run: Callable[[], ModelRun]) -> ModelRun:
            with self.guard(exclusive=False):
                return run()

        futures = [self._passes.submit(guarded, run) for run in runs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def run_models(self, set_name: str, archs: list[str], image: np.ndarray, depth: int | None = None, gt: np.ndarray | None = None, info: DatasetInfo | None = None) -> Iterator[ModelRun]:
        """Each model in ``archs`` on the same tensor (decoded once, moved to the device once),
        one forward pass each, yielded in order as soon as it is done (:meth:`_in_lanes`)."""
        with self.benchmarker.busy():
            x, digest = self.predictor.to_tensor(image), image_digest(image)
            yield from self._in_lanes([partial(self._run_one, set_name, arch, x, depth, gt, info, digest) for arch in archs])

    def _loads(self, set_name: str, arch: str) -> bool:
        try:
            self.model(set_name, arch)
            return True
        except ModelUnavailable:
            return False

    def run_depths(self, set_name: str, arch: str, image: np.ndarray, gt: np.ndarray | None = None, info: DatasetInfo | None = None) -> Iterator[ModelRun]:
        """A prunable model at every pruning depth on the same tensor, shallowest first
        (computed as :meth:`run_models` computes its runs)."""
        with self.benchmarker.busy():
            depths = self.pruning_depths(set_name, arch)
            x, digest = self.predictor.to_tensor(image), image_digest(image)
            yield from self._in_lanes([partial(self._run_one, set_name, arch, x, depth, gt, info, digest) for depth in depths])

    def receptive_field(self, set_name: str, arch: str, depth: int | None = None) -> list[LayerField]:
        """Theoretical receptive field of every layer (cached per model and depth)."""
        depth = self.depth_for(set_name, arch, depth)
        options = {} if depth is None else {"depth": depth}
        key = (str(self.weights_dir), set_name, arch, depth, self.config.rf_input_size, zoo.file_stamp(f"{set_name}/{arch}", self.weights_dir))
        if key not in self._rf:
            with self.benchmarker.busy(), self.guard():
                model = self.model(set_name, arch)
                self._rf[key] = theoretical_receptive_field(model, self.config.rf_input_size, **options)
        return self._rf[key]

    def effective_field(self, set_name: str, arch: str, image: np.ndarray, pixel: tuple[int, int], depth: int | None = None) -> np.ndarray:
        """|d logit / d input| of the output pixel (row, col), H x W in [0, 1] (needs gradients)."""
        with self.benchmarker.busy(), self.guard():
            model = self.model(set_name, arch)
            depth = self.depth_for(set_name, arch, depth)
            options = {} if depth is None else {"depth": depth}
            x = self.predictor.to_tensor(image).contiguous()
            # Only the input needs a gradient: freezing the parameters keeps backward from
            # allocating (and accumulating) .grad on the shared, cached model.
            flags = [p.requires_grad for p in model.parameters()]
            for p in model.parameters():
                p.requires_grad_(False)
            try:
                erf = effective_receptive_field(model, x[0], pixel, **options)
            finally:
                for p, flag in zip(model.parameters(), flags):
                    p.requires_grad_(flag)
            return erf.detach().float().cpu().numpy()

    # ------------------------------------------------------------------ start-up

    def _usual_groups(self, set_name: str) -> list[list[tuple[str, int | None]]]:
        """The models a page compares first: every model of the set at full depth (Compare),
        and each prunable one at every depth (pruning)."""
        full, groups = [], []
        for arch in self._loadable(set_name):
            depths = self.pruning_depths(set_name, arch)
            full.append((f"{set_name}/{arch}", max(depths) if depths else None))
            if depths:
                groups.append([(f"{set_name}/{arch}", depth) for depth in depths])
        return [full, *groups] if full else groups

    def _loadable(self, set_name: str) -> list[str]:
        return [arch for arch in self.catalogue().get(set_name, []) if self._loads(set_name, arch)]

    def _first_passes(self, set_name: str, size: tuple[int, int]) -> None:
        """One pass of each model of ``set_name`` (at full depth) on a blank image of ``size``
        with the runtime a click uses before any benchmark, and its FLOPs counted at that size
        (cached), so the first click pays for neither: the first pass at a size does one-time
        work (oneDNN picks and builds its kernels then), and counting FLOPs is another pass."""
        with self.benchmarker.busy():
            x = self.predictor.to_tensor(np.zeros((*size, 3), dtype=np.uint8))
            for arch in self._loadable(set_name):
                depths = self.pruning_depths(set_name, arch)
                try:
                    with self.guard(exclusive=False):
                        depth = max(depths) if depths else None
                        self.selector.predict(f"{set_name}/{arch}", x, depth)
                        self.predictor.flops(f"{set_name}/{arch}", size, depth)
                except (ModelUnavailable, OutOfMemory) as error:
                    log.warning("warm-up: %s", error)

    def warm_up(self, sizes: dict[str, tuple[int, int]]) -> threading.Thread:
        """Load every shipped model and queue latency benchmarks at each set's usual image size
        (the models a page compares first, timed together), in the background, so the first
        click is fast. The sets of ``sizes`` load first, in its order (:meth:`demo.request_images.RequestImages.usual_sizes`
        lists the default set first), then the others. Each load holds only its model's load
        lock, so a request never waits for the warm-up to load a model it does not run; each
        model of a set in ``sizes`` then makes one pass at that size (:meth:`_first_passes`).
        :attr:`first_set_warm` is set once the first set is loaded and has made those passes
        (``build_demo`` waits for it before the server answers). Returns the loading thread."""
        catalogue = self.catalogue()
        order = [s for s in sizes if s in catalogue] + [s for s in catalogue if s not in sizes]

        def load_all():
            try:
                for set_name in order:
                    for arch in catalogue[set_name]:
                        try:
                            with self.guard(exclusive=False):
                                self.model(set_name, arch)
                        except (ModelUnavailable, OutOfMemory) as error:
                            log.warning("warm-up: %s", error)
                    if set_name in sizes:
                        self._first_passes(set_name, sizes[set_name])
                        for models in self._usual_groups(set_name):
                            self.benchmarker.request_together(models, sizes[set_name])
                    self.first_set_warm.set()
            finally:
                self.first_set_warm.set()

        loading = threading.Thread(target=load_all, name="warm-up", daemon=True)
        loading.start()
        self.benchmarker.start()
        return loading
