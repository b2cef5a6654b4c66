"""The security verdict, assembled by the pure judge from recorded evidence rows.

Each test writes a run directory by hand (the rows a gate would have recorded)
and checks what `judge` makes of it: a case that answered the right refusal but
changed a canary is NO-GO; fuzzing that never reached a 2xx on one operation is
INVALID, naming it; the stored `passed` flags are never trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gate_runs import CLEAN_EFFECTS, security, security_case, security_cases, security_fuzz

from sonia.errors import ConfigError
from sonia.gates.security.effects import decoded_views, secret_slices
from sonia.gates.security.gate import judge as gate_judge
from sonia.gates.security.judge import judge, row_failures

CLEAN = CLEAN_EFFECTS
_row = security_case
_fuzz = security_fuzz


def _good_rows() -> list[dict[str, Any]]:
    return security_cases()


def _run(tmp_path: Path, rows: list[dict[str, Any]], *, fuzz: dict[str, Any] | None = None,
         corpus_rows: int = 2, corpus_effects: dict[str, Any] | None = None) -> Path:
    def recorded(data: dict[str, Any]) -> None:
        data["cases"] = rows
        data["fuzz"] = fuzz if fuzz is not None else security_fuzz()
        data["corpus"]["effects"] = CLEAN if corpus_effects is None else corpus_effects
        # what an earlier, lenient gate wrote: the judge must not read it
        data["verdict"] = {"gate": "security", "status": "GO", "checks": []}

    return security(tmp_path / "run", {"min_cases": 10}, recorded, corpus_rows=corpus_rows)


def _check(run: Path, name: str) -> Any:
    return next(c for c in judge(run).checks if c.name == name)


def test_a_clean_run_is_go(tmp_path: Path) -> None:
    run = _run(tmp_path, _good_rows())
    assert judge(run).status == "GO"
    assert gate_judge is judge, "the gate module exposes the one judge"


def test_answered_403_but_the_canary_changed_is_no_go(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["effects"] = {**CLEAN, "changed": ["canary ../canary.txt"]}
    run = _run(tmp_path, rows)
    assert judge(run).status == "NO-GO"
    assert "canary ../canary.txt" in _check(run, "cases_failed").detail


def test_a_404_with_a_file_created_outside_is_no_go(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["expected"] = {"status": 404, "code": "NOT_FOUND"}
    rows[0]["got"] = {"status": 404, "code": "NOT_FOUND"}
    rows[0]["effects"] = {**CLEAN, "created_outside": ["home/escaped.txt"]}
    assert judge(_run(tmp_path, rows)).status == "NO-GO"


def test_a_refusal_that_wrote_in_the_workspace_is_no_go(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["effects"] = {**CLEAN, "tree_changes": [
        {"tree": "workspace", "path": "approvals/user.txt", "change": "created"}]}
    run = _run(tmp_path, rows)
    assert judge(run).status == "NO-GO"
    assert "created approvals/user.txt" in _check(run, "cases_failed").detail


def test_a_write_the_case_may_make_passes_and_only_that_one() -> None:
    row = _row("approve-concurrently", "approvals", status=409, code="ALREADY_DECIDED",
               expected={"status": 409, "code": "ALREADY_DECIDED",
                         "may_write": ["approvals/race.txt"]})
    row["effects"] = {**CLEAN, "tree_changes": [
        {"tree": "workspace", "path": "approvals/race.txt", "change": "created"}]}
    assert row_failures(row) == []
    row["effects"]["tree_changes"].append(
        {"tree": "workspace", "path": "approvals/race.txt.bak", "change": "created"})
    assert row_failures(row) == ["wrote in the workspace: ['created approvals/race.txt.bak']"]
    row["expected"]["may_write"] = ["approvals"]  # a folder allows what is inside it
    assert row_failures(row) == []
    row["expected"]["may_write"] = ["approvals/race.txt"]
    row["effects"]["tree_changes"] = [  # the folder a `parents: true` write made on its way
        {"tree": "workspace", "path": "approvals", "change": "created"},
        {"tree": "workspace", "path": "approvals/race.txt", "change": "created"}]
    assert row_failures(row) == []
    row["effects"]["tree_changes"][0]["change"] = "removed"
    assert row_failures(row) == ["wrote in the workspace: ['removed approvals']"]


def test_a_case_whose_workspace_was_not_watched_is_invalid(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["effects"] = {**CLEAN, "tree_entries": 0}
    run = _run(tmp_path, rows)
    assert judge(run).status == "INVALID"
    assert rows[0]["id"] in _check(run, "effects_recorded").detail


def test_a_marker_holding_zero_is_an_execution_as_root(tmp_path: Path) -> None:
    row = _row("repo-ext", "repositories", expected={"status": "<500", "code": None},
               got={"status": 200, "code": None},
               effects={**CLEAN, "markers": [{"path": "/w/m", "uid": 0, "content": "0"}]})
    why = row_failures(row)
    assert why and "as root" in why[0]


def test_the_stored_passed_flag_is_not_trusted(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[1].update(leaks=["split-secret piece 'abcdefgh'"], passed=True, why="")
    assert judge(_run(tmp_path, rows)).status == "NO-GO"


def test_a_livez_stall_over_the_limit_is_no_go(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[2]["expected"] = {"status": "<500", "code": None}
    rows[2]["got"] = {"status": 400, "code": "INVALID_ARGUMENT",
                      "livez_max_s": {"gateway": 31.8, "eva": 0.01}}
    run = _run(tmp_path, rows)
    assert judge(run).status == "NO-GO"
    assert "gateway" in _check(run, "cases_failed").detail


def test_any_4xx_and_below_500_expectations() -> None:
    any4 = {"status": "4xx", "code": None}
    assert not row_failures(_row("a", expected=any4, got={"status": 422, "code": "X"}))
    assert row_failures(_row("a", expected=any4, got={"status": 500, "code": "INTERNAL"}))
    assert row_failures(_row("a", expected={"status": "<500", "code": None},
                             got={"status": 500, "code": "INTERNAL"}))


def test_fuzz_without_a_2xx_on_an_operation_is_invalid_naming_it(tmp_path: Path) -> None:
    fuzz = _fuzz(**{"gateway POST /v1/actions": {"2xx": 4, "4xx": 9},
                    "eva POST /v1/decisions/{action_id}/approve": {"2xx": 0, "4xx": 7}})
    run = _run(tmp_path, _good_rows(), fuzz=fuzz)
    assert judge(run).status == "INVALID"
    assert "eva POST /v1/decisions/{action_id}/approve (no 2xx)" in _check(
        run, "fuzz_reached_2xx_and_4xx").detail


def test_an_operation_without_inputs_needs_no_4xx(tmp_path: Path) -> None:
    fuzz = _fuzz(**{"gateway GET /v1/whoami": {"2xx": 1, "4xx": 0, "inputs": 0},
                    "gateway GET /v1/tools": {"2xx": 0, "4xx": 0, "inputs": 0}})
    run = _run(tmp_path, _good_rows(), fuzz=fuzz)
    assert _check(run, "fuzz_reached_2xx_and_4xx").detail == "gateway GET /v1/tools (no 2xx)"


def test_a_live_case_without_effect_evidence_is_invalid(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["effects"] = None
    run = _run(tmp_path, rows)
    assert judge(run).status == "INVALID"
    assert rows[0]["id"] in _check(run, "effects_recorded").detail


def test_a_missing_category_is_invalid(tmp_path: Path) -> None:
    rows = [r for r in _good_rows() if r["category"] != "repositories"]
    assert judge(_run(tmp_path, rows)).status == "INVALID"


def test_corpus_effects_and_short_corpus(tmp_path: Path) -> None:
    effects = {**CLEAN, "changed": ["sentinel notes.txt"]}
    assert judge(_run(tmp_path, _good_rows(), corpus_effects=effects)).status == "NO-GO"
    run = _run(tmp_path, _good_rows())
    (run / "security-corpus.jsonl").write_text("")
    assert judge(run).status == "INVALID"


def test_missing_or_malformed_evidence_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        judge(tmp_path)
    (tmp_path / "security-tests.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        judge(tmp_path)
    (tmp_path / "security-tests.json").write_text('{"cases": 3}')
    with pytest.raises(ConfigError, match="no list of cases"):
        judge(tmp_path)


def test_secret_pieces_are_found_plain_and_encoded() -> None:
    import base64

    secret = "S3cretValueThatIsLongEnough42xy"
    assert secret_slices(f"...{secret[5:14]}...", secret)
    assert secret_slices(base64.b64encode(secret[10:22].encode()).decode(), secret)
    assert secret_slices(secret[3:15].encode().hex(), secret)
    assert not secret_slices("nothing of it here, only S3cret", secret)
    assert decoded_views("plain") == ["plain"]
