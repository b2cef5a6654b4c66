"""`sonia release`, `sonia release keygen|sign-off` and `sonia verify`: signed release bundles.

`sonia release --tag TAG` gathers the newest run of every gate in this build from
the home's `artifacts/`, and refuses unless the git tree is clean, every gate ran
and said GO, and every gate's evidence was produced on this very commit (HEAD)
from a clean tree. It then writes `artifacts/release/<TAG>/` (every gate's
evidence, RELEASE_CHECKLIST.md, MANIFEST.json, MANIFEST.json.sig), and makes an
annotated git tag whose message carries the manifest's sha256.

The release key is `secrets/release_key.pem` in the home (0600, like every
secret; its public half `release_key.pub.pem` beside it is what verifiers pin).
`sonia release` creates it on first use and says so; `sonia release keygen`
makes it (or any role's personal key, with `--out`) explicitly.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError, ReleaseError
from sonia.gates import registry
from sonia.gates.evidence import Verdict, capture_environment
from sonia.home import Home
from sonia.release.checklist import ROLES
from sonia.release.manifest import MANIFEST_NAME, build_bundle
from sonia.release.signing import fingerprint, keygen, load_public_key, public_key_path
from sonia.release.signoff import sign_off
from sonia.release.verify import verify_bundle

if TYPE_CHECKING:
    from sonia.gates.registry import GateRun

console = Console()
err_console = Console(stderr=True)

RELEASE_KEY = "release_key.pem"


# git --------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReleaseError(f"git {' '.join(args)} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def source_repo(repo: Path | None = None) -> Path:
    """The top of the git checkout at `repo` (default: the current directory)."""
    where = (repo or Path.cwd()).resolve()
    try:
        top = _git(where, "rev-parse", "--show-toplevel").strip()
    except ReleaseError as exc:
        raise ReleaseError(f"{where} is not a git checkout: a release is made from the "
                           f"source tree the gates ran on ({exc})") from exc
    return Path(top)


def head_commit(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD").strip()


def uncommitted(repo: Path) -> list[str]:
    """`git status --porcelain` lines: changed, staged or untracked (not ignored) files."""
    return [line for line in _git(repo, "status", "--porcelain").splitlines() if line.strip()]


def tag_exists(repo: Path, tag: str) -> bool:
    proc = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"],
                          cwd=repo, capture_output=True, text=True, timeout=30)
    return proc.returncode == 0


def default_tag(repo: Path) -> str:
    """`rc-<short commit>`: what `gate all` tags when no --tag is given."""
    return f"rc-{head_commit(repo)[:12]}"


def _check_tag_name(repo: Path, tag: str) -> None:
    proc = subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], cwd=repo,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "/" in tag:
        raise ConfigError(f"{tag!r} is not a usable tag name (letters, digits, '.', '-', '_')",
                          key="tag")


# evidence ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GateEvidence:
    gate: str
    run_dir: Path
    verdict: dict[str, Any]
    files: dict[str, Path]
    commit: str | None
    dirty: bool | None


def read_gate_evidence(gate: str, run_dir: Path) -> GateEvidence:
    """What one run of `gate` left in `run_dir`; ReleaseError when it is incomplete."""
    verdict_file = run_dir / "verdict.json"
    if not verdict_file.is_file():
        raise ReleaseError(f"gate {gate}: {verdict_file} is missing (the run did not finish)")
    try:
        recorded = json.loads(verdict_file.read_text())
        verdict = Verdict.from_dict(recorded["verdict"]).to_dict()
    except (ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"gate {gate}: {verdict_file} is not a valid verdict: {exc}") from exc
    if recorded.get("gate") != gate:
        raise ReleaseError(f"{verdict_file} is a verdict of gate {recorded.get('gate')!r}, "
                           f"not {gate}")
    files = {f"{gate}/verdict.json": verdict_file}
    commits: set[str] = set()
    dirty: bool | None = None
    for name in registry.EVIDENCE[gate]:
        path = run_dir / name
        if not path.is_file():
            raise ReleaseError(f"gate {gate}: evidence file {path} is missing")
        files[f"{gate}/{name}"] = path
        if name.endswith(".json"):
            try:
                git = (json.loads(path.read_text()).get("environment") or {}).get("git") or {}
            except (ValueError, AttributeError):
                raise ReleaseError(f"gate {gate}: {path} is not valid JSON") from None
            if git.get("commit"):
                commits.add(str(git["commit"]))
                dirty = bool(dirty) or bool(git.get("dirty"))
    if len(commits) > 1:
        raise ReleaseError(f"gate {gate}: its evidence names several commits {sorted(commits)}")
    return GateEvidence(gate, run_dir, verdict, files, commits.pop() if commits else None,
                        dirty)


def newest_runs(home: Home) -> dict[str, Path]:
    """The newest finished run directory of each gate under the home's artifacts/."""
    found: dict[str, Path] = {}
    if not home.artifacts.is_dir():
        return found
    for verdict_file in sorted(home.artifacts.glob("*/verdict.json")):  # run ids sort by time
        try:
            gate = json.loads(verdict_file.read_text()).get("gate")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(gate, str):
            found[gate] = verdict_file.parent
    return found


# the release --------------------------------------------------------------------------
def release_key(home: Home) -> tuple[Path, bool]:
    """The home's release signing key, created when missing; (path, created now)."""
    path = home.secrets / RELEASE_KEY
    if path.exists():
        return path, False
    home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    keygen(path)
    return path, True


def make_release(home: Home, repo: Path, tag: str, runs: Mapping[str, Path]) -> Path:
    """Check everything, build and sign `artifacts/release/<tag>/`, then tag HEAD.

    Every refusal reason found is listed in one ReleaseError.
    """
    _check_tag_name(repo, tag)
    head = head_commit(repo)
    problems: list[str] = []
    dirty = uncommitted(repo)
    if dirty:
        problems.append(f"the working tree is not clean ({len(dirty)} changed or untracked "
                        f"files, e.g. {dirty[0].strip()!r}): commit or remove them")
    if tag_exists(repo, tag):
        problems.append(f"tag {tag} already exists: choose another --tag")
    out = home.artifacts / "release" / tag
    if out.exists():
        problems.append(f"{out} already exists")
    evidence: list[GateEvidence] = []
    for gate in registry.available():
        if gate not in runs:
            problems.append(f"gate {gate} has no run in {home.artifacts}: run `sonia gate {gate}`")
            continue
        try:
            found = read_gate_evidence(gate, runs[gate])
        except ReleaseError as exc:
            problems.append(str(exc))
            continue
        if found.verdict["status"] != "GO":
            problems.append(f"gate {gate} said {found.verdict['status']} ({found.run_dir.name})")
        if found.commit is None:
            problems.append(f"gate {gate}: its evidence does not record a git commit")
        elif found.commit != head:
            problems.append(f"gate {gate}: evidence is from commit {found.commit[:12]}, "
                            f"HEAD is {head[:12]}: run the gate again on this commit")
        elif found.dirty:
            problems.append(f"gate {gate}: evidence was produced on a tree with uncommitted "
                            "changes")
        evidence.append(found)
    if problems:
        raise ReleaseError("release refused:\n  - " + "\n  - ".join(problems))
    key, created = release_key(home)
    if created:
        console.print(f"created the release key {key} (public half "
                      f"{public_key_path(key)}): publish the public key to verifiers")
    files = {name: path for e in evidence for name, path in e.files.items()}
    build_bundle(out, files, commit=head, tag=tag,
                 verdicts=[e.verdict for e in evidence],
                 environment=capture_environment(repo=repo) | {
                     "runs": {e.gate: e.run_dir.name for e in evidence}},
                 signing_key=key)
    result = verify_bundle(out, public_key_path(key))
    if not result.ok:
        raise ReleaseError(f"the new bundle does not verify: {result.first_bad_file}: "
                           f"{result.reason}")
    digest = hashlib.sha256((out / MANIFEST_NAME).read_bytes()).hexdigest()
    message = (f"Sonia release {tag}\n\nMANIFEST.json sha256: {digest}\n"
               f"gates: {', '.join(f'{e.gate}=GO' for e in evidence)}\n"
               f"signed by release key {result.signer}\n")
    _git(repo, "tag", "-a", tag, "-m", message, head)
    return out


def release_from_runs(home: Home, runs: Sequence[GateRun], tag: str,
                      repo: Path | None = None) -> Path:
    """The release step of `sonia gate all`: a bundle from the runs just made."""
    top = source_repo(repo)
    out = make_release(home, top, tag, {r.gate: r.run_dir for r in runs})
    _print_release(out, tag)
    return out


def _print_release(out: Path, tag: str) -> None:
    digest = hashlib.sha256((out / MANIFEST_NAME).read_bytes()).hexdigest()
    console.print(f"[green]release {tag}[/green]: bundle {out}")
    console.print(f"  MANIFEST.json sha256 {digest}; annotated git tag {tag} created")
    console.print(f"  verify with: sonia verify {out} --key <release_key.pub.pem>")


def _runs_from_dirs(dirs: Sequence[Path]) -> dict[str, Path]:
    runs: dict[str, Path] = {}
    for run_dir in dirs:
        try:
            gate = json.loads((run_dir / "verdict.json").read_text())["gate"]
        except (OSError, ValueError, KeyError) as exc:
            raise ReleaseError(f"{run_dir} is not a finished gate run: {exc}") from exc
        runs[str(gate)] = run_dir.resolve()
    return runs


def _roles(values: Sequence[str]) -> list[str]:
    roles = [r.strip() for v in values for r in v.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise typer.BadParameter(f"unknown roles {unknown}; roles are {', '.join(ROLES)}")
    return roles


def _role_keys(values: Sequence[str]) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for value in values:
        role, sep, path = value.partition("=")
        if not sep or role not in ROLES:
            raise typer.BadParameter(f"--role-key takes ROLE=PUBLIC_KEY with a role in "
                                     f"{', '.join(ROLES)}, got {value!r}")
        keys[role] = Path(path)
    return keys


def register(app: typer.Typer) -> None:
    release_app = typer.Typer(invoke_without_command=True,
                              no_args_is_help=False)
    app.add_typer(release_app, name="release")

    @release_app.callback()
    def release(
        ctx: typer.Context,
        home: HomeOption = None,
        tag: Annotated[str, typer.Option(help="the release tag (default rc-<commit>)")] = "",
        repo: Annotated[Path | None, typer.Option(
            help="the git checkout the gates ran on (default: the current directory)")] = None,
        run: Annotated[list[Path] | None, typer.Option(
            help="use this gate run directory (repeatable; default: each gate's newest)")
        ] = None,
    ) -> None:
        """Bundle, sign and tag the evidence of every gate (refuses unless all is in order)."""
        if ctx.invoked_subcommand is not None:
            return
        h = resolve_home(home)
        if not h.exists:
            raise ConfigError(f"no Sonia home at {h.root}: run the gates first", key="home")
        top = source_repo(repo)
        chosen = tag or default_tag(top)
        runs = newest_runs(h) | (_runs_from_dirs(run) if run else {})
        out = make_release(h, top, chosen, runs)
        _print_release(out, chosen)

    @release_app.command("keygen")
    def keygen_command(
        home: HomeOption = None,
        out: Annotated[Path | None, typer.Option(
            help="private key file to create (default: the home's secrets/release_key.pem); "
                 "a person signing off makes their own")] = None,
    ) -> None:
        """Make an Ed25519 key pair: the private PEM (0600) and its .pub.pem twin."""
        if out is None:
            h = resolve_home(home)
            if not h.exists:
                raise ConfigError(f"no Sonia home at {h.root}: run `sonia init`", key="home")
            h.secrets.mkdir(mode=0o700, exist_ok=True)
            out = h.secrets / RELEASE_KEY
        private, public = keygen(out)
        console.print(f"private key {private} (keep it secret)")
        console.print(f"public key  {public} (fingerprint "
                      f"{fingerprint(load_public_key(public))})")

    @release_app.command("sign-off")
    def sign_off_command(
        bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
        role: Annotated[str, typer.Option(help=" | ".join(ROLES))],
        key: Annotated[Path, typer.Option(help="your private key (sonia release keygen --out)")],
        signer: Annotated[str | None, typer.Option(help="your name, recorded")] = None,
        bundle_key: Annotated[Path | None, typer.Option(
            help="the release public key the bundle must be signed with")] = None,
    ) -> None:
        """Sign a verified bundle off for a role (signoffs/<role>.json, SIGNOFFS.md)."""
        if role not in ROLES:
            raise typer.BadParameter(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        path = sign_off(bundle, role, key, bundle_public_key=bundle_key, signer=signer)
        console.print(f"signed off as {role}: {path}")

    @app.command()
    def verify(
        bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
        key: Annotated[Path | None, typer.Option(
            help="the release public key to pin (without it, only integrity is proven)")
        ] = None,
        require_roles: Annotated[list[str] | None, typer.Option(
            help="roles that must have signed off (repeatable or comma-separated)")] = None,
        role_key: Annotated[list[str] | None, typer.Option(
            help="ROLE=PUBLIC_KEY: pin the key of a role's sign-off (repeatable)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Check a bundle: signature, every file's digest, sign-offs; exit 1 naming the
        first file that does not match."""
        roles = _roles(require_roles or [])
        result = verify_bundle(bundle, key, roles, _role_keys(role_key or []) or None)
        if as_json:
            print(json.dumps(result.to_dict(), indent=1))
        if not result.ok:
            err_console.print(f"[red]verification FAILED[/red]: {result.first_bad_file}: "
                              f"{result.reason}")
            raise typer.Exit(1)
        if not as_json:
            console.print(f"[green]verified[/green]: {result.reason}; signer {result.signer}; "
                          f"signed off by: {', '.join(result.roles_signed) or 'nobody yet'}")
