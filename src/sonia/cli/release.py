"""`sonia release`, `sonia release keygen|sign-off|finalize` and `sonia verify`.

The flow (docs/operations.md, "Releasing"):

1. `sonia gate NAME --profile release` for every gate (`gate all` never releases);
2. `sonia release [--waive GATE.PARAM="VALUE: REASON"]...` re-judges the newest run
   of every gate from its raw evidence, refuses unless everything holds
   (release.gather says what), and writes the DRAFT bundle
   `artifacts/release/<tag>/`, signed with the home's release key;
3. each of the five roles runs `sonia release sign-off BUNDLE --role R --key K`
   with their own key, pinned in the checkout's `release/signers.toml`;
4. `sonia release finalize BUNDLE` checks every sign-off and makes the annotated
   tag (`release-candidate-N` by default) at the commit the gates ran on;
5. `sonia verify BUNDLE [--strict]` checks all of it.

The checkout is always the one holding the running `sonia` package, never the
current directory. The release key is `secrets/release_key.pem` in the home,
created on first use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError, ReleaseError
from sonia.gates import catalog
from sonia.gates.common import provenance
from sonia.gates.common.evidence import capture_environment
from sonia.gates.waivers import Waiver, waivers_of
from sonia.home import Home
from sonia.release.checklist import ROLES
from sonia.release.gather import GateEvidence, check_provenance, read_gate_evidence
from sonia.release.manifest import MANIFEST_NAME, build_bundle, read_manifest
from sonia.release.repo import (
    check_tag_name,
    code_repo,
    create_tag,
    head_commit,
    next_candidate_tag,
    tag_exists,
    uncommitted,
)
from sonia.release.signers import SIGNERS_FILE, Signers, load_signers
from sonia.release.signing import (
    fingerprint,
    keygen,
    load_private_key,
    load_public_key,
    public_key_b64,
    public_key_path,
)
from sonia.release.signoff import sign_off
from sonia.release.verify import VerifyResult, verify_bundle

console = Console()
err_console = Console(stderr=True)

RELEASE_KEY = "release_key.pem"


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


def release_key(home: Home) -> tuple[Path, bool]:
    """The home's release signing key, created when missing; (path, created now)."""
    path = home.secrets / RELEASE_KEY
    if path.exists():
        return path, False
    home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    keygen(path)
    return path, True


def default_tag(home: Home, repo: Path) -> str:
    releases = home.artifacts / "release"
    taken = [p.name for p in releases.iterdir()] if releases.is_dir() else []
    return next_candidate_tag(repo, taken)


def make_release(home: Home, repo: Path, tag: str, runs: Mapping[str, Path],
                 waivers: Sequence[Waiver] = ()) -> Path:
    """Re-judge every gate's run, then build and sign the DRAFT bundle (no tag yet).

    Every refusal reason found is listed in one ReleaseError.
    """
    check_tag_name(repo, tag)
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
    source = provenance.source_digest()
    evidence: list[GateEvidence] = []
    for gate in catalog.GATES:
        if gate not in runs:
            problems.append(f"gate {gate} has no run in {home.artifacts}: run `sonia gate {gate} "
                            "--profile release`")
            continue
        found, refused = read_gate_evidence(gate, runs[gate], waivers)
        problems += refused
        if found is not None:
            problems += check_provenance(found, head, source)
            evidence.append(found)
    if problems:
        raise ReleaseError("release refused:\n  - " + "\n  - ".join(problems))
    used = {w.key: w for e in evidence for w in e.waivers}
    key, created = release_key(home)
    if created:
        console.print(f"created the release key {key}; pin its public key in "
                      f"{SIGNERS_FILE} ([release] key = \"{_b64(public_key_path(key))}\")")
    files = {name: path for e in evidence for name, path in e.files.items()}
    build_bundle(out, files, commit=head, tag=tag,
                 verdicts=[e.verdict for e in evidence],
                 environment=capture_environment() | {
                     "runs": {e.gate: e.run_dir.name for e in evidence},
                     "parameters": {e.gate: e.parameters for e in evidence}},
                 signing_key=key, waivers=[w.to_dict() for w in used.values()])
    result = verify_bundle(out, public_key_path(key), require_gates=tuple(catalog.GATES))
    if not result.ok:
        raise ReleaseError(f"the new bundle does not verify: {result.first_bad_file}: "
                           f"{result.reason}")
    return out


def _b64(public_pem: Path) -> str:
    return public_key_b64(load_public_key(public_pem))


def _runs_from_dirs(dirs: Sequence[Path]) -> dict[str, Path]:
    runs: dict[str, Path] = {}
    for run_dir in dirs:
        try:
            gate = json.loads((run_dir / "verdict.json").read_text())["gate"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReleaseError(f"{run_dir} is not a finished gate run: {exc}") from exc
        runs[str(gate)] = run_dir.resolve()
    return runs


def _roles(values: Sequence[str]) -> list[str]:
    roles = [r.strip() for v in values for r in v.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise typer.BadParameter(f"unknown roles {unknown}; roles are {', '.join(ROLES)}")
    return roles


def signers_from(path: Path | None) -> Signers | None:
    """The pinned signers: `path`, else the checkout's release/signers.toml, else None."""
    if path is not None:
        return load_signers(path)
    repo = provenance.package_repo()
    default = repo / SIGNERS_FILE if repo is not None else None
    return load_signers(default) if default is not None and default.is_file() else None


def pinned_bundle_key(key: Path | None, signers: Signers | None, trust_bundle_key: bool,
               ) -> Path | None:
    """Which key the bundle signature is checked against, refusing an unpinned one.

    None means "the key inside the bundle", allowed only with --trust-bundle-key.
    """
    if key is not None or (signers is not None and signers.release is not None):
        return key
    if not trust_bundle_key:
        raise ReleaseError(
            "the bundle's signing key is not pinned: pass --key RELEASE_PUBLIC_KEY, pin it in "
            f"{SIGNERS_FILE} ([release] key), or accept the key inside the bundle with "
            "--trust-bundle-key (that proves integrity only, not who made it)")
    err_console.print("[yellow]warning[/yellow]: --trust-bundle-key: checking the signature "
                      "with the key inside the bundle, which proves integrity, not origin")
    return None


def _report(result: VerifyResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
    if not result.ok:
        err_console.print(f"[red]verification FAILED[/red]: {result.first_bad_file}: "
                          f"{result.reason}")
        raise typer.Exit(1)
    if not as_json:
        console.print(f"[green]verified[/green] ({result.state}): {result.reason}; signer "
                      f"{result.signer}; signed off by: "
                      f"{', '.join(result.roles_signed) or 'nobody yet'}")
        for waiver in result.waivers:
            console.print(f"  [yellow]waiver[/yellow] {waiver}")


def register(app: typer.Typer) -> None:
    release_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
    app.add_typer(release_app, name="release")

    @release_app.callback()
    def release(
        ctx: typer.Context,
        home: HomeOption = None,
        tag: Annotated[str, typer.Option(
            help="the release tag (default release-candidate-N, N counting up)")] = "",
        run: Annotated[list[Path] | None, typer.Option(
            help="use this gate run directory (repeatable; default: each gate's newest)")
        ] = None,
        waive: Annotated[list[str] | None, typer.Option(
            help='GATE.PARAMETER="VALUE: REASON": accept a duration or count below the '
                 "release profile, recorded in the bundle (repeatable)")] = None,
    ) -> None:
        """Re-judge every gate's evidence and build the signed DRAFT bundle (no tag yet)."""
        if ctx.invoked_subcommand is not None:
            return
        h = resolve_home(home)
        if not h.exists:
            raise ConfigError(f"no Sonia home at {h.root}: run the gates first", key="home")
        waivers = waivers_of(waive or [])
        repo = code_repo()
        chosen = tag or default_tag(h, repo)
        runs = newest_runs(h) | (_runs_from_dirs(run) if run else {})
        out = make_release(h, repo, chosen, runs, waivers)
        digest = hashlib.sha256((out / MANIFEST_NAME).read_bytes()).hexdigest()
        console.print(f"[yellow]DRAFT[/yellow] release {chosen}: bundle {out}")
        console.print(f"  MANIFEST.json sha256 {digest}; {len(waivers)} waiver(s)")
        console.print(f"  next: each role runs `sonia release sign-off {out} --role ROLE "
                      f"--key KEY`, then `sonia release finalize {out}`")

    @release_app.command("keygen")
    def keygen_command(
        home: HomeOption = None,
        role: Annotated[str | None, typer.Option(
            help=f"make a sign-off key for this role ({' | '.join(ROLES)})")] = None,
        out: Annotated[Path | None, typer.Option(
            help="private key file to create (default: the home's secrets/release_key.pem, "
                 "or secrets/signoff-ROLE.pem with --role)")] = None,
    ) -> None:
        """Make an Ed25519 key pair (private PEM 0600 and .pub.pem) and print its signers line."""
        if role is not None and role not in ROLES:
            raise typer.BadParameter(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if out is None:
            h = resolve_home(home)
            if not h.exists:
                raise ConfigError(f"no Sonia home at {h.root}: run `sonia init`", key="home")
            h.secrets.mkdir(mode=0o700, exist_ok=True)
            out = h.secrets / (f"signoff-{role}.pem" if role else RELEASE_KEY)
        private, public = keygen(out)
        key = load_public_key(public)
        console.print(f"private key {private} (keep it secret)")
        console.print(f"public key  {public} (fingerprint {fingerprint(key)})")
        table, name = ("roles", role) if role else ("release", "key")
        console.print(f"pin it in {SIGNERS_FILE} under [{table}]:", markup=False)
        print(f'{name} = "{public_key_b64(key)}"')

    @release_app.command("sign-off")
    def sign_off_command(
        bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
        role: Annotated[str, typer.Option(help=" | ".join(ROLES))],
        key: Annotated[Path, typer.Option(help="your private key (sonia release keygen --role)")],
        signer: Annotated[str | None, typer.Option(help="your name, recorded")] = None,
        signers: Annotated[Path | None, typer.Option(
            help=f"the pinned signers file (default: the checkout's {SIGNERS_FILE})")] = None,
        bundle_key: Annotated[Path | None, typer.Option(
            help="the release public key the bundle must be signed with")] = None,
        trust_bundle_key: Annotated[bool, typer.Option(
            help="accept the key inside the bundle when none is pinned")] = False,
    ) -> None:
        """Sign a verified bundle off for your role with your pinned key."""
        if role not in ROLES:
            raise typer.BadParameter(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        pinned = signers_from(signers)
        if pinned is None or pinned.role_key(role) is None:
            raise ReleaseError(f"role {role} has no pinned key: add it to {SIGNERS_FILE} "
                               "(`sonia release keygen --role` prints the line) and commit it")
        own = load_private_key(key).public_key()
        if fingerprint(own) != fingerprint(pinned.roles[role]):
            raise ReleaseError(f"{key.name} is key {fingerprint(own)}, but {pinned.source} pins "
                               f"{fingerprint(pinned.roles[role])} for {role}")
        checked = pinned_bundle_key(bundle_key, pinned, trust_bundle_key)
        result = verify_bundle(bundle, checked, signers=pinned)
        if not result.ok:
            raise ReleaseError(f"refusing to sign off: {result.first_bad_file}: {result.reason}")
        path = sign_off(bundle, role, key, bundle_public_key=checked, signer=signer)
        after = verify_bundle(bundle, checked, signers=pinned)
        console.print(f"signed off as {role}: {path}; signed so far: "
                      f"{', '.join(after.roles_signed)}")

    @release_app.command("finalize")
    def finalize_command(
        bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
        signers: Annotated[Path | None, typer.Option(
            help=f"the pinned signers file (default: the checkout's {SIGNERS_FILE})")] = None,
        key: Annotated[Path | None, typer.Option(help="the release public key to pin")] = None,
        trust_bundle_key: Annotated[bool, typer.Option(
            help="accept the key inside the bundle when none is pinned")] = False,
    ) -> None:
        """Tag the release once every role has signed off (the bundle stops being DRAFT)."""
        pinned = signers_from(signers)
        if pinned is None:
            raise ReleaseError(f"no signers file: finalizing checks every sign-off against "
                               f"{SIGNERS_FILE}")
        checked = pinned_bundle_key(key, pinned, trust_bundle_key)
        repo = code_repo()
        result = verify_bundle(bundle, checked, ROLES, signers=pinned,
                               require_gates=tuple(catalog.GATES), repo=repo)
        if not result.ok:
            raise ReleaseError(f"not finalized: {result.first_bad_file}: {result.reason}")
        manifest = read_manifest(bundle)
        tag, commit = str(manifest["tag"]), str(manifest["commit"])
        digest = hashlib.sha256((bundle / MANIFEST_NAME).read_bytes()).hexdigest()
        create_tag(repo, tag, commit, _tag_message(tag, digest, manifest, result))
        final = verify_bundle(bundle, checked, ROLES, signers=pinned,
                              require_gates=tuple(catalog.GATES), repo=repo, require_tag=True)
        if not final.ok:
            raise ReleaseError(f"tagged, but the bundle does not verify: {final.reason}")
        console.print(f"[green]FINAL[/green]: tag {tag} at {commit[:12]}; MANIFEST.json "
                      f"sha256 {digest}")

    @app.command()
    def verify(
        bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
        key: Annotated[Path | None, typer.Option(
            help="the release public key to pin (default: the signers file's release key)")
        ] = None,
        signers: Annotated[Path | None, typer.Option(
            help=f"the pinned signers file (default: the checkout's {SIGNERS_FILE})")] = None,
        trust_bundle_key: Annotated[bool, typer.Option(
            help="check the signature with the key inside the bundle when none is pinned "
                 "(integrity only)")] = False,
        strict: Annotated[bool, typer.Option(help="fail on any waiver")] = False,
        draft: Annotated[bool, typer.Option(
            help="accept a DRAFT: missing sign-offs and no tag yet")] = False,
        require_roles: Annotated[list[str] | None, typer.Option(
            help="with --draft: roles that must have signed off (repeatable or "
                 "comma-separated)")] = None,
        repo: Annotated[Path | None, typer.Option(
            help="the git checkout holding the release tag (default: the checkout of the "
                 "running sonia)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Check a bundle: pinned signature, every file's digest, every gate GO and present,
        sign-offs against the pinned signers, the tag's commit; exit 1 naming the first
        file that does not match."""
        roles = _roles(require_roles or []) if draft else list(ROLES)
        pinned = signers_from(signers)
        if pinned is None and not draft:
            raise ReleaseError(f"no signers file ({SIGNERS_FILE} in the checkout, or "
                               "--signers): sign-offs cannot be checked against pinned keys")
        checked = pinned_bundle_key(key, pinned, trust_bundle_key)
        result = verify_bundle(bundle, checked, roles, signers=pinned,
                               require_gates=tuple(catalog.GATES), strict=strict,
                               repo=repo or provenance.package_repo(), require_tag=not draft)
        _report(result, as_json)


def _tag_message(tag: str, digest: str, manifest: Mapping[str, Any],
                 result: VerifyResult) -> str:
    gates = ", ".join(f"{g.get('gate')}={g.get('status')}" for g in manifest.get("gates", []))
    waivers = "\n".join(f"  waiver {w}" for w in result.waivers) or "  no waivers"
    return (f"Sonia release {tag}\n\nMANIFEST.json sha256: {digest}\ngates: {gates}\n"
            f"{waivers}\nsigned by release key {result.signer}\n"
            f"signed off by: {', '.join(result.roles_signed)}\n")
