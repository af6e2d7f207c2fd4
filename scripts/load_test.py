"""Load benchmark and fairness check of the dashboard (issue 11, "A classroom on one CPU").

A benchmark, not a test: it prints tables of measured figures and may take minutes.

    python scripts/load_test.py students [-n 40] [--settle S] [--images same|examples|uploads] [--set camvid --camvid DIR] [--json OUT]
    python scripts/load_test.py greedy   [--flood 65] [--flood-via call|join|both]
    python scripts/load_test.py bigbody  [--items 500000] [--string-mb 50]
    python scripts/load_test.py soak     [-n 4] [--minutes 10]
    python scripts/load_test.py maskbomb | chunked | slowsockets | lightflood   (scripts/attacks.py)

* ``students``: N simulated browsers at once (each after a random delay of up to ``--jitter``
  seconds) open the page (``GET /config``, the page-load events, a heartbeat stream) and press
  Run on Compare (example, set, models, depth, opacity as given). Per-student wait from submit
  to the final result (p50 / p95 / max, split into queued and running), errors grouped by
  message, server RSS before / peak / after. One Run on the fresh server comes first (the "first
  Run" figure; ``--warmup 0`` skips it); ``--settle S`` lets the class come S seconds later, as
  on a server that was up before the lesson (its idle-time benchmarks done). ``--images``: every
  student runs the same example (``same``, a class following the teacher), student i the
  set's i-th example (``examples``), or each uploads a CamVid val frame none of the others has
  and that is not an example (``uploads``, as students with their own photos; the upload comes
  before the click and is not timed), so no two students' masks can be shared.
* ``greedy``: a greedy client posts ``--flood`` Compare jobs to ``POST /gradio_api/call/compare``
  (and/or ``queue/join`` with a new session hash each) and never reads them, while one normal
  browser changes the example (the image preview), moves the focal-loss slider and then presses
  Run. Reports the normal client's latencies, any "Queue is full", and what became of the flood
  (probing a flood job's stream briefly and closing it tells the server its client went away).
* ``bigbody``: a Compare through ``/call`` with a ``--items``-long models list, then one with a
  ``--string-mb`` MB example string: time to the answer, its message, tracebacks and the longest
  line in the server log, and whether a light event and a normal Run still answer afterwards.
* ``soak``: N students press Run in a loop (a new page every ``--runs-per-session`` Runs,
  cycling through the set's examples) for ``--minutes``; RSS every ``--rss-interval`` s; reports
  RSS per minute, first against last minute and the least-squares slope.
* ``maskbomb``, ``chunked``, ``slowsockets``, ``lightflood``: the attacks of issue 25
  (:mod:`attacks`); ``greedy --flood 100 --flood-via join`` is its queue/join flood.

Unless ``--url http://127.0.0.1:PORT`` names a running app, the script starts
``python app.py --port N --host 127.0.0.1 [--camvid DIR]`` itself (environment passed through,
plus ``--threads`` as ``SEGMODELS_THREADS`` and any ``--env KEY=VALUE``), waits until it answers,
samples its RSS (children included) and always stops it. With ``--url``, RSS needs
``--server-pid`` and the log checks ``--server-log``. Traffic goes to 127.0.0.1 only; every wait
is bounded (``--timeout`` per event, ``--total-timeout`` per scenario)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

import attacks
from loadlib import (
    API,
    REPO_ROOT,
    AppModel,
    AppServer,
    BrowserSession,
    Endpoint,
    EventResult,
    RssSampler,
    ServerLog,
    SSEParser,
    call_event,
    call_submit,
    error_text,
    fetch_files,
    format_table,
    group_errors,
    http_client,
    json_loads,
    linear_slope,
    pick_example,
    require_loopback,
    response_detail,
    shorten,
    summarize,
)

ALL_MODELS = ["unet", "unetpp", "unet3p", "deeplabv3p"]
MAX_SOAK_MINUTES = 60
MAX_RUNS_PER_SOAK_STUDENT = 10_000


@dataclass
class Target:
    """The app under test and how this run drives its Compare event."""

    base: str
    pid: int | None
    log: ServerLog
    http: Any
    app: AppModel
    compare: Endpoint
    overrides: dict[str, Any]
    examples: list[str]
    via: str
    fetch_files: bool

    async def run_compare(self, session: BrowserSession | None, timeout: float, example: str | None = None, image_file: dict | None = None) -> EventResult:
        """One Compare: through ``session`` (the browser protocol) or, with ``--via call``, the
        public API; on ``image_file`` (an :func:`upload`) when given, else on the example."""
        overrides = {**self.overrides, "example": example or self.overrides["example"], **({"image_file": image_file} if image_file else {})}
        if self.via == "call" or session is None:
            result = await call_event(self.http, self.base, self.compare.api_name, self.compare.api_data(overrides), timeout)
        else:
            result = await session.run(self.compare, overrides, timeout)
        if result.ok and self.fetch_files:
            errors = await fetch_files(self.http, self.base, result.output)
            if errors:
                result.ok, result.error = False, errors[0]
        result.output = None
        return result


async def upload(http: httpx.AsyncClient, base: str, path: Path) -> dict:
    """``path`` uploaded as a browser does; the file value an event then takes."""
    response = await http.post(f"{base}{API}/upload", files={"files": (path.name, path.read_bytes(), "image/png")})
    if response.status_code != 200:
        raise RuntimeError(f"upload of {path.name} refused: {response_detail(response)}")
    return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def frames_to_upload(args: argparse.Namespace, examples: list[str]) -> list[Path]:
    """CamVid val frames that are not among the app's examples, for ``--images uploads``."""
    camvid = args.camvid or (Path(os.environ["SEGMODELS_CAMVID"]) if os.environ.get("SEGMODELS_CAMVID") else None)
    if args.set != "camvid" or camvid is None:
        raise ValueError("--images uploads needs --set camvid and a CamVid folder (--camvid DIR or $SEGMODELS_CAMVID)")
    frames = [path for path in sorted((camvid / "val").glob("*.png")) if f"camvid-{path.stem}" not in examples]
    if not frames:
        raise ValueError(f"{camvid / 'val'} holds no frame that is not an example")
    return frames


# ----------------------------------------------------------------------------- reporting helpers

def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def timing_rows(label_values: list[tuple[str, list[float]]]) -> list[list[Any]]:
    rows = []
    for label, values in label_values:
        stats = summarize(values)
        rows.append([label, stats["n"], stats["p50"], stats["p95"], stats["max"]])
    return rows


def timing_table(label_values: list[tuple[str, list[float]]]) -> str:
    return format_table(["seconds", "n", "p50", "p95", "max"], timing_rows(label_values))


def result_record(result: EventResult) -> dict[str, Any]:
    record = asdict(result)
    record.pop("output")
    record["error"] = shorten(result.error, 300) if result.error else None
    return record


def error_lines(errors: list[str]) -> list[str]:
    return [f"  {count:>4} x {message}" for message, count in group_errors(errors)] or ["  none"]


def rss_line(rss: dict[str, float | None]) -> str:
    if rss["before"] is None:
        return "server RSS: not measured (give --server-pid with --url)"
    return f"server RSS (MiB, children included): before {rss['before']:,.0f}, peak {rss['peak']:,.0f}, after {rss['after']:,.0f}"


def log_line(log: dict[str, int] | None) -> str:
    if log is None:
        return "server log: not read (give --server-log with --url)"
    return f"server log during the scenario: {log['bytes']:,} bytes, {log['tracebacks']} traceback(s), longest line {log['longest_line']:,} chars"


def split_times(results: list[EventResult]) -> list[tuple[str, list[float]]]:
    done = [r for r in results if r.ok]
    rows = [("wait: submit -> result", [r.seconds for r in done]),
            ("  queued (submit -> start)", [r.started_after for r in done if r.started_after is not None]),
            ("  running (start -> result)", [r.seconds - r.started_after for r in done if r.started_after is not None])]
    first = [r.first_output_after for r in done if r.first_output_after is not None]
    if first:
        rows.append(("  first streamed output", first))
    return rows


# ----------------------------------------------------------------------------- scenarios

async def scenario_students(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    rng = random.Random(args.seed)
    lines = [f"students: {args.students} at once (jitter {args.jitter} s), set {target.overrides['set_name']}, example {target.overrides['example']}, "
             f"models {','.join(target.overrides['models'])}, depth {target.overrides['depth']}, via {target.via}, images {args.images}"]
    report: dict[str, Any] = {"students": args.students, "images": args.images}
    frames = frames_to_upload(args, target.examples) if args.images == "uploads" else []
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


def preview_fallback(example_component: int):
    """The event a browser fires when the example dropdown changes (the image preview)."""
    return lambda app, dependency: [example_component, "change"] in [list(t) for t in dependency.get("targets", [])]


def loss_curve_fallback(app: AppModel, dependency: dict) -> bool:
    """The event whose only input is the focal-loss gamma slider."""
    inputs = dependency.get("inputs", [])
    return len(inputs) == 1 and "gamma" in str(app.components[inputs[0]].get("props", {}).get("label", "")).lower()


async def probe_call_job(target: Target, event_id: str, seconds: float) -> str:
    """What became of a ``/call`` job nobody read: read its stream for ``seconds``, then close it."""
    try:
        async with asyncio.timeout(seconds):
            async with target.http.stream("GET", f"{target.base}{API}/call/{target.compare.api_name}/{event_id}") as response:
                if response.status_code != 200:
                    return f"HTTP {response.status_code}"
                parser = SSEParser()
                async for chunk in response.aiter_text():
                    for event in parser.feed(chunk):
                        if event.event == "complete":
                            return "completed"
                        if event.event == "error":
                            return "failed: " + shorten(error_text(json_loads(event.data)), 120)
                return "stream closed without a result"
    except TimeoutError:
        return f"no result within {seconds:.0f} s: still queued or running (this probe then disconnected)"
    except Exception as error:  # the probe reports every failure as an outcome
        return f"{type(error).__name__}: {shorten(str(error), 120)}"


async def probe_joined_job(target: Target, session_hash: str, seconds: float) -> str:
    """What became of a ``queue/join`` job whose session never opened ``queue/data``."""
    try:
        async with asyncio.timeout(seconds):
            async with target.http.stream("GET", f"{target.base}{API}/queue/data", params={"session_hash": session_hash}) as response:
                if response.status_code != 200:
                    return f"HTTP {response.status_code}"
                parser = SSEParser()
                async for chunk in response.aiter_text():
                    for event in parser.feed(chunk):
                        message = json_loads(event.data)
                        kind = message.get("msg")
                        if kind == "process_completed":
                            return "completed" if message.get("success") and "error" not in (message.get("output") or {}) else "failed: " + shorten(error_text(message.get("output")), 120)
                        if kind == "estimation":
                            return "still queued (this probe then disconnected)"
                        if kind == "process_starts":
                            return "running (this probe then disconnected)"
                        if kind == "unexpected_error":
                            return "unexpected error: " + shorten(str(message.get("message")), 120)
                return "stream closed without a result"
    except TimeoutError:
        return f"no message within {seconds:.0f} s (this probe then disconnected)"
    except Exception as error:  # the probe reports every failure as an outcome
        return f"{type(error).__name__}: {shorten(str(error), 120)}"


async def scenario_greedy(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    if not ipaddress.ip_address(args.greedy_address).is_loopback:
        raise SystemExit(f"--greedy-address must be a loopback address (127.0.0.0/8), got {args.greedy_address}")
    example_id = target.compare.inputs[target.compare.slot("example")].component_id
    preview = target.app.endpoint("preview", preview_fallback(example_id))
    loss_curves = target.app.endpoint("loss_curves", loss_curve_fallback)
    sampler = RssSampler(target.pid, args.rss_interval).start()
    target.log.mark()
    normal = BrowserSession(target.http, target.base)
    await normal.open()
    set_name = target.overrides["set_name"]

    async def light_round(index: int) -> list[tuple[str, EventResult]]:
        example = target.examples[(index + 1) % len(target.examples)]
        return [("preview", await normal.run(preview, {"example": example, "set_name": set_name}, args.light_timeout)),
                ("loss curve", await normal.run(loss_curves, {"gamma": round(0.5 + index * 0.7, 1) % 5}, args.light_timeout))]

    baseline = await light_round(0)
    t0 = time.monotonic()
    gate = asyncio.Semaphore(32)
    greedy_http = http_client(args.greedy_address)
    flood_data_call = target.compare.api_data(target.overrides)
    flood_data_join = target.compare.browser_data(target.overrides)

    async def flood_one(index: int) -> tuple[str, EventResult, str | None]:
        async with gate:
            if args.flood_via == "call" or (args.flood_via == "both" and index % 2 == 0):
                return "call", await call_submit(greedy_http, target.base, target.compare.api_name, flood_data_call), None
            session_hash = f"greedy{index:05d}"
            body = {"data": flood_data_join, "fn_index": target.compare.fn_index, "session_hash": session_hash, "trigger_id": target.compare.trigger_id, "event_data": None}
            start = time.monotonic()
            try:
                response = await greedy_http.post(f"{target.base}{API}/queue/join", json=body)
            except httpx.HTTPError as error:
                return "join", EventResult(ok=False, seconds=time.monotonic() - start, error=f"{type(error).__name__}: {error}"), session_hash
            ok = response.status_code == 200
            detail = None if ok else response_detail(response)
            return "join", EventResult(ok=ok, seconds=time.monotonic() - start, http_status=response.status_code, refused=response.status_code in (429, 503), error=detail), session_hash

    flood = await asyncio.gather(*(flood_one(i) for i in range(args.flood)))
    flood_post_s = time.monotonic() - t0
    during: list[tuple[str, EventResult]] = []
    for index in range(args.light_repeats):
        during += await light_round(index + 1)
    run = await target.run_compare(normal, args.run_timeout)
    await normal.close()
    probes = await asyncio.gather(*(probe_call_job(target, r.event_id, args.probe_seconds) if via == "call" else probe_joined_job(target, session_hash, args.probe_seconds)
                                    for via, r, session_hash in flood if r.ok))
    await greedy_http.aclose()
    wall = time.monotonic() - t0
    await sampler.stop()

    accepted = [r for _, r, _ in flood if r.ok]
    refused = [r for _, r, _ in flood if r.refused]
    flood_errors = [r.error for _, r, _ in flood if not r.ok]
    fates = group_errors(list(probes))
    light_ok = [r.seconds for _, r in during if r.ok]
    light_errors = [f"{name}: {r.error}" for name, r in during if not r.ok]
    rss, log = sampler.report(), target.log.since_mark()
    report = {
        "flood": {"requests": args.flood, "via": args.flood_via, "accepted": len(accepted), "refused": len(refused), "post_s": flood_post_s,
                  "errors": group_errors(flood_errors), "fate_after_normal_run": fates},
        "light_before_flood": [(name, result_record(r)) for name, r in baseline],
        "light_during_flood": [(name, result_record(r)) for name, r in during],
        "light_during_flood_s": summarize(light_ok), "light_refused": sum(r.refused for _, r in during), "light_errors": group_errors(light_errors),
        "normal_run": result_record(run), "rss_mb": rss, "log": log, "wall_s": wall,
    }
    rows = [[f"{name} (before flood)", r.seconds, "ok" if r.ok else shorten(r.error, 70)] for name, r in baseline]
    rows += [[f"{name} (during flood)", r.seconds, "ok" if r.ok else shorten(r.error, 70)] for name, r in during]
    rows.append(["Run (during flood)", run.seconds, "ok" if run.ok else shorten(run.error, 70)])
    lines = [f"greedy: {args.flood} Compare jobs via {args.flood_via} ({target.overrides['set_name']}, {','.join(target.overrides['models'])}), never read; "
             f"from {args.greedy_address}; one normal browser at 127.0.0.1 meanwhile",
             f"flood: {len(accepted)} accepted, {len(refused)} refused (queue full), {len(flood_errors) - len(refused)} other errors; posted in {flood_post_s:.1f} s",
             *error_lines(flood_errors),
             format_table(["normal client", "seconds", "outcome"], rows),
             f"light events during the flood: p50 {secs(summarize(light_ok)['p50'])}, max {secs(summarize(light_ok)['max'])}, "
             f"{report['light_refused']} refused, {len(light_errors)} failed",
             *error_lines(light_errors),
             f"normal Run: largest queue seen {max(run.queue_sizes, default=None)}, queued {secs(run.started_after)}",
             f"fate of the {len(accepted)} accepted flood jobs after the normal Run:",
             *[f"  {count:>4} x {fate}" for fate, count in fates],
             rss_line(rss), log_line(log), f"scenario wall time: {wall:.1f} s"]
    return report, "\n".join(lines)


async def scenario_bigbody(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    loss_curves = target.app.endpoint("loss_curves", loss_curve_fallback)
    session = BrowserSession(target.http, target.base)
    await session.open()
    baseline = await target.run_compare(session, args.timeout)
    sampler = RssSampler(target.pid, args.rss_interval).start()
    target.log.mark()
    cases = [("models list", f"{args.items:,} x 'unet'", {**target.overrides, "models": ["unet"] * args.items}),
             ("example string", f"{args.string_mb} MB", {**target.overrides, "example": "A" * int(args.string_mb * 2**20)})]
    rows, records = [], []
    for name, size, overrides in cases:
        data = target.compare.api_data(overrides)
        case_log = ServerLog(target.log.path)
        case_log.mark()
        result = await call_event(target.http, target.base, target.compare.api_name, data, args.timeout)
        del data, overrides
        light = await session.run(loss_curves, {"gamma": 1.5}, args.timeout)
        after = await target.run_compare(session, args.timeout)
        log = case_log.since_mark() or {}
        outcome = "accepted" if result.ok else (result.error if result.timed_out else f"refused: {shorten(result.error, 60)}")
        rows.append([f"{name} ({size})", result.http_status, result.seconds, result.error_length, outcome, log.get("tracebacks"), log.get("longest_line"),
                     light.seconds if light.ok else None, after.seconds if after.ok else None])
        records.append({"case": name, "size": size, "result": result_record(result), "log": log, "light_after": result_record(light), "run_after": result_record(after)})
    await session.close()
    await sampler.stop()
    rss, log = sampler.report(), target.log.since_mark()
    report = {"baseline_run": result_record(baseline), "cases": records, "rss_mb": rss, "log": log}
    lines = [f"bigbody: oversized Compare requests through /call ({target.overrides['set_name']}); normal Run before: {baseline.seconds:.2f} s"
             + ("" if baseline.ok else f" ({shorten(baseline.error, 80)})"),
             format_table(["request", "HTTP", "seconds", "message chars", "outcome", "tracebacks", "longest log line", "light event after (s)", "Run after (s)"], rows),
             rss_line(rss), log_line(log)]
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


SCENARIOS = {"students": scenario_students, "greedy": scenario_greedy, "bigbody": scenario_bigbody, "soak": scenario_soak, **attacks.SCENARIOS}


# ----------------------------------------------------------------------------- set-up and command line

async def prepare(args: argparse.Namespace, base: str, pid: int | None, log: ServerLog, http: Any) -> Target:
    app = await AppModel.fetch(http, base)
    compare = app.endpoint("compare")
    example_slot = compare.inputs[compare.slot("example")]
    examples = [c for c in (example_slot.choices or []) if str(c).startswith(f"{args.set}-")] or ([args.example] if args.example != "auto" else [])
    if not examples:
        raise ValueError(f"the app offers no {args.set!r} examples (it offers {example_slot.choices}); for CamVid start it with --camvid DIR, or choose --set shapes")
    models_slot = compare.inputs[compare.slot("models")]
    unknown = sorted(set(args.models) - set(models_slot.choices or args.models))
    if unknown:
        raise ValueError(f"unknown models {unknown}; the app offers {models_slot.choices}")
    example = pick_example(examples, args.set) if args.example == "auto" else args.example
    overrides = {"example": example, "set_name": args.set, "models": list(args.models), "depth": args.depth, "opacity": args.opacity}
    return Target(base, pid, log, http, app, compare, overrides, examples, args.via, args.fetch_files)


async def run_scenario(args: argparse.Namespace, base: str, pid: int | None, log: ServerLog) -> tuple[dict, str]:
    async with http_client() as http:
        target = await prepare(args, base, pid, log, http)
        return await SCENARIOS[args.scenario](target, args)


def git_revision() -> str | None:
    try:
        revision = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
        return revision + ("+changes" if dirty else "") if revision else None
    except (OSError, subprocess.SubprocessError):
        return None


def bounded(kind, low: float, high: float, name: str):
    def parse(text: str):
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low:g} and {high:g}, got {text}")
        return value
    return parse


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env takes KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    server = common.add_argument_group("the app")
    server.add_argument("--url", help="an app already running on this machine (http://127.0.0.1:PORT); default: start one")
    server.add_argument("--server-pid", type=int, help="with --url: the app's process id, for its RSS")
    server.add_argument("--server-log", type=Path, help="with --url: the app's log file, for tracebacks")
    server.add_argument("--camvid", type=Path, help="CamVid folder for the started app (else $SEGMODELS_CAMVID)")
    server.add_argument("--threads", type=bounded(int, 1, 256, "--threads"), help="SEGMODELS_THREADS for the started app")
    server.add_argument("--env", type=env_pair, action="append", default=[], metavar="KEY=VALUE", help="more environment for the started app (repeatable)")
    server.add_argument("--python", default=sys.executable, help="interpreter that runs app.py (default: this one)")
    server.add_argument("--server-nofile", type=bounded(int, 64, 1_048_576, "--server-nofile"), help="open-file limit (soft and hard) of the started app, as `ulimit -n`")
    server.add_argument("--startup-timeout", type=bounded(float, 1, 900, "--startup-timeout"), default=240.0)
    run = common.add_argument_group("what Compare runs")
    run.add_argument("--set", default="camvid", help="model set (default camvid)")
    run.add_argument("--example", default="auto", help="example key (default: the set's first)")
    run.add_argument("--models", nargs="+", default=ALL_MODELS, help=f"default: {' '.join(ALL_MODELS)}")
    run.add_argument("--depth", type=bounded(int, 1, 4, "--depth"), default=4)
    run.add_argument("--opacity", type=bounded(float, 0, 1, "--opacity"), default=0.8)
    run.add_argument("--via", choices=["browser", "call"], default="browser", help="browser: queue/join + queue/data (default); call: the public /call API")
    run.add_argument("--no-fetch-files", dest="fetch_files", action="store_false", help="do not download the result images as a browser does")
    out = common.add_argument_group("bounds and output")
    out.add_argument("--timeout", type=bounded(float, 1, 3600, "--timeout"), default=600.0, help="seconds one event may take (default 600)")
    out.add_argument("--total-timeout", type=bounded(float, 1, 7200, "--total-timeout"), default=1800.0, help="seconds one scenario may take (default 1800)")
    out.add_argument("--rss-interval", type=bounded(float, 0.1, 600, "--rss-interval"), default=1.0, help="seconds between RSS samples (default 1; soak 10)")
    out.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    out.add_argument("--seed", type=int, default=0)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    students = sub.add_parser("students", parents=[common], help="N students press Run at once")
    students.add_argument("-n", "--students", type=bounded(int, 1, 500, "--students"), default=40)
    students.add_argument("--jitter", type=bounded(float, 0, 60, "--jitter"), default=0.5, help="each student starts after up to this many seconds")
    students.add_argument("--settle", type=bounded(float, 0, 600, "--settle"), default=0.0,
                          help="seconds between those Runs and the class, for the server's idle-time work (latency benchmarks, ONNX Runtime sessions); default 0")
    students.add_argument("--warmup", type=bounded(int, 0, 10, "--warmup"), default=1, help="Runs before the class arrives (default 1: the first-Run figure)")
    students.add_argument("--no-page-load", dest="page_load", action="store_false", help="skip the events a page fires when it opens")
    students.add_argument("--images", choices=["same", "examples", "uploads"], default="same",
                          help="same: every student the same example (default); examples: student i the i-th example; uploads: each a CamVid val frame of its own")
    greedy = sub.add_parser("greedy", parents=[common], help="a greedy client floods Compare while a normal one works")
    greedy.add_argument("--flood", type=bounded(int, 1, 1000, "--flood"), default=65)
    greedy.add_argument("--flood-via", choices=["call", "join", "both"], default="call")
    greedy.add_argument("--greedy-address", default="127.0.0.2", help="loopback address the greedy client connects from (another client address than the normal browser at 127.0.0.1)")
    greedy.add_argument("--light-repeats", type=bounded(int, 1, 50, "--light-repeats"), default=3, help="rounds of (preview, loss curve) during the flood")
    greedy.add_argument("--light-timeout", type=bounded(float, 1, 600, "--light-timeout"), default=60.0)
    greedy.add_argument("--run-timeout", type=bounded(float, 1, 3600, "--run-timeout"), default=600.0)
    greedy.add_argument("--probe-seconds", type=bounded(float, 0.5, 60, "--probe-seconds"), default=3.0, help="how long each flood job's stream is read at the end")
    bigbody = sub.add_parser("bigbody", parents=[common], help="oversized models list and example string")
    bigbody.add_argument("--items", type=bounded(int, 1, 10_000_000, "--items"), default=500_000)
    bigbody.add_argument("--string-mb", type=bounded(float, 0.001, 200, "--string-mb"), default=50.0)
    attacks.add_parsers(sub, common, bounded)
    soak = sub.add_parser("soak", parents=[common], help="students loop for minutes; RSS trend")
    soak.add_argument("-n", "--students", type=bounded(int, 1, 200, "--students"), default=4)
    soak.add_argument("--minutes", type=bounded(float, 0.1, MAX_SOAK_MINUTES, "--minutes"), default=10.0)
    soak.add_argument("--think", type=bounded(float, 0, 600, "--think"), default=1.0, help="seconds between a student's Runs")
    soak.add_argument("--runs-per-session", type=bounded(int, 1, 1000, "--runs-per-session"), default=5)
    args = parser.parse_args(argv)
    if args.scenario == "soak" and "--rss-interval" not in (argv if argv is not None else sys.argv):
        args.rss_interval = 10.0
    if args.url:
        try:
            require_loopback(args.url)
        except ValueError as error:
            parser.error(str(error))
    return args


def _stop_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    meta: dict[str, Any] = {"scenario": args.scenario, "argv": sys.argv[1:] if argv is None else argv, "revision": git_revision(), "cpus": os.cpu_count(),
                            "load_average_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    server: AppServer | None = None
    t0 = time.monotonic()
    try:
        if args.url:
            base, pid, log = require_loopback(args.url), args.server_pid, ServerLog(args.server_log)
        else:
            env = dict(args.env)
            if args.threads:
                env["SEGMODELS_THREADS"] = str(args.threads)
            server = AppServer(args.python, args.camvid, env, nofile=args.server_nofile)
            print(f"starting {' '.join(server.command)} (log {server.log_path})", flush=True)
            server.start(args.startup_timeout)
            base, pid, log = server.url, server.pid, ServerLog(server.log_path)
            meta.update({"server_command": server.command, "server_env": env, "server_startup_s": server.startup_seconds, "server_log": str(server.log_path)})
            print(f"the app answered after {server.startup_seconds:.1f} s (pid {pid})", flush=True)
        report, text = asyncio.run(run_scenario(args, base, pid, log))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    meta.update({"load_average_after": os.getloadavg(), "total_s": time.monotonic() - t0})
    print(text)
    print(f"load average before {meta['load_average_before'][0]:.2f}, after {meta['load_average_after'][0]:.2f} ({meta['cpus']} CPUs); "
          f"revision {meta['revision']}; total {meta['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, **report}, indent=1, default=str))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
