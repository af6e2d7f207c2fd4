"""The attacks of issue 25 as scenarios of ``scripts/load_test.py`` (127.0.0.0/8 only, each
bounded in count and time):

* ``maskbomb``: a small image with a 6300x6300 ground-truth mask PNG of a few hundred KB
  (its decoding would take gigabytes), through the preview and through Compare, ``--repeat``
  times at once: the message and the server's RSS before and at its peak.
* ``chunked``: ``--uploads`` chunked uploads of ``--mb`` MB each (above the upload limit, so
  each is refused mid-body): statuses, and the upload folder's size before, at most and after.
* ``slowsockets``: ``--sockets`` connections from ``--attacker-address`` that send half a request
  head and hold it (reopened when closed) for ``--hold`` seconds, while 127.0.0.1 loads the page
  every second: its load times and failures, and how much the server log grew. Start the app
  with ``--server-nofile 1024`` for a 1024 file-descriptor limit.
* ``lightflood``: ``--events`` previews at once from ``--attacker-address`` (``--tabs`` tabs),
  while a browser at 127.0.0.1 previews ``--repeats`` times: its latencies and what became of the
  flood (accepted, refused)."""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import os
import resource
import struct
import time
import uuid
import zlib
from pathlib import Path

import httpx

from loadapp import API, preview_fallback
from loadlib import BrowserSession, browser_event, http_client
from loadserver import RssSampler
from loadstats import group_errors, shorten, summarize


def attacker_address(args: argparse.Namespace) -> str:
    if not ipaddress.ip_address(args.attacker_address).is_loopback:
        raise SystemExit(f"--attacker-address must be a loopback address (127.0.0.0/8), got {args.attacker_address}")
    return args.attacker_address


def png_of_zeros(width: int, height: int) -> bytes:
    """An all-zero 8-bit grey PNG compressed row by row (no full-size buffer here)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def small_png(width: int = 480, height: int = 360) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload_bytes(http: httpx.AsyncClient, base: str, name: str, data: bytes) -> dict:
    response = await http.post(f"{base}{API}/upload", files={"files": (name, data, "image/png")})
    response.raise_for_status()
    path = response.json()[0]
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def preview_data(target, preview, values: dict) -> list:
    """The preview's inputs with ``values`` given by Compare's input names (the two events share
    the image controls; the preview's own inputs have no API names)."""
    data = preview.browser_data()
    for name, value in values.items():
        component = target.compare.inputs[target.compare.slot(name)].component_id
        for index, slot in enumerate(preview.inputs):
            if slot.component_id == component:
                data[index] = value
    return data


def preview_endpoint(target):
    example_id = target.compare.inputs[target.compare.slot("example")].component_id
    return target.app.endpoint("preview", preview_fallback(example_id))


async def scenario_maskbomb(target, args) -> tuple[dict, str]:
    bomb = png_of_zeros(6300, 6300)
    image = await upload_bytes(target.http, target.base, "photo.png", small_png())
    mask = await upload_bytes(target.http, target.base, "mask.png", bomb)
    preview = preview_endpoint(target)
    sampler = RssSampler(target.pid, 0.1).start()
    await asyncio.sleep(0.5)
    target.log.mark()

    async def one() -> list[tuple[str, object]]:
        async with BrowserSession(target.http, target.base) as tab:
            overrides = {"image_file": image, "mask_file": mask}
            shown = await browser_event(target.http, target.base, preview, preview_data(target, preview, {**overrides, "set_name": target.overrides["set_name"]}), tab.session_hash, args.timeout)
            ran = await tab.run(target.compare, {**target.overrides, **overrides}, args.timeout)
            return [("preview", shown), ("Compare", ran)]

    outcomes = [pair for pairs in await asyncio.gather(*(one() for _ in range(args.repeat))) for pair in pairs]
    await asyncio.sleep(0.5)
    await sampler.stop()
    rss, log = sampler.report(), target.log.since_mark()
    growth = None if rss["peak"] is None or rss["before"] is None else rss["peak"] - rss["before"]
    messages = group_errors([f"{name}: {result.error if not result.ok else 'no error: ' + shorten(str(result.output), 100)}" for name, result in outcomes])
    report = {"mask_bytes": len(bomb), "repeat": args.repeat, "rss_mb": rss, "peak_growth_mb": growth, "messages": messages, "log": log}
    lines = [f"maskbomb: a 6300x6300 mask PNG of {len(bomb) / 1024:.0f} KB with a 480x360 image, preview and Compare, {args.repeat} at once",
             *[f"  {count} x {shorten(message, 200)}" for message, count in messages],
             f"server RSS before {rss['before']} MiB, peak {rss['peak']} MiB (growth {growth if growth is None else round(growth, 1)} MiB), after {rss['after']} MiB",
             f"log: {log}"]
    return report, "\n".join(lines)


def folder_bytes(folder: Path) -> int:
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


async def scenario_chunked(target, args) -> tuple[dict, str]:
    folder = args.upload_dir or Path(os.environ.get("SEGMODELS_UPLOAD_DIR") or f"/tmp/segmodels-uploads-{target.base.rsplit(':', 1)[1]}")
    if not folder.is_dir():
        raise ValueError(f"upload folder {folder} not found: pass --upload-dir")
    before, largest, statuses = folder_bytes(folder), 0, []
    block = b"0" * 2**20
    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'

    async def body():
        yield head
        for _ in range(int(args.mb)):
            yield block

    started = time.monotonic()
    async with http_client() as http:
        for index in range(args.uploads):
            try:
                response = await http.post(f"{target.base}{API}/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
                statuses.append(response.status_code)
            except httpx.HTTPError as error:
                statuses.append(type(error).__name__)
            if index % 10 == 0:
                largest = max(largest, folder_bytes(folder))
    wall = time.monotonic() - started
    after = folder_bytes(folder)
    largest = max(largest, after)
    counts = {str(status): statuses.count(status) for status in set(statuses)}
    report = {"uploads": args.uploads, "mb_each": args.mb, "statuses": counts, "folder_bytes": {"before": before, "largest_seen": largest, "after": after}, "wall_s": wall}
    lines = [f"chunked: {args.uploads} chunked uploads of {args.mb:g} MB (above the limit) in {wall:.1f} s; answers {counts}",
             f"upload folder {folder}: {before / 2**20:.2f} MiB before, at most {largest / 2**20:.2f} MiB seen (every 10th upload), {after / 2**20:.2f} MiB after"]
    return report, "\n".join(lines)


async def scenario_slowsockets(target, args) -> tuple[dict, str]:
    address = attacker_address(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = target.base.removeprefix("http://").split(":")
    stop = time.monotonic() + args.hold
    opened, refused = 0, 0

    async def hold_one() -> None:
        nonlocal opened, refused
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, int(port), local_addr=(address, 0))
            except OSError:
                refused += 1
                await asyncio.sleep(0.5)
                continue
            opened += 1
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                await writer.drain()
                await asyncio.wait_for(reader.read(1), max(0.1, stop - time.monotonic()))
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()

    target.log.mark()
    holders = [asyncio.create_task(hold_one()) for _ in range(args.sockets)]
    await asyncio.sleep(min(2.0, args.hold / 4))
    loads, failures = [], []
    async with http_client() as normal:
        while time.monotonic() < stop - 1:
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(normal.get(f"{target.base}/"), 15)
                (loads if response.status_code == 200 else failures).append(time.monotonic() - started if response.status_code == 200 else f"HTTP {response.status_code}")
            except (httpx.HTTPError, asyncio.TimeoutError) as error:
                failures.append(type(error).__name__)
            await asyncio.sleep(1.0)
    await asyncio.gather(*holders, return_exceptions=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = target.log.since_mark()
    report = {"sockets": args.sockets, "hold_s": args.hold, "opened": opened, "connect_failures": refused, "page_loads_s": summarize(loads), "page_failures": group_errors(failures), "log": log}
    lines = [f"slowsockets: {args.sockets} half-sent request heads from {address} held for {args.hold:g} s (reopened when closed: {opened} opened, {refused} connects failed)",
             f"page loads from 127.0.0.1 meanwhile: {len(loads)} ok, p50 {summarize(loads)['p50']}, max {summarize(loads)['max']} s; failures {group_errors(failures)}",
             f"server log grew by {None if log is None else log['bytes']} bytes ({None if log is None else log['tracebacks']} tracebacks)"]
    return report, "\n".join(lines)


async def scenario_lightflood(target, args) -> tuple[dict, str]:
    address = attacker_address(args)
    preview = preview_endpoint(target)
    examples = target.examples
    normal = BrowserSession(target.http, target.base)
    await normal.open()
    def shown(index: int) -> list:
        return preview_data(target, preview, {"example": examples[index % len(examples)], "set_name": target.overrides["set_name"]})

    baseline = [await browser_event(target.http, target.base, preview, shown(i), normal.session_hash, args.timeout) for i in range(2)]
    flood_http = http_client(address)
    data = shown(0)
    tabs = [uuid.uuid4().hex[:11] for _ in range(args.tabs)]

    async def flood_one(index: int) -> int | str:
        body = {"data": data, "fn_index": preview.fn_index, "session_hash": tabs[index % len(tabs)], "trigger_id": preview.trigger_id, "event_data": None}
        try:
            return (await flood_http.post(f"{target.base}{API}/queue/join", json=body)).status_code
        except httpx.HTTPError as error:
            return type(error).__name__

    flood = [asyncio.create_task(flood_one(i)) for i in range(args.events)]
    await asyncio.sleep(0.5)
    during = [await browser_event(target.http, target.base, preview, shown(i + 1), normal.session_hash, args.timeout) for i in range(args.repeats)]
    statuses = await asyncio.gather(*flood)
    await normal.close()
    await flood_http.aclose()
    counts = {str(s): statuses.count(s) for s in set(statuses)}
    ok = [r.seconds for r in during if r.ok]
    report = {"events": args.events, "tabs": args.tabs, "flood_answers": counts, "baseline_s": [r.seconds for r in baseline], "during_s": summarize(ok),
              "errors": group_errors([r.error for r in during if not r.ok])}
    lines = [f"lightflood: {args.events} previews at once from {address} ({args.tabs} tabs), never read; answers {counts}",
             f"a browser at 127.0.0.1: previews before {', '.join(f'{r.seconds:.2f}' for r in baseline)} s; during: {len(ok)} ok, p50 {summarize(ok)['p50']}, max {summarize(ok)['max']} s; "
             f"errors {report['errors']}"]
    return report, "\n".join(lines)


SCENARIOS = {"maskbomb": scenario_maskbomb, "chunked": scenario_chunked, "slowsockets": scenario_slowsockets, "lightflood": scenario_lightflood}


def add_parsers(sub, common, bounded) -> None:
    maskbomb = sub.add_parser("maskbomb", parents=[common], help="a 6300x6300 mask PNG through preview and Compare; RSS peak")
    maskbomb.add_argument("--repeat", type=bounded(int, 1, 8, "--repeat"), default=2)
    chunked = sub.add_parser("chunked", parents=[common], help="chunked uploads above the limit in a loop; upload folder size")
    chunked.add_argument("--uploads", type=bounded(int, 1, 5000, "--uploads"), default=1000)
    chunked.add_argument("--mb", type=bounded(float, 1, 64, "--mb"), default=25.0)
    chunked.add_argument("--upload-dir", type=Path, help="the app's upload folder (default: app.py's for its port)")
    slow = sub.add_parser("slowsockets", parents=[common], help="half-sent request heads held open; page load times, log growth")
    slow.add_argument("--sockets", type=bounded(int, 1, 5000, "--sockets"), default=1100)
    slow.add_argument("--hold", type=bounded(float, 5, 600, "--hold"), default=60.0)
    slow.add_argument("--attacker-address", default="127.0.0.2")
    light = sub.add_parser("lightflood", parents=[common], help="many previews from one address; another address's previews")
    light.add_argument("--events", type=bounded(int, 1, 2000, "--events"), default=300)
    light.add_argument("--tabs", type=bounded(int, 1, 2000, "--tabs"), default=50)
    light.add_argument("--repeats", type=bounded(int, 1, 50, "--repeats"), default=5)
    light.add_argument("--attacker-address", default="127.0.0.2")


__all__ = ["SCENARIOS", "add_parsers"]
