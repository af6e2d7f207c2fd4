"""Load benchmark and fairness check of the dashboard (issue 11, "A classroom on one CPU").

A benchmark, not a test: it prints tables of measured figures and may take minutes.

    python scripts/load_test.py students [-n 40] [--settle S] [--images same|examples|uploads] [--set camvid --camvid DIR] [--json OUT]
    python scripts/load_test.py greedy   [--flood 65] [--flood-via call|join|both] [--flood-images same|distinct] [--idle-runs 2]
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
  set's i-th example (``examples``), or each uploads a CamVid val (then train) frame none of the
  others has and that is not an example (``uploads``, as students with their own photos; the upload comes
  before the click and is not timed), so no two students' masks can be shared.
* ``greedy``: a greedy client posts ``--flood`` Compare jobs to ``POST /gradio_api/call/compare``
  (and/or ``queue/join`` with a new session hash each) and never reads them, while one normal
  browser changes the example (the image preview), moves the focal-loss slider and then presses
  Run. ``--flood-images``: every job on the Compare example (``same``) or each on a CamVid frame
  of its own, uploaded first from the greedy address and not timed (``distinct``, needs ``--set
  camvid``). The normal client presses Run ``--idle-runs`` times before the flood (the last is its
  idle Run) and once during it, each on a page of its own (and with ``distinct`` a frame of its
  own), so no mask a page already holds answers it. Reports the normal client's latencies, "Run
  during flood minus idle Run" and the previews' p50 / max against issue 25's targets, any "Queue
  is full", and what became of the flood (probing a flood job's stream briefly and closing it
  tells the server its client went away).
* ``bigbody``: a Compare through ``/call`` with a ``--items``-long models list, then one with a
  ``--string-mb`` MB example string: time to the answer, its message, tracebacks and the longest
  line in the server log, and whether a light event and a normal Run still answer afterwards.
* ``soak``: N students press Run in a loop (a new page every ``--runs-per-session`` Runs,
  cycling through the set's examples) for ``--minutes``; RSS every ``--rss-interval`` s; reports
  RSS per minute, first against last minute and the least-squares slope.
* ``maskbomb``, ``chunked``, ``slowsockets``, ``lightflood``: the attacks of issue 25
  (:mod:`attacks`); ``greedy --flood 100 --flood-via join --flood-images distinct --set camvid
  --camvid DIR`` is its flood of 100 distinct-image jobs through the browser protocol.

The scenarios live in :mod:`classroom` (students, soak), :mod:`misuse` (greedy, bigbody) and
:mod:`attacks`; the client protocol in :mod:`loadlib`, the app's events in :mod:`loadapp`,
the server process in :mod:`loadserver`, the statistics in :mod:`loadstats`.

Unless ``--url http://127.0.0.1:PORT`` names a running app, the script starts
``python app.py --port N --host 127.0.0.1 [--camvid DIR]`` itself (environment passed through,
plus ``--threads`` as ``SEGMODELS_THREADS`` and any ``--env KEY=VALUE``), waits until it answers,
samples its RSS (children included) and always stops it. With ``--url``, RSS needs
``--server-pid`` and the log checks ``--server-log``. Traffic goes to 127.0.0.1 only; every wait
is bounded (``--timeout`` per event, ``--total-timeout`` per scenario)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attacks
import classroom
import misuse
from loadlib import http_client
from loadserver import REPO_ROOT, AppServer, ServerLog, require_loopback
from loadtarget import camvid_folder, prepare

ALL_MODELS = ["unet", "unetpp", "unet3p", "deeplabv3p"]
SCENARIOS = {**classroom.SCENARIOS, **misuse.SCENARIOS, **attacks.SCENARIOS}


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
    classroom.add_parsers(sub, common, bounded)
    misuse.add_parsers(sub, common, bounded)
    attacks.add_parsers(sub, common, bounded)
    args = parser.parse_args(argv)
    if args.scenario == "soak" and "--rss-interval" not in (argv if argv is not None else sys.argv):
        args.rss_interval = 10.0
    uploads = {"students": ("images", "uploads", "--images uploads"), "greedy": ("flood_images", "distinct", "--flood-images distinct")}.get(args.scenario)
    try:
        if args.url:
            require_loopback(args.url)
        if uploads and getattr(args, uploads[0]) == uploads[1]:
            camvid_folder(args, uploads[2])
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
