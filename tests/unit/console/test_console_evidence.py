"""Gate runs and release bundles, as the console shows them: read from the home's
artifacts, never judged again here, plots served as PNG files, a bundle's verification
asked of `sonia verify` itself."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_evidence import COMMIT, WAIVER, Artifacts, write_artifacts
from starlette.testclient import TestClient

from sonia.cli.release import signers_from
from sonia.home import Home
from sonia.release.signing import fingerprint
from sonia.services.gateway import evidence
from sonia.testing import in_process


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    made = Home.at(tmp_path_factory.mktemp("home"))
    made.init(base_port=17000)
    return made


@pytest.fixture(scope="module")
def runs(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return write_artifacts(home.artifacts, tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def approver(home: Home, runs: Artifacts) -> Iterator[TestClient]:
    key = home.create_api_key("approver")
    with in_process("gateway", home) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def stated(run: Path) -> dict[str, object]:
    return dict(json.loads((run / "verdict.json").read_text()))


def test_runs_are_listed_newest_first_with_their_recorded_verdicts(runs: Artifacts,
                                                                    approver: TestClient) -> None:
    listed = approver.get("/v1/gates").json()["runs"]
    assert [r["run_id"] for r in listed] == [runs.soak.name, runs.no_go.name, runs.go.name]
    by_id = {r["run_id"]: r for r in listed}
    assert by_id[runs.go.name]["status"] == "GO"
    assert by_id[runs.no_go.name]["status"] == "NO-GO"
    assert by_id[runs.no_go.name]["checks_failed"] > 0
    for run in (runs.go, runs.no_go, runs.soak):
        entry = by_id[run.name]
        verdict = stated(run)
        assert (entry["gate"], entry["profile"]) == (verdict["gate"], verdict["profile"])
        assert entry["source"] == {"commit": COMMIT, "dirty": False}
    assert by_id[runs.soak.name]["plots"] == 5


def test_a_run_shows_every_check_its_parameters_and_files(runs: Artifacts,
                                                           approver: TestClient) -> None:
    shown = approver.get(f"/v1/gates/{runs.no_go.name}").json()
    recorded = stated(runs.no_go)
    assert shown["verdict_checks"] == recorded["verdict"]["checks"]  # type: ignore[index]
    assert shown["parameters"] == recorded["parameters"]
    assert {f["name"] for f in shown["files"]} == {
        "go-no-go-summary.json", "provenance.json", "verdict.json"}


def test_soak_plots_are_served_as_png(runs: Artifacts, approver: TestClient) -> None:
    titles = approver.get(f"/v1/gates/{runs.soak.name}").json()["plot_titles"]
    assert titles[:2] == ["latency chat", "latency actions"]
    plot = approver.get(f"/v1/gates/{runs.soak.name}/plots/0")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG\r\n\x1a\n")
    missing = approver.get(f"/v1/gates/{runs.soak.name}/plots/{len(titles)}")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("run_id", ["release", "..", "20300101T120100Z-x-zzzzzz",
                                    "20300101T999999Z-go-no-go-000000"])
def test_a_name_that_is_no_run_is_not_found(approver: TestClient, run_id: str) -> None:
    answer = approver.get(f"/v1/gates/{run_id}")
    assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")


def test_a_linked_run_folder_is_not_followed(home: Home, runs: Artifacts,
                                             tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "verdict.json").write_text('{"gate": "stolen"}')
    link = home.artifacts / "20300101T130000Z-soak-abcdef"
    os.symlink(elsewhere, link)
    try:
        assert evidence.run_dir(home.artifacts, link.name) is None
        assert link.name not in [r["run_id"] for r in evidence.list_runs(home.artifacts)]
    finally:
        link.unlink()


def test_a_plot_that_is_not_png_is_not_served(tmp_path: Path) -> None:
    run = tmp_path / "20300101T120000Z-soak-000000"
    run.mkdir()
    (run / "soak-report.html").write_text(
        '<img alt="fake" src="data:image/png;base64,PHN2Zz48L3N2Zz4=">')  # "<svg></svg>"
    assert evidence.plot_png(run, 0) is None


def assert_signed_by_another_key_than_the_pinned(reason: str) -> None:
    """What `sonia verify` says of a bundle signed with a throwaway key: that its key
    is not the release key the checkout's signers file pins, or that none is pinned."""
    signers = signers_from(None)  # the signers `sonia verify` reads by default
    if signers is None or signers.release is None:
        assert "not pinned" in reason
    else:
        expected = f"expected {fingerprint(signers.release)}"
        assert reason.startswith("signed by key ") and reason.endswith(expected), reason


def test_a_bundle_shows_its_waivers_sign_offs_and_verification(runs: Artifacts,
                                                                approver: TestClient) -> None:
    releases = approver.get("/v1/releases").json()["releases"]
    assert [r["name"] for r in releases] == ["release-candidate-1"]
    bundle = releases[0]
    assert (bundle["tag"], bundle["commit"]) == ("release-candidate-1", COMMIT)
    assert bundle["waivers"] == [WAIVER]
    assert [(s["role"], s["signer"]) for s in bundle["signoffs"]] == [("qa", "Quinn QA")]
    assert bundle["gates"] == [{"gate": "go-no-go", "status": "GO"}]
    verify = bundle["verify"]
    assert verify["ok"] is False and verify["exit_code"] == 1
    assert_signed_by_another_key_than_the_pinned(verify["reason"])


def test_a_user_key_sees_no_evidence(home: Home, runs: Artifacts) -> None:
    user = home.create_api_key("user")
    with in_process("gateway", home) as client:
        for path in ("/v1/gates", f"/v1/gates/{runs.go.name}", "/v1/releases"):
            answer = client.get(path, headers={"Authorization": f"Bearer {user}"})
            assert answer.status_code == 403, path
