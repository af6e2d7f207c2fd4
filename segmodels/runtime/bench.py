"""``python -m segmodels bench --runtimes ...``: models prepared and run exactly as a
:class:`~segmodels.runtime.Predictor` prepares and runs them, each runtime object timed side by
side in interleaved rounds (:meth:`~segmodels.runtime.RuntimeSelector.time_together`), with how
long each runtime took to get ready (an ONNX Runtime session's export and build)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from ..benchmark import summarize_timings
from .predictor import Predictor
from .runtimes import Runtime
from .selection import RuntimeSelector


def bench_runtimes(predictor: Predictor, models: dict[str, nn.Module], size: tuple[int, int], runtimes: Sequence[Runtime], warmup: int = 1, repeats: int = 10) -> list[dict]:
    """One row per model of ``models`` (each pruning depth of a prunable one) and runtime, each
    model registered with ``predictor`` under its name: parameters, GFLOPs, median and IQR (ms)
    of ``repeats`` interleaved passes, seconds to get the runtime ready. A runtime that cannot
    run a model (an export that failed) has no row for it."""
    for name, module in models.items():
        predictor.register(name, module)
    selector = RuntimeSelector(predictor, runtimes)
    pairs = [(name, depth) for name in models for depth in (predictor.pruning_depths(name) or (None,))]
    ready_s = {}
    for name, depth in pairs:
        for runtime in runtimes:
            started = time.perf_counter()
            predictor.ready(name, size, depth, runtime)
            ready_s[((name, depth), runtime.name)] = time.perf_counter() - started
    timings = selector.time_together(pairs, size, warmup, repeats, every_runtime=True, keep_losers=True)
    rows = []
    for ((name, depth), runtime), values in timings.items():
        rows.append({"model": name + ("" if depth is None else f" L{depth}"), "runtime": runtime, "depth": depth,
                     "params_m": predictor.parameters(name, depth) / 1e6, "gflops": predictor.flops(name, size, depth) / 1e9, **summarize_timings(values),
                     "ready_s": ready_s[((name, depth), runtime)], "input": f"{size[0]}x{size[1]}", "device": str(predictor.device),
                     "threads": torch.get_num_threads(), "channels_last": predictor.channels_last, "prepared": "batch norms folded"})
    return rows


def format_runtime_rows(rows: list[dict]) -> str:
    """A plain-text table, each runtime's median over the first runtime's for the same model."""
    first = {}
    for row in rows:
        first.setdefault(row["model"], row["median_ms"])
    header = f"{'model':<30} {'runtime':<11} {'params(M)':>9} {'GFLOPs':>7} {'median ms':>10} {'IQR ms':>7} {'ratio':>6} {'ready s':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['model']:<30} {r['runtime']:<11} {r['params_m']:>9.2f} {r['gflops']:>7.2f} {r['median_ms']:>10.1f} {r['iqr_ms']:>7.1f} "
                     f"{r['median_ms'] / first[r['model']]:>6.2f} {r['ready_s']:>8.2f}")
    if rows:
        lines.append(f"input {rows[0]['input']}, batch 1, device {rows[0]['device']}, {rows[0]['threads']} threads, channels_last {rows[0]['channels_last']}, "
                     "batch norms folded; ratio: over the model's first runtime; ready: seconds to get the runtime ready (ONNX export and session)")
    return "\n".join(lines)
