"""Running the shipped models for the dashboard.

Models come from :mod:`segmodels.zoo` (loaded lazily, once per device, SHA-256 checked);
this module only decides the device, turns an image into one tensor, runs the chosen
models on that same tensor under ``torch.inference_mode``, times them, and turns every
failure into a message. A lock makes sure two requests never run models at the same time
on one device, even outside Gradio's queue."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segmodels import ARCH_NAMES, ARCHITECTURES, zoo
from segmodels.benchmark import summarize_timings, time_forward
from segmodels.cards import count_flops, count_parameters
from segmodels.data import DatasetInfo
from segmodels.metrics import ConfusionMatrix
from segmodels.receptive_field import LayerField, effective_receptive_field, theoretical_receptive_field

from .config import DemoConfig

log = logging.getLogger(__name__)

SET_LABELS = {"camvid": "CamVid (street scenes, 11 classes)", "shapes": "Shapes (synthetic, 4 classes)"}
SET_ORDER = ("camvid", "shapes")


class ModelUnavailable(RuntimeError):
    """One model cannot be used (missing or corrupted weights, broken card); others still can."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory during a request; the message is meant for the user."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out-of-memory, or the CPU allocator / Python running out of memory."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class ModelRun:
    """The outcome of one model on one image."""

    arch: str
    name: str
    labels: np.ndarray | None = None  # H x W uint8 predicted class ids
    error: str | None = None
    median_ms: float | None = None
    iqr_ms: float | None = None
    params: int | None = None
    flops: int | None = None
    metrics: dict | None = None  # ConfusionMatrix.compute() on this image when there is ground truth
    options: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def image_metrics(labels: np.ndarray, gt: np.ndarray, info: DatasetInfo) -> dict:
    """mIoU, per-class IoU etc. of one prediction, computed by :class:`segmodels.metrics.ConfusionMatrix`."""
    matrix = ConfusionMatrix(info.num_classes, info.ignore_index)
    matrix.update(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    return matrix.compute()


class Engine:
    """Loads, caches and runs the shipped models of one weights directory."""

    def __init__(self, config: DemoConfig):
        self.config = config
        self._lock = threading.RLock()
        self._stats: OrderedDict[tuple, tuple[int, int]] = OrderedDict()
        self._rf: dict[tuple, list[LayerField]] = {}
        self._failures: dict[str, tuple[tuple, str]] = {}
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)

    # ------------------------------------------------------------------ what is shipped

    @property
    def weights_dir(self) -> Path:
        return self.config.weights_dir

    def catalogue(self) -> dict[str, list[str]]:
        """{set: [arch, ...]} of every shipped model, sets and archs in display order."""
        found: dict[str, list[str]] = {}
        for name in zoo.list_models(self.weights_dir):
            set_name, _, arch = name.partition("/")
            if arch in ARCHITECTURES:
                found.setdefault(set_name, []).append(arch)
        order = {a: i for i, a in enumerate(ARCHITECTURES)}
        known = [s for s in SET_ORDER if s in found] + sorted(s for s in found if s not in SET_ORDER)
        return {s: sorted(found[s], key=order.get) for s in known}

    def card(self, set_name: str, arch: str) -> dict:
        try:
            return zoo.load_card(f"{set_name}/{arch}", self.weights_dir)
        except (zoo.WeightsError, OSError, ValueError) as error:
            raise ModelUnavailable(f"{ARCH_NAMES.get(arch, arch)} ({set_name}): model card unreadable: {error}") from error

    def dataset_info(self, set_name: str) -> DatasetInfo:
        """Class names and colours of a set, from the first readable model card."""
        for arch in self.catalogue().get(set_name, []):
            try:
                return DatasetInfo.from_dict(self.card(set_name, arch)["dataset"])
            except (ModelUnavailable, KeyError, TypeError, ValueError):
                continue
        from .sources import DATASETS

        if set_name in DATASETS:
            return DATASETS[set_name]
        raise ModelUnavailable(f"model set {set_name!r} has no readable model card")

    # ------------------------------------------------------------------ device and models

    @property
    def device(self) -> torch.device:
        wanted = self.config.device
        if wanted == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(wanted)

    def _weights_stamp(self, set_name: str, arch: str) -> tuple:
        stamp = []
        for suffix in (".pt", ".json"):
            path = self.weights_dir / set_name / f"{arch}{suffix}"
            try:
                stat = path.stat()
                stamp.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def model(self, set_name: str, arch: str) -> torch.nn.Module:
        """The cached model; raises :class:`ModelUnavailable` with a clear message. A model
        whose weights failed is not retried until its files change."""
        name = f"{set_name}/{arch}"
        stamp = self._weights_stamp(set_name, arch)
        failed = self._failures.get(name)
        if failed is not None and failed[0] == stamp:
            raise ModelUnavailable(failed[1])
        try:
            return zoo.load_model(name, self.device, self.weights_dir)
        except Exception as error:  # noqa: BLE001 - any broken file must not take the app down
            if is_out_of_memory(error):
                raise
            message = f"{ARCH_NAMES.get(arch, arch)} ({set_name}) is unavailable: {error}"
            if not isinstance(error, zoo.WeightsError):
                message = f"{ARCH_NAMES.get(arch, arch)} ({set_name}) is unavailable: its weight file or model card could not be loaded ({type(error).__name__}: {error})"
            log.warning("%s", message)
            self._failures[name] = (stamp, message)
            raise ModelUnavailable(message) from error

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1] on the device (one copy per request)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        return tensor.to(self.device, non_blocking=True).float().div_(255.0)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Serialise model work; turn out-of-memory into :class:`OutOfMemory` after freeing the cache."""
        with self._lock:
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

    def stats(self, name: str, model: torch.nn.Module, options: dict, size: tuple[int, int]) -> tuple[int, int]:
        """(parameters, FLOPs at ``size``), cached: FLOPs take one extra forward pass."""
        key = (str(self.weights_dir), name, tuple(sorted(options.items())), size, str(self.device))
        if key not in self._stats:
            self._stats[key] = (count_parameters(model, **options), count_flops(model, size, **options))
            while len(self._stats) > 256:
                self._stats.popitem(last=False)
        return self._stats[key]

    def run(
        self,
        set_name: str,
        arch: str,
        x: torch.Tensor,
        options: dict | None = None,
        timed: bool = True,
        gt: np.ndarray | None = None,
        info: DatasetInfo | None = None,
    ) -> ModelRun:
        """Run one model on the prepared tensor ``x``: prediction, latency (median of
        ``config.repeats`` timed passes after ``config.warmup`` untimed ones), size and
        metrics. Out-of-memory propagates; any other failure is reported in the result."""
        options = dict(options or {})
        label = ARCH_NAMES.get(arch, arch) + (f" L{options['depth']}" if "depth" in options else "")
        result = ModelRun(arch, label, options=options)
        with self._lock:
            try:
                model = self.model(set_name, arch)
                with torch.inference_mode():
                    logits = model(x, **options)
                    result.labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
                    del logits
                    if timed:
                        timings = time_forward(lambda: model(x, **options), x.device, self.config.warmup, self.config.repeats)
                        summary = summarize_timings(timings)
                        result.median_ms, result.iqr_ms = summary["median_ms"], summary["iqr_ms"]
                result.params, result.flops = self.stats(f"{set_name}/{arch}", model, options, tuple(x.shape[-2:]))
            except ModelUnavailable as error:
                result.error = str(error)
                return result
            except Exception as error:  # noqa: BLE001
                if is_out_of_memory(error):
                    raise
                log.exception("%s failed", label)
                result.error = f"{label} failed on this image ({type(error).__name__}: {error})"
                return result
        if gt is not None and info is not None and result.labels is not None:
            result.metrics = image_metrics(result.labels, gt, info)
        return result

    def run_many(
        self,
        set_name: str,
        archs: list[str],
        image: np.ndarray,
        depth: int | None = None,
        gt: np.ndarray | None = None,
        info: DatasetInfo | None = None,
        progress: Callable[[float, str], None] | None = None,
        timed: bool = True,
    ) -> list[ModelRun]:
        """Every model in ``archs`` on the same tensor (decoded once, moved to the device once)."""
        with self.guard():
            x = self.to_tensor(image)
            runs = []
            for i, arch in enumerate(archs):
                if progress is not None:
                    progress(i / max(len(archs), 1), f"Running {ARCH_NAMES.get(arch, arch)} ({i + 1}/{len(archs)})")
                options = {"depth": depth} if arch == "unetpp" and depth else {}
                runs.append(self.run(set_name, arch, x, options, timed=timed, gt=gt, info=info))
            del x
            return runs

    def run_depths(
        self,
        set_name: str,
        image: np.ndarray,
        gt: np.ndarray | None = None,
        info: DatasetInfo | None = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> list[ModelRun]:
        """U-Net++ at every pruning depth 1..max_depth on the same tensor."""
        with self.guard():
            model = self.model(set_name, "unetpp")
            x = self.to_tensor(image)
            runs = []
            for depth in range(1, model.max_depth + 1):
                if progress is not None:
                    progress((depth - 1) / model.max_depth, f"Running U-Net++ L{depth}")
                runs.append(self.run(set_name, "unetpp", x, {"depth": depth}, gt=gt, info=info))
            return runs

    def receptive_field(self, set_name: str, arch: str, depth: int | None = None) -> list[LayerField]:
        """Theoretical receptive field of every layer (cached per model and depth)."""
        options = {"depth": depth} if arch == "unetpp" and depth else {}
        key = (str(self.weights_dir), set_name, arch, tuple(options.items()), self.config.rf_input_size)
        if key not in self._rf:
            with self.guard():
                model = self.model(set_name, arch)
                self._rf[key] = theoretical_receptive_field(model, self.config.rf_input_size, **options)
        return self._rf[key]

    def effective_field(self, set_name: str, arch: str, image: np.ndarray, pixel: tuple[int, int], depth: int | None = None) -> np.ndarray:
        """|d logit / d input| of the output pixel (row, col), H x W in [0, 1] (needs gradients)."""
        options = {"depth": depth} if arch == "unetpp" and depth else {}
        with self.guard():
            model = self.model(set_name, arch)
            x = self.to_tensor(image)
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
