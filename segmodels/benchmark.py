"""Latency, parameters, FLOPs and peak memory, measured the way users expect: batch 1,
``torch.inference_mode``, warm-up runs, then the median and interquartile range of timed
runs (CUDA events with synchronisation on GPU)."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Hashable

import torch
from torch import nn

from .cards import count_flops, count_parameters
from .models import ARCH_NAMES, create_model
from .precision import autocast


def time_forward(run: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``run`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(device)
            timings.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            run()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def time_interleaved(runners: dict[Hashable, Callable[[], object]], rounds: int, warmup: int = 2, seed: int = 0) -> dict[Hashable, list[float]]:
    """Milliseconds of ``rounds`` calls of every runner after ``warmup`` untimed calls each:
    one call of each per round, in a new random order every round, so that noise from the rest
    of the machine falls on all of them alike (CPU wall time)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    order = list(runners)
    shuffle = random.Random(seed).shuffle
    timings: dict[Hashable, list[float]] = {key: [] for key in order}
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            started = time.perf_counter()
            runners[key]()
            timings[key].append((time.perf_counter() - started) * 1000)
    return timings


class MachineLoad:
    """How busy the rest of the machine was while something was timed: the share of all CPUs'
    time, from creation to :meth:`others_share`, that other processes used (or that a
    hypervisor stole). An even slowdown of every pass (another program sharing the cores) leaves
    the IQR of a benchmark small; this catches it. Linux only (``/proc/stat`` and
    ``/proc/self/stat``, both in clock ticks); None elsewhere."""

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        """(all CPUs' ticks, their busy ticks, this process's ticks), or None."""
        try:
            with open("/proc/stat") as handle:
                ticks = [int(value) for value in handle.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
            with open("/proc/self/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return sum(ticks), sum(ticks) - ticks[3] - ticks[4], int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def others_share(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        total, busy, ours = (after - before for after, before in zip(end, self._start))
        return min(1.0, max(0.0, (busy - ours) / total))


def summarize_timings(timings: list[float]) -> dict:
    """Median and interquartile range (ms)."""
    if len(timings) < 2:
        return {"median_ms": timings[0], "iqr_ms": 0.0}
    q1, _, q3 = statistics.quantiles(timings, n=4, method="inclusive")
    return {"median_ms": statistics.median(timings), "iqr_ms": q3 - q1}


def benchmark_model(
    model: nn.Module,
    name: str,
    input_size: tuple[int, int],
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    amp: bool = False,
    channels_last: bool = False,
    **forward_options,
) -> dict:
    """One row: name, params, GFLOPs, median / IQR latency and peak memory (CUDA only)."""
    device = torch.device(device)
    model = model.to(device).eval()
    image = torch.rand(1, 3, *input_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), autocast(device, enabled=amp):
            return model(image, **forward_options)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = time_forward(run, device, warmup, repeats)
    row = {
        "model": name,
        "depth": forward_options.get("depth"),
        "params_m": count_parameters(model, **forward_options) / 1e6,
        "gflops": count_flops(model, input_size, **forward_options) / 1e9,
        **summarize_timings(timings),
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "input": f"{input_size[0]}x{input_size[1]}",
        "device": str(device),
        "amp": amp,
        "channels_last": channels_last,
    }
    return row


def model_rows(model: nn.Module, name: str) -> list[tuple[str, nn.Module, dict]]:
    """(row name, model, forward options): one row per pruning depth of a prunable model
    (U-Net++), one row otherwise (also for models from other libraries)."""
    depths = getattr(model, "pruning_depths", ())
    if depths:
        return [(f"{name} L{d}", model, {"depth": d}) for d in depths]
    return [(name, model, {})]


def benchmark_architectures(
    archs: list[str],
    num_classes: int,
    encoder: str,
    input_size: tuple[int, int],
    device: str = "cpu",
    base_channels: int = 64,
    options: dict[str, dict] | None = None,
    **timing,
) -> list[dict]:
    """Rows for each architecture (untrained weights: latency does not depend on them), built
    with ``options[arch]``. ``segmodels.peers.compare_with_smp`` adds segmentation_models_pytorch."""
    models = [(ARCH_NAMES[a], create_model(a, num_classes, encoder=encoder, pretrained=False, base_channels=base_channels, **(options or {}).get(a, {}))) for a in archs]
    rows = []
    for name, model in models:
        for row_name, row_model, options in model_rows(model, name):
            rows.append(benchmark_model(row_model, row_name, input_size, device, **timing, **options))
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table."""
    header = f"{'model':<34} {'params(M)':>9} {'GFLOPs':>8} {'median ms':>10} {'IQR ms':>8} {'peak MB':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        peak = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        lines.append(f"{r['model']:<34} {r['params_m']:>9.2f} {r['gflops']:>8.2f} {r['median_ms']:>10.1f} {r['iqr_ms']:>8.1f} {peak:>8}")
    if rows:
        lines.append(f"input {rows[0]['input']}, batch 1, device {rows[0]['device']}, amp {rows[0]['amp']}, channels_last {rows[0]['channels_last']}")
    return "\n".join(lines)
