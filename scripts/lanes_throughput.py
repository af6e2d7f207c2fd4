"""How many students a second the shipped models serve on this CPU: every model of a set on one
image per student, with the passes in one lane on all the threads, or in two lanes on half of
them each (:class:`segmodels.runtime.PassLanes`), and, with ``--malloc``, with glibc returning
every buffer over 128 KiB to the system or keeping those under 32 MiB in its heap
(``app.tune_malloc``). Each configuration runs in a fresh process (the allocator is set per
process), in interleaved rounds.

    python scripts/lanes_throughput.py [--set camvid] [--threads 2] [--students 16] [--rounds 3] [--malloc] [--json OUT]

Prints, per configuration, the median seconds per student over the rounds and their range,
and its ratio to one lane. The app's pass workers run the models as the second configuration
does (``demo.engine.Engine``)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MMAP_THRESHOLDS = {"128 KiB": 128 * 1024, "32 MiB": 32 * 2**20}


def seconds_per_student(set_name: str, threads: int, lanes: int, students: int) -> float:
    """Seconds per student: ``lanes`` threads, each running every model of ``set_name`` on a
    360x480 image for its share of ``students``, after one untimed student."""
    import torch

    from segmodels import zoo
    from segmodels.runtime import Predictor, RuntimeSelector

    predictor = Predictor(threads=threads, device="cpu", lanes=lanes)
    selector = RuntimeSelector(predictor)
    models = [(name, max(predictor.pruning_depths(name)) if predictor.pruning_depths(name) else None) for name in zoo.list_models() if name.startswith(f"{set_name}/")]
    selector.measure_together(models, (360, 480), 1, 3)
    x = predictor.random_input((360, 480))

    def one_student() -> None:
        for name, depth in models:
            selector.predict(name, x, depth)

    one_student()
    torch.set_num_threads(predictor.pass_threads)
    workers = [threading.Thread(target=lambda: [one_student() for _ in range(students // lanes)]) for _ in range(lanes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / (students // lanes * lanes)


def measure_in_child(args: argparse.Namespace, lanes: int, threshold: int | None) -> float:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(threshold)
    command = [sys.executable, __file__, "--child", str(lanes), "--set", args.set, "--threads", str(args.threads), "--students", str(args.students)]
    return float(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="camvid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--students", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--malloc", action="store_true", help="also with each mmap threshold of MMAP_THRESHOLDS")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(seconds_per_student(args.set, args.threads, args.child, args.students))
        return
    thresholds = MMAP_THRESHOLDS if args.malloc else {"glibc's default": None}
    configurations = {f"{lanes} lane{'s' if lanes > 1 else ''}, mmap threshold {label}": (lanes, threshold) for label, threshold in thresholds.items() for lanes in (1, 2)}
    seconds: dict[str, list[float]] = {name: [] for name in configurations}
    for _ in range(args.rounds):
        for name, (lanes, threshold) in configurations.items():
            seconds[name].append(measure_in_child(args, lanes, threshold))
    baseline = statistics.median(next(iter(seconds.values())))
    print(f"{args.set}, {args.threads} threads, {args.students} students a round, {args.rounds} rounds; seconds per student:")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<40} median {median:.3f} (range {min(values):.3f}-{max(values):.3f}), {median / baseline:.2f} x the first")
    if args.json:
        args.json.write_text(json.dumps({"set": args.set, "threads": args.threads, "students": args.students, "seconds_per_student": seconds}, indent=2))


if __name__ == "__main__":
    main()
