"""The security gate's verdict, re-derived from its evidence files alone.

`judge(run_dir)` reads `security-tests.json` and `security-corpus.jsonl` and
decides GO / NO-GO / INVALID without the stack, the machine or the stored
`passed` flags: each case row is re-judged from what was recorded about it
(`row_failures`), the same function `run_case` uses while the gate runs, so the
gate and the release step can never disagree.

A case row fails when any of these holds, whatever else it says:

    status      the answer is not the expected status and code ("4xx": any 4xx;
                "<500": any answer but a server error, for cases where refusing
                and running harmlessly are both right)
    leaks       a planted secret (or an 8-character slice of one, also decoded
                from base64/hex) was in an answer
    effects     a canary or sentinel changed, a name appeared or vanished beside
                or above the workspace, a name in the workspace appeared, vanished
                or changed outside the paths the case may write, a marker file or
                marker process appeared (an execution payload ran); a 404 or 403
                does not excuse it
    stall       a service's /livez took longer than STALL_LIMIT_S to answer
    check       the case's own recorded check failed (e.g. a write ran twice)

Validity (INVALID, not NO-GO): the corpus present and fully sent, enough cases,
every category present, every live case carrying effect evidence, and fuzzing
that reached at least one 2xx and one validated 4xx on every operation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sonia.errors import ConfigError
from sonia.gates.common.evidence import CRITERION, VALIDITY, Check, Verdict
from sonia.gates.security import injection

__all__ = ["CATEGORIES", "STALL_LIMIT_S", "judge", "row_failures"]

STALL_LIMIT_S = 1.0
"""Longest acceptable /livez answer while adversarial bodies are in flight."""
CATEGORIES = ("service-auth", "grants", "approvals", "commands", "paths", "secrets",
              "sockets", "configuration", "repositories", "exfiltration", "robustness")
"""Every category a security run must hold at least `MIN_PER_CATEGORY` cases of."""
MIN_PER_CATEGORY = 3
TESTS_FILE = "security-tests.json"
CORPUS_FILE = "security-corpus.jsonl"


def _status_matches(expected: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    want, status = expected.get("status"), got.get("status")
    if want == "4xx":
        return isinstance(status, int) and 400 <= status < 500
    if want == "<500":  # refused or ran: the effects and leaks decide
        return isinstance(status, int) and 200 <= status < 500
    return (status, got.get("code")) == (want, expected.get("code"))


def _unasked_writes(changes: list[Mapping[str, Any]], may_write: list[str]) -> list[str]:
    """Workspace changes outside `may_write`: a path, what lies under it, and the folders
    a write creates on the way to it (`parents: true`)."""
    def allowed(path: str, change: str) -> bool:
        return any(path == own or path.startswith(own.rstrip("/") + "/")
                   or (change == "created" and own.startswith(path + "/"))
                   for own in may_write)
    return [f"{c.get('change')} {c.get('path')}" for c in changes
            if not allowed(str(c.get("path")), str(c.get("change")))]


def row_failures(row: Mapping[str, Any]) -> list[str]:
    """Why one recorded case failed (empty: it passed), from its recorded observations."""
    expected, got = row.get("expected") or {}, row.get("got") or {}
    why: list[str] = []
    if "error" in got:
        why.append(f"the attempt raised {got['error']}")
    elif not _status_matches(expected, got):
        why.append(f"answered {got.get('status')} {got.get('code')}, expected "
                   f"{expected.get('status')} {expected.get('code')}")
    if row.get("leaks"):
        why.append(f"the answers leaked {row['leaks']}")
    effects = row.get("effects") or {}
    for key, what in (("changed", "changed"), ("created_outside", "created outside"),
                      ("removed_outside", "removed outside")):
        if effects.get(key):
            why.append(f"{what}: {effects[key]}")
    unasked = _unasked_writes(effects.get("tree_changes") or [],
                              expected.get("may_write") or [])
    if unasked:
        why.append(f"wrote in the workspace: {unasked[:10]}")
    markers = effects.get("markers") or []
    if markers:
        roots = [m for m in markers if str(m.get("content", "")).strip() == "0"
                 or m.get("uid") == 0]
        why.append(f"a payload ran: marker files {[m['path'] for m in markers]}"
                   + (" (as root)" if roots else ""))
    if effects.get("marker_processes"):
        why.append(f"a payload ran: marker processes {effects['marker_processes']}")
    stalls = {name: s for name, s in (got.get("livez_max_s") or {}).items()
              if s is None or s > STALL_LIMIT_S}
    if stalls:
        why.append(f"/livez stalled over {STALL_LIMIT_S} s: {stalls}")
    check = row.get("check") or {}
    if check and not check.get("ok", True):
        why.append(str(check.get("note") or "the case's own check failed"))
    return why


def _load(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = run_dir / TESTS_FILE
    try:
        tests = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing: no security run to judge", key="run_dir") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}", key="run_dir") from exc
    if not isinstance(tests, dict) or not isinstance(tests.get("cases"), list):
        raise ConfigError(f"{path} has no list of cases", key="run_dir")
    rows: list[dict[str, Any]] = []
    corpus_path = run_dir / CORPUS_FILE
    if corpus_path.exists():
        for number, line in enumerate(corpus_path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ConfigError(f"{corpus_path}:{number} is not JSON: {exc}",
                                  key="run_dir") from exc
    return tests, rows


def _fuzz_gaps(fuzz: Mapping[str, Any]) -> list[str]:
    """Operations fuzzing never answered with a 2xx, or (when they take any input to
    make invalid) never with a validated 4xx."""
    gaps = []
    for operation, counts in sorted((fuzz.get("per_operation") or {}).items()):
        wanted = ("2xx", "4xx") if counts.get("inputs", 1) else ("2xx",)
        missing = [kind for kind in wanted if not counts.get(kind)]
        if missing:
            gaps.append(f"{operation} (no {' and no '.join(missing)})")
    return gaps


def _effects_complete(row: Mapping[str, Any]) -> bool:
    """The row's effects were measured: watched files and the workspace's tree."""
    effects = row.get("effects") or {}
    return bool(effects.get("files_watched")) and bool(effects.get("tree_entries"))


def judge(run_dir: Path) -> Verdict:
    """The security verdict of the run in `run_dir`, from its evidence files only."""
    tests, corpus_rows = _load(run_dir)
    cases: list[dict[str, Any]] = tests["cases"]
    profile = tests.get("profile") or {}
    min_cases = int(profile.get("min_cases", 60))
    failed = {str(row.get("id")): row_failures(row) for row in cases}
    failed = {case_id: why for case_id, why in failed.items() if why}
    counts: dict[str, int] = {}
    for row in cases:
        counts[str(row.get("category"))] = counts.get(str(row.get("category")), 0) + 1
    thin = sorted(c for c in CATEGORIES if counts.get(c, 0) < MIN_PER_CATEGORY)
    no_effects = sorted(str(row.get("id")) for row in cases
                        if row.get("category") != "configuration" and "error" not in
                        (row.get("got") or {}) and not _effects_complete(row))
    corpus = tests.get("corpus") or {}
    expected_payloads = int(corpus.get("payloads_expected", 0))
    corpus_failures = [r for r in corpus_rows if r.get("why") or r.get("leaks")]
    corpus_effects = corpus.get("effects") or {}
    corpus_effect_why = row_failures({"expected": {"status": "4xx"}, "got": {"status": 400},
                                      "effects": corpus_effects})
    fuzz = tests.get("fuzz") or {}
    gaps = _fuzz_gaps(fuzz)
    checks = [
        Check("corpus_present", True, bool(corpus.get("present")), bool(corpus.get("present")),
              kind=VALIDITY, detail=str(corpus.get("root", ""))),
        Check("adversarial_cases", f">= {min_cases}", len(cases), len(cases) >= min_cases,
              kind=VALIDITY),
        Check("categories_covered", f">= {MIN_PER_CATEGORY} cases in each of "
              f"{len(CATEGORIES)} categories", counts, not thin, kind=VALIDITY,
              detail=f"too few: {thin}" if thin else ""),
        Check("effects_recorded", "every live case", len(no_effects), not no_effects,
              kind=VALIDITY, detail=", ".join(no_effects[:20])),
        Check("corpus_payloads_sent", expected_payloads, len(corpus_rows),
              len(corpus_rows) == expected_payloads > 0, kind=VALIDITY),
        Check("cases_failed", 0, len(failed), not failed, kind=CRITERION,
              detail="; ".join(f"{k}: {' / '.join(v)}" for k, v in list(failed.items())[:30])),
        Check("corpus_failed", 0, len(corpus_failures), not corpus_failures, kind=CRITERION,
              detail="; ".join(f"{r.get('file')}:{r.get('line')} {r.get('kind')}: "
                               f"{r.get('why') or r.get('leaks')}"
                               for r in corpus_failures[:10])),
        Check("corpus_effects", "none", corpus_effect_why, not corpus_effect_why
              and _effects_complete({"effects": corpus_effects}), kind=CRITERION),
        Check("fuzz_operations", "> 0", fuzz.get("operations", 0),
              int(fuzz.get("operations", 0)) > 0, kind=VALIDITY),
        Check("fuzz_reached_2xx_and_4xx", "every operation", len(gaps), not gaps,
              kind=VALIDITY, detail="; ".join(gaps[:40])),
        Check("fuzz_server_errors", 0, fuzz.get("server_errors", 0),
              int(fuzz.get("server_errors", 0)) == 0),
        Check("fuzz_findings", 0, len(fuzz.get("findings") or []), not fuzz.get("findings"),
              detail="; ".join(f"{f.get('service')} {f.get('operation')}: "
                               f"{str(f.get('problem'))[:120]}"
                               for f in (fuzz.get("findings") or [])[:10])),
    ]
    # The prompt-injection suite (a model that obeys injected instructions) is part of
    # the gate: its checks join the verdict under their own names.
    injected = injection.judge(run_dir)
    checks += [Check(f"injection: {c.name}", c.threshold, c.observed, c.passed, c.kind,
                     c.detail) for c in injected.checks]
    return Verdict.of("security", checks, {"cases_failed": 0, "corpus_failed": 0,
                                           "min_cases": min_cases,
                                           "stall_limit_s": STALL_LIMIT_S})
