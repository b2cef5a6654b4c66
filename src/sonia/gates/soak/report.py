"""The soak report: one self-contained HTML file a person can open anywhere.

Plots are drawn with matplotlib's Agg renderer straight onto `Figure` objects (no
pyplot, so no global state and no display is needed) and embedded as base64 PNG,
so the report travels as a single file inside a release bundle. It shows latency
p50/p95/p99 per route, errors per window, memory per service, and the verdict
table with every threshold beside what was observed.

Each service's memory plot also draws what the verdict judged: the warm-up
(shaded, left out of the trend), the fitted Theil-Sen trend over the judged
windows, and the threshold as a line rising at the allowed MiB/h from where the
trend starts; a series that climbs above that line is what NO-GO means.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from sonia.gates.soak.load_rows import (
    ERROR_CLASSES,
    memory_field,
    route_field,
    row_routes,
    row_services,
)
from sonia.gates.soak.stats import theil_sen_slope
from sonia.gates.soak.verdict import SoakProfile, warmup_count

__all__ = ["render_report", "write_report"]

MIB = 1024 * 1024


def _number(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)


def _count(value: Any) -> float:
    number = _number(value)
    return 0.0 if math.isnan(number) else number


def _minutes(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    return [(_number(r["start_s"]) + _number(r["end_s"])) / 120.0 for r in rows]


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(title: str, ylabel: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=(10, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title)
    axes.set_xlabel("minutes since start")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _legend(axes: Any) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", fontsize="small")


def _latency_plot(rows: Sequence[Mapping[str, Any]], route: str) -> str:
    figure, axes = _figure(f"latency of {route} (from scheduled send time)", "ms")
    x = _minutes(rows)
    for name, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
        y = [_number(r.get(route_field(route, name))) for r in rows]
        if any(not math.isnan(v) for v in y):
            axes.plot(x, y, style, label=name.removesuffix("_ms"))
    _legend(axes)
    return _png(figure)


def _errors_plot(rows: Sequence[Mapping[str, Any]], routes: Sequence[str]) -> str:
    figure, axes = _figure("errors and dropped requests per window", "requests")
    x = _minutes(rows)
    for cls in ERROR_CLASSES:
        y = [sum(_count(r.get(route_field(route, f"err_{cls}"))) for route in routes)
             for r in rows]
        if any(v > 0 for v in y):
            axes.plot(x, y, marker=".", label=cls)
    dropped = [_count(r.get("all.dropped")) for r in rows]
    if any(v > 0 for v in dropped):
        axes.plot(x, dropped, marker="x", label="dropped (generator)")
    axes.set_ylim(bottom=0)
    _legend(axes)
    return _png(figure)


def _profile(summary: Mapping[str, Any]) -> SoakProfile | None:
    """The verdict's thresholds as recorded in the summary, or None when absent."""
    recorded = summary.get("profile", {})
    thresholds = recorded.get("verdict") if isinstance(recorded, Mapping) else None
    if not isinstance(thresholds, Mapping):
        return None
    try:
        return SoakProfile(**thresholds)
    except TypeError:
        return None


def _memory_plot(rows: Sequence[Mapping[str, Any]], service: str,
                 profile: SoakProfile | None) -> tuple[str, str]:
    """The plot (base64 PNG) and a caption saying in words what it draws."""
    caption = "no thresholds recorded"
    figure, axes = _figure(f"memory (USS) of {service}", "MiB")
    x = _minutes(rows)
    y = [_number(r.get(memory_field(service))) / MIB for r in rows]
    axes.plot(x, y, label=service)
    if profile is not None:
        warmup = min(len(rows), warmup_count(len(rows), profile))
        if 0 < warmup < len(rows):
            axes.axvspan(x[0], x[warmup], color="grey", alpha=0.15, label="warm-up")
        points = [(t, v) for t, v in zip(x[warmup:], y[warmup:], strict=True)
                  if not math.isnan(v)]
        if len(points) >= 2:
            ts, vs = [t for t, _ in points], [v for _, v in points]
            slope = theil_sen_slope(ts, vs)  # MiB per minute
            intercept = sorted(v - slope * t for t, v in points)[len(points) // 2]
            ends = [ts[0], ts[-1]]
            axes.plot(ends, [intercept + slope * t for t in ends], "-", color="black",
                      label=f"fitted trend {slope * 60:+.2f} MiB/h")
            limit = profile.memory_threshold(service) / MIB / 60.0
            start = intercept + slope * ts[0]
            axes.plot(ends, [start, start + limit * (ts[-1] - ts[0])], "--", color="red",
                      label=f"threshold {limit * 60:.2f} MiB/h")
            caption = (f"fitted trend {slope * 60:+.2f} MiB/h over the judged windows; "
                       f"threshold {limit * 60:.2f} MiB/h")
        else:
            caption = "too few judged windows to fit a trend"
    _legend(axes)
    return _png(figure), caption


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return html.escape(f"{value:.6g}")
    if isinstance(value, dict | list):
        return html.escape(json.dumps(value, sort_keys=True, default=str))
    return html.escape(str(value))


def _verdict_table(verdict: Mapping[str, Any]) -> str:
    lines = ["<table><tr><th>check</th><th>kind</th><th>threshold</th><th>observed</th>"
             "<th>result</th></tr>"]
    for check in verdict.get("checks", []):
        result = "pass" if check.get("passed") else "FAIL"
        lines.append(
            f"<tr class=\"{'pass' if check.get('passed') else 'fail'}\">"
            f"<td>{_cell(check.get('name'))}</td><td>{_cell(check.get('kind', ''))}</td>"
            f"<td>{_cell(check.get('threshold'))}</td><td>{_cell(check.get('observed'))}</td>"
            f"<td>{result}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
tr.fail td { background: #fdd; } tr.pass td { background: #efe; }
.status { font-size: 1.6em; font-weight: bold; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def render_report(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """The report as an HTML string. `summary["verdict"]` is a `Verdict.to_dict()`."""
    verdict = summary.get("verdict", {})
    status = str(verdict.get("status", "UNKNOWN"))
    routes = row_routes(rows[0]) if rows else []
    services = row_services(rows[0]) if rows else []
    parts = [
        "<!doctype html>",
        "<html><head><meta charset=\"utf-8\">",
        f"<title>Sonia soak report: {html.escape(status)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Sonia soak report</h1>",
        f"<p class=\"status\">verdict: {html.escape(status)}</p>",
        f"<p>{len(rows)} windows; run {html.escape(str(summary.get('run_id', '')))}</p>",
        "<h2>Verdict</h2>",
        _verdict_table(verdict),
    ]
    if rows:
        parts.append("<h2>Latency</h2>")
        for route in routes:
            parts.append(f"<img alt=\"latency {html.escape(route)}\" "
                         f"src=\"data:image/png;base64,{_latency_plot(rows, route)}\">")
        parts.append("<h2>Errors</h2>")
        parts.append(f"<img alt=\"errors\" "
                     f"src=\"data:image/png;base64,{_errors_plot(rows, routes)}\">")
        profile = _profile(summary)
        plotted = [s for s in services
                   if any(not math.isnan(_number(r.get(memory_field(s)))) for r in rows)]
        if plotted:
            parts.append("<h2>Memory</h2>")
        for service in plotted:
            png, caption = _memory_plot(rows, service, profile)
            parts.append(f"<img alt=\"memory {html.escape(service)}\" "
                         f"src=\"data:image/png;base64,{png}\">")
            parts.append(f"<p class=\"caption\">{html.escape(service)}: "
                         f"{html.escape(caption)}</p>")
    else:
        parts.append("<p>No windows were recorded.</p>")
    parts.append("<h2>Summary</h2><pre>")
    parts.append(html.escape(json.dumps(dict(summary), indent=2, sort_keys=True, default=str)))
    parts.append("</pre></body></html>\n")
    return "\n".join(parts)


def write_report(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                 path: Path) -> Path:
    """Render the report and write it to `path` (e.g. `soak-report.html`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(rows, summary), encoding="utf-8")
    tmp.replace(path)
    return path
