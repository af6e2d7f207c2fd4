"""Clients that take more than their share, scenarios of ``scripts/load_test.py``:

* ``python scripts/load_test.py greedy [--flood 65] [--flood-via call|join|both] [--flood-images
  same|distinct] [--idle-runs 2]``: one client floods Compare and never reads the results while a
  normal browser previews, redraws and runs (its Run on the idle server and during the flood, its
  previews, against issue 25's targets; what became of the flood). Issue 25's flood is
  ``greedy --flood 100 --flood-via join --flood-images distinct --set camvid --camvid DIR``;
* ``python scripts/load_test.py bigbody [--items 500000] [--string-mb 50]``: Compare requests with
  an oversized models list and example string (the answer, the server log, and whether the server
  still answers afterwards)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time

import httpx

from loadapp import API, loss_curve_fallback, preview_fallback
from loadlib import BrowserSession, EventResult, call_event, call_submit, error_text, http_client, json_loads, response_detail
from loadserver import RssSampler, ServerLog
from loadstats import error_lines, format_table, group_errors, log_line, result_record, rss_line, secs, shorten, summarize
from loadtarget import Target, camvid_folder, frames_to_upload, upload
from sse import SSEParser

RUN_EXTRA_TARGET_S = 5.0  # issue 25: another address's Run at most this much beyond its idle time during the flood
PREVIEW_TARGET_S = 2.0  # issue 25: its previews within this during the flood


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


async def upload_distinct_images(target: Target, args: argparse.Namespace, greedy_http: httpx.AsyncClient) -> tuple[list[dict], list[dict]]:
    """For ``--flood-images distinct``: a CamVid frame of its own for each of the normal
    client's Runs (uploaded from 127.0.0.1) and for each flood job (uploaded from the greedy
    address), none of them an example; the uploads come before the measurements and are not timed."""
    needed = args.idle_runs + 1 + args.flood
    frames = frames_to_upload(camvid_folder(args, "--flood-images distinct"), target.examples)
    if len(frames) < needed:
        raise ValueError(f"--flood-images distinct needs {needed} CamVid frames (--idle-runs + 1 + --flood) that are not examples; there are {len(frames)}")
    gate = asyncio.Semaphore(8)

    async def send(http: httpx.AsyncClient, path) -> dict:
        async with gate:
            return await upload(http, target.base, path)

    normal = [await send(target.http, path) for path in frames[:args.idle_runs + 1]]
    flood = await asyncio.gather(*(send(greedy_http, path) for path in frames[args.idle_runs + 1:needed]))
    return normal, list(flood)


def against(value: float | None, target_s: float) -> str:
    if value is None:
        return "no figure"
    return f"{value:.2f} s ({'meets' if value <= target_s else 'misses'} the target <= {target_s:g} s)"


async def scenario_greedy(target: Target, args: argparse.Namespace) -> tuple[dict, str]:
    if not ipaddress.ip_address(args.greedy_address).is_loopback:
        raise SystemExit(f"--greedy-address must be a loopback address (127.0.0.0/8), got {args.greedy_address}")
    example_id = target.compare.inputs[target.compare.slot("example")].component_id
    preview = target.app.endpoint("preview", preview_fallback(example_id))
    loss_curves = target.app.endpoint("loss_curves", loss_curve_fallback)
    greedy_http = http_client(args.greedy_address)
    if args.flood_images == "distinct":
        normal_images, flood_images = await upload_distinct_images(target, args, greedy_http)
    else:
        normal_images, flood_images = [None] * (args.idle_runs + 1), [None] * args.flood
    set_name = target.overrides["set_name"]

    async def normal_run(image_file: dict | None) -> EventResult:
        """One Run of the normal client on a page of its own, so no mask a page already holds answers it."""
        async with BrowserSession(target.http, target.base) as page:
            return await target.run_compare(page, args.run_timeout, image_file=image_file)

    idle_runs = [await normal_run(image) for image in normal_images[:-1]]
    sampler = RssSampler(target.pid, args.rss_interval).start()
    target.log.mark()
    normal = BrowserSession(target.http, target.base)
    await normal.open()

    async def light_round(index: int) -> list[tuple[str, EventResult]]:
        example = target.examples[(index + 1) % len(target.examples)]
        return [("preview", await normal.run(preview, {"example": example, "set_name": set_name}, args.light_timeout)),
                ("loss curve", await normal.run(loss_curves, {"gamma": round(0.5 + index * 0.7, 1) % 5}, args.light_timeout))]

    baseline = await light_round(0)
    t0 = time.monotonic()
    gate = asyncio.Semaphore(32)

    async def flood_one(index: int) -> tuple[str, EventResult, str | None]:
        overrides = {**target.overrides, **({"image_file": flood_images[index]} if flood_images[index] else {})}
        async with gate:
            if args.flood_via == "call" or (args.flood_via == "both" and index % 2 == 0):
                return "call", await call_submit(greedy_http, target.base, target.compare.api_name, target.compare.api_data(overrides)), None
            session_hash = f"greedy{index:05d}"
            body = {"data": target.compare.browser_data(overrides), "fn_index": target.compare.fn_index, "session_hash": session_hash,
                    "trigger_id": target.compare.trigger_id, "event_data": None}
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
    run = await normal_run(normal_images[-1])
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
    previews = summarize([r.seconds for name, r in during if name == "preview" and r.ok])
    previews_failed = sum(not r.ok for name, r in during if name == "preview")
    light_errors = [f"{name}: {r.error}" for name, r in during if not r.ok]
    idle = idle_runs[-1] if idle_runs else None
    run_extra = run.seconds - idle.seconds if idle is not None and idle.ok and run.ok else None
    rss, log = sampler.report(), target.log.since_mark()
    report = {
        "flood": {"requests": args.flood, "via": args.flood_via, "images": args.flood_images, "accepted": len(accepted), "refused": len(refused),
                  "post_s": flood_post_s, "errors": group_errors(flood_errors), "fate_after_normal_run": fates},
        "idle_runs": [result_record(r) for r in idle_runs], "normal_run": result_record(run), "run_during_minus_idle_s": run_extra,
        "light_before_flood": [(name, result_record(r)) for name, r in baseline],
        "light_during_flood": [(name, result_record(r)) for name, r in during],
        "light_during_flood_s": summarize(light_ok), "previews_during_flood_s": previews, "previews_failed": previews_failed,
        "light_refused": sum(r.refused for _, r in during), "light_errors": group_errors(light_errors),
        "targets_s": {"run_during_minus_idle": RUN_EXTRA_TARGET_S, "preview": PREVIEW_TARGET_S}, "rss_mb": rss, "log": log, "wall_s": wall,
    }
    rows = [[f"Run (idle, {index + 1} of {len(idle_runs)})", r.seconds, "ok" if r.ok else shorten(r.error, 70)] for index, r in enumerate(idle_runs)]
    rows += [[f"{name} (before flood)", r.seconds, "ok" if r.ok else shorten(r.error, 70)] for name, r in baseline]
    rows += [[f"{name} (during flood)", r.seconds, "ok" if r.ok else shorten(r.error, 70)] for name, r in during]
    rows.append(["Run (during flood)", run.seconds, "ok" if run.ok else shorten(run.error, 70)])
    images = "each job its own uploaded CamVid frame" if args.flood_images == "distinct" else f"every job example {target.overrides['example']}"
    lines = [f"greedy: {args.flood} Compare jobs via {args.flood_via} ({target.overrides['set_name']}, {','.join(target.overrides['models'])}; {images}), never read; "
             f"from {args.greedy_address}; one normal browser at 127.0.0.1 meanwhile, each Run on a page of its own"
             + ("" if args.flood_images == "same" else " and a frame of its own"),
             f"flood: {len(accepted)} accepted, {len(refused)} refused (queue full), {len(flood_errors) - len(refused)} other errors; posted in {flood_post_s:.1f} s",
             *error_lines(flood_errors),
             format_table(["normal client", "seconds", "outcome"], rows),
             f"Run during flood minus idle Run (the last idle one): {against(run_extra, RUN_EXTRA_TARGET_S)}",
             f"previews during the flood: p50 {against(previews['p50'], PREVIEW_TARGET_S)}, max {against(previews['max'], PREVIEW_TARGET_S)}, {previews_failed} failed",
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


SCENARIOS = {"greedy": scenario_greedy, "bigbody": scenario_bigbody}


def add_parsers(sub, common, bounded) -> None:
    greedy = sub.add_parser("greedy", parents=[common], help="a greedy client floods Compare while a normal one works")
    greedy.add_argument("--flood", type=bounded(int, 1, 1000, "--flood"), default=65)
    greedy.add_argument("--flood-via", choices=["call", "join", "both"], default="call")
    greedy.add_argument("--flood-images", choices=["same", "distinct"], default="same",
                        help="same: every job the Compare example (default); distinct: each job a CamVid frame of its own, uploaded first (needs --set camvid and a CamVid folder)")
    greedy.add_argument("--idle-runs", type=bounded(int, 1, 10, "--idle-runs"), default=2,
                        help="the normal client's Runs before the flood; the last is its idle Run (on a freshly started app the first loads the models); default 2")
    greedy.add_argument("--greedy-address", default="127.0.0.2", help="loopback address the greedy client connects from (another client address than the normal browser at 127.0.0.1)")
    greedy.add_argument("--light-repeats", type=bounded(int, 1, 50, "--light-repeats"), default=3, help="rounds of (preview, loss curve) during the flood")
    greedy.add_argument("--light-timeout", type=bounded(float, 1, 600, "--light-timeout"), default=60.0)
    greedy.add_argument("--run-timeout", type=bounded(float, 1, 3600, "--run-timeout"), default=600.0)
    greedy.add_argument("--probe-seconds", type=bounded(float, 0.5, 60, "--probe-seconds"), default=3.0, help="how long each flood job's stream is read at the end")
    bigbody = sub.add_parser("bigbody", parents=[common], help="oversized models list and example string")
    bigbody.add_argument("--items", type=bounded(int, 1, 10_000_000, "--items"), default=500_000)
    bigbody.add_argument("--string-mb", type=bounded(float, 0.001, 200, "--string-mb"), default=50.0)


__all__ = ["SCENARIOS", "add_parsers"]
