"""Statistics and report lines of the load benchmark (``scripts/load_test.py``): percentiles,
slopes, errors grouped by message, plain-text tables, and the lines every scenario prints."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) with linear interpolation between the closest
    ranks, as ``numpy.percentile``'s default: position ``(n - 1) * q / 100`` of the sorted values."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, max and mean of ``values`` (None for each figure of an empty list)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values), "mean": sum(values) / len(values)}


def linear_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of ``(x, y)`` points; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters with its full length noted."""
    text = str(text)
    if len(text) <= limit:
        return " ".join(text.split())
    return f"{' '.join(text[:limit].split())}... ({len(text):,} chars in all)"


def group_errors(messages: list[str], limit: int = 200) -> list[tuple[str, int]]:
    """Error messages grouped by their text with every number replaced by ``N`` (so "Max size
    is 64 and size is 64" and "... size is 65" count together), most frequent first; each group
    is shown by its first message, shortened to ``limit`` characters."""
    groups: dict[str, list] = {}
    for message in messages:
        key = re.sub(r"\d+(\.\d+)?", "N", shorten(message, limit))
        groups.setdefault(key, [shorten(message, limit), 0])[1] += 1
    return sorted(((first, count) for first, count in groups.values()), key=lambda item: -item[1])


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, numbers right-aligned (floats with 2 decimals), None shown as ``-``."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text_rows)])


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


def result_record(result) -> dict[str, Any]:
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


def split_times(results: list) -> list[tuple[str, list[float]]]:
    done = [r for r in results if r.ok]
    rows = [("wait: submit -> result", [r.seconds for r in done]),
            ("  queued (submit -> start)", [r.started_after for r in done if r.started_after is not None]),
            ("  running (start -> result)", [r.seconds - r.started_after for r in done if r.started_after is not None])]
    first = [r.first_output_after for r in done if r.first_output_after is not None]
    if first:
        rows.append(("  first streamed output", first))
    return rows
