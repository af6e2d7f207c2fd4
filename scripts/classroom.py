"""A class using the dashboard, scenarios of ``scripts/load_test.py``:

* ``python scripts/load_test.py students [-n 40] [--images same|examples|uploads]``: N simulated
  browsers press Run on Compare at once (the wait of each, split into queued and running;
  errors; the server's RSS);
* ``python scripts/load_test.py soak [-n 4] [--minutes 10]``: a few students press Run in a loop
  for minutes (RSS per minute and its trend)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from loadlib import BrowserSession, EventResult
from loadserver import RssSampler
from loadstats import error_lines, format_table, group_errors, linear_slope, log_line, result_record, rss_line, shorten, split_times, summarize, timing_table
from loadtarget import Target, camvid_folder, frames_to_upload, upload

MAX_SOAK_MINUTES = 60
MAX_RUNS_PER_SOAK_STUDENT = 10_000


async def scenario_students(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    rng = random.Random(args.seed)
    lines = [f"students: {args.students} at once (jitter {args.jitter} s), set {target.overrides['set_name']}, example {target.overrides['example']}, "
             f"models {','.join(target.overrides['models'])}, depth {target.overrides['depth']}, via {target.via}, images {args.images}"]
    report: dict[str, Any] = {"students": args.students, "images": args.images}
    frames = frames_to_upload(camvid_folder(args, "--images uploads"), target.examples) if args.images == "uploads" else []
    if 0 < len(frames) < args.students:
        lines.append(f"only {len(frames)} frames to upload: some students share one")
    if args.warmup:
        first = []
        for _ in range(args.warmup):
            async with BrowserSession(target.http, target.base) as session:
                first.append(await target.run_compare(session, args.timeout))
        report["warmup"] = [result_record(r) for r in first]
        runs = ", ".join(f"{r.seconds:.1f} s" + ("" if r.ok else f" ({shorten(r.error, 80)})") for r in first)
        lines.append(f"Run(s) before the class (on a server this script started, the first is the cold figure): {runs}")
    if args.settle:
        await asyncio.sleep(args.settle)
        lines.append(f"the class came {args.settle:g} s later (the server's idle-time benchmarks done meanwhile)")

    sampler = RssSampler(target.pid, args.rss_interval).start()
    target.log.mark()
    page_load: list[EventResult] = []
    config_seconds: list[float] = []

    delays = [rng.uniform(0, args.jitter) for _ in range(args.students)]

    async def student(index: int) -> EventResult:
        await asyncio.sleep(delays[index])
        async with BrowserSession(target.http, target.base) as session:
            config_seconds.append(session.config_seconds)
            if args.page_load:
                for endpoint in target.app.load_endpoints():
                    page_load.append(await session.run(endpoint, None, args.timeout))
            image_file = await upload(target.http, target.base, frames[index % len(frames)]) if frames else None
            example = target.examples[index % len(target.examples)] if args.images == "examples" else None
            return await target.run_compare(session, args.timeout, example, image_file)

    t0 = time.monotonic()
    tasks = [asyncio.create_task(student(i)) for i in range(args.students)]
    _, pending = await asyncio.wait(tasks, timeout=args.total_timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.monotonic() - t0
    await sampler.stop()
    results = []
    for task in tasks:
        if task in pending:
            results.append(EventResult(ok=False, seconds=wall, error=f"cancelled at the scenario limit ({args.total_timeout:.0f} s)"))
        elif task.exception() is not None:
            results.append(EventResult(ok=False, seconds=wall, error=f"{type(task.exception()).__name__}: {task.exception()}"))
        else:
            results.append(task.result())

    errors = [r.error for r in results if not r.ok]
    rows = split_times(results) + [("page-load events", [r.seconds for r in page_load if r.ok]), ("GET /config", config_seconds)]
    rss, log = sampler.report(), target.log.since_mark()
    report.update({
        "wait": summarize([r.seconds for r in results if r.ok]), "queued": summarize([r.started_after for r in results if r.ok and r.started_after is not None]),
        "page_load": summarize([r.seconds for r in page_load if r.ok]), "page_load_errors": [r.error for r in page_load if not r.ok],
        "errors": len(errors), "refused": sum(r.refused for r in results), "error_groups": group_errors(errors), "rss_mb": rss, "log": log,
        "max_queue_size_seen": max((s for r in results for s in r.queue_sizes), default=None), "wall_s": wall,
        "per_student": [result_record(r) for r in results],
    })
    lines += [timing_table(rows),
              f"errors: {len(errors)} of {len(results)} ({report['refused']} refused: queue full); page-load event errors: {len(report['page_load_errors'])}",
              *error_lines(errors + [e for e in report["page_load_errors"]]),
              f"largest queue seen by a student: {report['max_queue_size_seen']}", rss_line(rss), log_line(log), f"scenario wall time: {wall:.1f} s"]
    return report, "\n".join(lines)


async def scenario_soak(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    sampler = RssSampler(target.pid, args.rss_interval).start()
    target.log.mark()
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    runs: list[tuple[float, EventResult]] = []

    async def student(index: int) -> None:
        await asyncio.sleep(index * 0.5)
        count = 0
        while time.monotonic() < deadline and count < MAX_RUNS_PER_SOAK_STUDENT:
            async with BrowserSession(target.http, target.base) as session:
                for _ in range(args.runs_per_session):
                    if time.monotonic() >= deadline:
                        break
                    example = target.examples[(index + count) % len(target.examples)]
                    result = await target.run_compare(session, args.timeout, example)
                    runs.append((time.monotonic() - t0, result))
                    count += 1
                    await asyncio.sleep(args.think)

    tasks = [asyncio.create_task(student(i)) for i in range(args.students)]
    _, pending = await asyncio.wait(tasks, timeout=args.minutes * 60 + args.timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failures = [f"{type(t.exception()).__name__}: {t.exception()}" for t in tasks if t not in pending and t.exception() is not None]
    wall = time.monotonic() - t0
    await sampler.stop()
    samples = [(t, mb) for t, mb in sampler.samples]
    minutes = int(wall // 60) + 1
    per_minute = []
    for minute in range(minutes):
        in_minute = [mb for t, mb in samples if minute * 60 <= t < (minute + 1) * 60]
        finished = [r for t, r in runs if minute * 60 <= t < (minute + 1) * 60]
        per_minute.append([minute + 1, sum(in_minute) / len(in_minute) if in_minute else None, len(finished), sum(not r.ok for r in finished),
                           summarize([r.seconds for r in finished if r.ok])["p50"]])
    rss_minutes = [row[1] for row in per_minute if row[1] is not None]
    slope_all = linear_slope([(t / 60, mb) for t, mb in samples])
    slope_after_first = linear_slope([(t / 60, mb) for t, mb in samples if t >= 60])
    errors = [r.error for _, r in runs if not r.ok] + failures + ["a student still busy at the scenario limit (--minutes + --timeout)"] * len(pending)
    log = target.log.since_mark()
    report = {"students": args.students, "minutes": args.minutes, "runs": len(runs), "errors": len(errors), "error_groups": group_errors(errors),
              "wait": summarize([r.seconds for _, r in runs if r.ok]), "rss_per_minute": [row[:2] for row in per_minute],
              "rss_first_minute": rss_minutes[0] if rss_minutes else None, "rss_last_minute": rss_minutes[-1] if rss_minutes else None,
              "slope_mb_per_min": slope_all, "slope_after_first_minute_mb_per_min": slope_after_first, "rss_samples": samples, "log": log, "wall_s": wall}
    lines = [f"soak: {args.students} students, Run in a loop for {args.minutes} min ({target.overrides['set_name']}, {','.join(target.overrides['models'])}), "
             f"new page every {args.runs_per_session} Runs, think {args.think} s",
             format_table(["minute", "RSS MiB", "Runs", "errors", "p50 wait s"], per_minute),
             f"Runs: {len(runs)}, errors: {len(errors)}", *error_lines(errors),
             timing_table([("wait: submit -> result", [r.seconds for _, r in runs if r.ok])]),
             (f"RSS first minute {rss_minutes[0]:,.0f} MiB, last minute {rss_minutes[-1]:,.0f} MiB; slope {slope_all or 0:+.2f} MiB/min overall, "
              f"{slope_after_first or 0:+.2f} MiB/min after the first minute") if rss_minutes else rss_line({"before": None}),
             log_line(log), f"scenario wall time: {wall:.1f} s"]
    return report, "\n".join(lines)


SCENARIOS = {"students": scenario_students, "soak": scenario_soak}


def add_parsers(sub, common, bounded) -> None:
    students = sub.add_parser("students", parents=[common], help="N students press Run at once")
    students.add_argument("-n", "--students", type=bounded(int, 1, 500, "--students"), default=40)
    students.add_argument("--jitter", type=bounded(float, 0, 60, "--jitter"), default=0.5, help="each student starts after up to this many seconds")
    students.add_argument("--settle", type=bounded(float, 0, 600, "--settle"), default=0.0,
                          help="seconds between those Runs and the class, for the server's idle-time work (latency benchmarks, ONNX Runtime sessions); default 0")
    students.add_argument("--warmup", type=bounded(int, 0, 10, "--warmup"), default=1, help="Runs before the class arrives (default 1: the first-Run figure)")
    students.add_argument("--no-page-load", dest="page_load", action="store_false", help="skip the events a page fires when it opens")
    students.add_argument("--images", choices=["same", "examples", "uploads"], default="same",
                          help="same: every student the same example (default); examples: student i the i-th example; uploads: each a CamVid val (then train) frame of its own")
    soak = sub.add_parser("soak", parents=[common], help="students loop for minutes; RSS trend")
    soak.add_argument("-n", "--students", type=bounded(int, 1, 200, "--students"), default=4)
    soak.add_argument("--minutes", type=bounded(float, 0.1, MAX_SOAK_MINUTES, "--minutes"), default=10.0)
    soak.add_argument("--think", type=bounded(float, 0, 600, "--think"), default=1.0, help="seconds between a student's Runs")
    soak.add_argument("--runs-per-session", type=bounded(int, 1, 1000, "--runs-per-session"), default=5)


__all__ = ["SCENARIOS", "add_parsers"]
