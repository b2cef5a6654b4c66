"""The soak report is one self-contained HTML file with its plots inline."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from sonia.cli.gates import DETAIL_CHARS, failure_details
from sonia.gates.common.evidence import CRITERION, Check, Verdict
from sonia.gates.registry import GateRun
from sonia.gates.soak.load_rows import memory_field, route_field, row_columns
from sonia.gates.soak.report import write_report


def rows(windows: int = 12) -> list[dict[str, Any]]:
    result = []
    for i in range(windows):
        row: dict[str, Any] = dict.fromkeys(row_columns(["chat"], ["gateway"]), 0)
        row.update({"window": i, "start_s": 10.0 * i, "end_s": 10.0 * (i + 1),
                    route_field("chat", "count"): 10, route_field("chat", "p50_ms"): 5.0,
                    route_field("chat", "p95_ms"): 9.0 + i, route_field("chat", "p99_ms"): "",
                    route_field("chat", "err_5xx"): 1 if i == 3 else 0,
                    memory_field("gateway"): 50_000_000 + i})
        result.append(row)
    return result


def test_report_is_a_single_file_with_plots_and_the_verdict(tmp_path: Path) -> None:
    verdict = Verdict.of("soak", [Check("error rate <chat>", 0.005, 0.01, False)])
    path = write_report(rows(), {"verdict": verdict.to_dict(), "run_id": "r1"},
                        tmp_path / "soak-report.html")
    text = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3  # latency of chat, errors, memory
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "verdict: NO-GO" in text
    assert "error rate &lt;chat&gt;" in text  # escaped, never raw HTML
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from elsewhere


def test_report_of_an_empty_run_still_renders(tmp_path: Path) -> None:
    path = write_report([], {"verdict": Verdict.of("soak", []).to_dict()},
                        tmp_path / "r.html")
    assert "No windows were recorded" in path.read_text()


def test_memory_plots_show_the_fitted_trend_and_the_threshold(tmp_path: Path) -> None:
    """One plot per service, each captioned with the trend fitted after warm-up and
    the threshold it was judged against, both in MiB/h."""
    profile = {"verdict": {"warmup_windows": 2, "memory_slope_bytes_per_hour": 1024 * 1024}}
    leaking = rows(40)
    for i, row in enumerate(leaking):  # 10-second windows: +6 MiB/h
        row[memory_field("gateway")] = 50 * 1024 * 1024 + i * 1024 * 1024 // 60
    path = write_report(leaking, {"verdict": Verdict.of("soak", []).to_dict(),
                                  "profile": profile}, tmp_path / "r.html")
    text = path.read_text()
    assert "gateway: fitted trend +6.00 MiB/h over the judged windows; " \
           "threshold 1.00 MiB/h" in text


def test_memory_plots_without_recorded_thresholds_say_so(tmp_path: Path) -> None:
    path = write_report(rows(), {"verdict": Verdict.of("soak", []).to_dict()},
                        tmp_path / "r.html")
    assert "gateway: no thresholds recorded" in path.read_text()


def test_a_failed_run_prints_why_each_check_failed_not_only_its_name(tmp_path: Path) -> None:
    verdict = Verdict.of("security", [
        Check("leaked_secret_slices", 0, 2, False, kind=CRITERION,
              detail="history-exfil-reply: AbCdEfGh;\n memory: AbCdEfGh"),
        Check("unapproved_side_effects", 0, 1, False, kind=CRITERION, detail="x" * 5000),
        Check("scenarios", ">= 30", 43, True, kind=CRITERION, detail="fine")])
    lines = failure_details([GateRun("security", "quick", verdict, tmp_path, 1.0)])
    assert lines[0] == ("security: leaked_secret_slices: history-exfil-reply: AbCdEfGh; "
                        "memory: AbCdEfGh")
    assert lines[1].endswith("...") and len(lines[1]) < DETAIL_CHARS + 60
    assert len(lines) == 2, "a passed check is not printed"
