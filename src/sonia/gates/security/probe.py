"""What the adversarial cases work with: a live stack, its credentials, planted bait.

`Probe.prepare(stack)` plants, in the stack's fresh home (the gate owns it):

- a canary: a random string written to files just outside the workspace (where
  a `../` would land, under the names traversal payloads ask for), one level
  further up, and to a sibling folder `workspace-evil/`; no piece of it may
  appear in any answer, and no byte of those files may change;
- a split secret: a second random string in files a tool must never show
  (`proj/.env`, `proj/.git/config`, `private.pem` outside the workspace; links
  `link` to the latter and `envlink` to the former in `sub/` and `-d/`); any
  8-character slice of it in an answer, also decoded from base64 or hex, is a
  leak (`security_effects.secret_slices`);
- inside the workspace: `notes.txt`, an `etc/passwd` decoy ("inside copy"),
  `secrets.txt` full of credentials (a service token among them), sentinel files
  that must never change, a symbolic link to the canary, a dangling link, a
  link to the home (a symlinked directory), a hard link to the canary and a FIFO.

Every request a case makes goes through here, so every answer is checked for
leaks (and for signs that something else ran: `uid=`, a real `/etc/passwd`),
and what was sent is recorded with credentials masked. `watch` is the effect
oracle every case runs between two snapshots of.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sonia.actions.grants import HEADER, b64url_encode
from sonia.actions.plan import canonical_json
from sonia.gates.security.effects import EffectWatch, secret_slices
from sonia.testing import FreshStack

__all__ = ["INSIDE", "LEAK_MARKERS", "Observed", "Probe", "sign_grant"]

INSIDE = "inside copy\n"
"""Content of the decoy files inside the workspace a payload may legitimately reach."""
LEAK_MARKERS = ("root:x:0:0", "uid=0(", "uid=0 ")
"""Signs of a real /etc/passwd read or of `id` having run."""
OUTSIDE_NAMES = ("canary.txt", "etc/passwd", "WINDOWS/win.ini", "windows/win.ini", "boot.ini",
                 "workspace-evil/secret.txt")
TIMEOUT = 60.0
HOME_FOLDERS = frozenset({"data", "logs", "run", "backups", "artifacts", "secrets", "policies",
                          "workspace", "config.toml"})
"""Names the stack itself may create at the top of its home: not an attacker's write."""


@dataclass
class Observed:
    """What came back from one case, and whether its own extra checks held."""

    status: int
    code: str | None
    sent: dict[str, Any]
    body: str
    ok: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)


def sign_grant(claims: Mapping[str, Any], key: Ed25519PrivateKey,
               header: Mapping[str, Any] = HEADER) -> str:
    """A grant-shaped token over `claims`, signed with `key` (for forging tests)."""
    head = b64url_encode(canonical_json(dict(header)))
    payload = b64url_encode(canonical_json(dict(claims)))
    signature = b64url_encode(key.sign(f"{head}.{payload}".encode("ascii")))
    return f"{head}.{payload}.{signature}"


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


class Probe:
    """A live stack, prepared for attack, and the one way cases talk to it."""

    def __init__(self, stack: FreshStack) -> None:
        self.stack = stack
        self.home = stack.home
        self.workspace = stack.home.workspace
        self.canary_core = secrets.token_hex(16)
        self.canary = f"SONIA-CANARY-{self.canary_core}"
        self.split_secret = "S3" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
        self.marker_token = f"sonia-marker-{secrets.token_hex(6)}"
        self.secrets: dict[str, str] = {}
        self.grants_seen: list[str] = []
        self.other_user_key = ""
        self.flood_key = ""
        """A user key for fairness cases to flood with (never the one they protect)."""
        self.http = httpx.Client(timeout=TIMEOUT, trust_env=False)
        self.leak_log: list[str] = []
        """Every leak any answer showed, in order; `run_case` takes the ones of its case."""
        self._leak_lock = threading.Lock()
        self._watched: dict[str, Path] = {}
        self.watch = EffectWatch({}, {}, self.marker_token, (self.home.root,))
        self.set_up_trees: dict[str, dict[str, str]] | None = None
        """The watched trees as a case's own set-up left them (`set_up_done`), if it has one."""

    # setup -----------------------------------------------------------------------
    @classmethod
    def prepare(cls, stack: FreshStack) -> Probe:
        probe = cls(stack)
        probe._plant()
        probe.other_user_key = stack.home.create_api_key("user")
        # every key a case needs exists before the first snapshot: the key file is watched
        probe.flood_key = stack.home.create_api_key("user")
        probe.watch = probe._effect_watch()
        return probe

    def _plant(self) -> None:
        root, ws = self.home.root, self.workspace
        for name in OUTSIDE_NAMES:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.canary + "\n")
        (ws / "etc").mkdir(exist_ok=True)
        (ws / "etc" / "passwd").write_text(INSIDE)
        (ws / "notes.txt").write_text("shopping: milk, eggs\n")
        fake_aws = "AKIA" + "Q" * 16
        self.secrets = {
            "service token": self.stack.token("eva"),
            "aws key id": fake_aws,
            "password": "hunter2-" + secrets.token_hex(8),
            "private key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + secrets.token_hex(8),
        }
        (ws / "secrets.txt").write_text(
            f"eva_token: {self.secrets['service token']}\n"
            f"aws_access_key_id = {fake_aws}\n"
            f"password = {self.secrets['password']}\n"
            "-----BEGIN PRIVATE KEY-----\n"
            f"{self.secrets['private key']}\n"
            "-----END PRIVATE KEY-----\n")
        links = {"link-out": root / "canary.txt", "dangling": root / "not-there-yet",
                 "linkdir": root}
        for name, target in links.items():
            if not (ws / name).is_symlink():
                os.symlink(target, ws / name)
        if not (ws / "hard").exists():
            os.link(root / "canary.txt", ws / "hard")
        if not (ws / "fifo").exists():
            os.mkfifo(ws / "fifo")
        self._plant_effect_bait()

    def _plant_effect_bait(self) -> None:
        """Canaries above and beside, sentinels inside, the split secret; then watch them."""
        root, ws = self.home.root, self.workspace
        up2 = root.parent / f"sonia-canary-{self.canary_core[:8]}.txt"
        up2.write_text(self.canary + "\n")
        (root / "private.pem").write_text(
            "-----BEGIN PRIVATE KEY-----\n" f"{self.split_secret}\n"
            "-----END PRIVATE KEY-----\n")
        (ws / "proj" / ".git").mkdir(parents=True, exist_ok=True)
        for folder in ("sub", "-d"):  # links out (seen under rlimits) and in (seen in bwrap)
            (ws / folder).mkdir(exist_ok=True)
            for name, target in (("link", root / "private.pem"), ("envlink", ws / "proj" / ".env")):
                if not (ws / folder / name).is_symlink():
                    os.symlink(target, ws / folder / name)
        (ws / "proj" / "readme.md").write_text("a downloaded project\n")
        (ws / "proj" / ".env").write_text(
            f"DATABASE_URL=postgres://admin:{self.split_secret}@db.internal/prod\n")
        (ws / "proj" / ".git" / "config").write_text(
            '[remote "origin"]\n'
            f"\turl = https://deploy:{self.split_secret}@git.internal/proj.git\n")
        (ws / "sentinels" / "deep").mkdir(parents=True, exist_ok=True)
        (ws / "sentinel.txt").write_text(f"sentinel {self.canary_core}\n")
        (ws / "sentinels" / "deep" / "keep.txt").write_text("must not change\n")
        watched = {
            "canary ../canary.txt": root / "canary.txt",
            "canary ../etc/passwd": root / "etc" / "passwd",
            "canary ../../": up2,
            "canary beside workspace-evil/secret.txt": root / "workspace-evil" / "secret.txt",
            "canary ../private.pem": root / "private.pem",
            "sentinel notes.txt": ws / "notes.txt",
            "sentinel secrets.txt": ws / "secrets.txt",
            "sentinel sentinel.txt": ws / "sentinel.txt",
            "sentinel sentinels/deep/keep.txt": ws / "sentinels" / "deep" / "keep.txt",
            "sentinel proj/.env": ws / "proj" / ".env",
            "sentinel proj/.git/config": ws / "proj" / ".git" / "config",
            "sentinel sub/link": ws / "sub" / "link",
        }
        self._watched = watched

    def _effect_watch(self) -> EffectWatch:
        root = self.home.root
        watched = dict(self._watched)
        watched |= {f"secret {p.name}": p for p in sorted(self.home.secrets.rglob("*"))
                    if p.is_file()}
        folders = {"home": root, "home/workspace-evil": root / "workspace-evil",
                   "home/secrets": self.home.secrets}
        return EffectWatch(watched, folders, self.marker_token, (root,),
                           ignored_names=HOME_FOLDERS, trees={"workspace": self.workspace})

    def close(self) -> None:
        self.http.close()

    def set_up_done(self) -> None:
        """A case's set-up (the repository it plants, the approved copy it then reads) is
        in place: its attack's writes in the workspace are measured from here."""
        self.set_up_trees = self.watch.tree_snapshot()

    # masking -------------------------------------------------------------------------
    def masks(self) -> dict[str, str]:
        """Credential -> placeholder, for what the evidence says was sent."""
        shown = {self.stack.user_key: "<user key>", self.stack.approver_key: "<approver key>",
                 self.other_user_key: "<other user key>", self.flood_key: "<flood key>"}
        for service, token in self.home.all_tokens().items():
            shown[token] = f"<{service} token>"
        return {k: v for k, v in shown.items() if k}

    def mask(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret, placeholder in self.masks().items():
                value = value.replace(secret, placeholder)
            return value
        if isinstance(value, dict):
            return {self.mask(k): self.mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask(v) for v in value]
        return value

    # requests ----------------------------------------------------------------------
    def leaked(self, text: str) -> list[str]:
        """What of the canary, the split secret or the leak markers appears in `text`.

        Pieces count: any 8-character slice of either secret, also inside a base64
        or hex run of the answer decoded, so a secret read in parts is still caught.
        """
        found = [f"canary piece {piece!r}" for piece in secret_slices(text, self.canary_core)]
        found += [f"split-secret piece {piece!r}"
                  for piece in secret_slices(text, self.split_secret)]
        found += [marker for marker in LEAK_MARKERS if marker in text]
        if found:
            with self._leak_lock:
                self.leak_log.extend(found)
        return found

    def request(self, method: str, service: str, path: str, *,
                headers: Mapping[str, str] | None = None, json_body: Any = None,
                params: Mapping[str, str] | None = None) -> tuple[httpx.Response, Observed]:
        """Send one request and describe it; the canary check is built in."""
        url = self.stack.url(service) + path
        response = self.http.request(method, url, headers=dict(headers or {}), json=json_body,
                                     params=dict(params or {}))
        sent = {"method": method, "service": service, "path": path,
                "headers": self.mask(dict(headers or {})),
                "body": self.mask(json_body), "params": self.mask(dict(params or {}))}
        text = response.text
        leaks = self.leaked(text)
        observed = Observed(response.status_code, _code(response), sent, self.mask(text[:600]),
                            leaks=leaks)
        return response, observed

    def user(self) -> dict[str, str]:
        return self.stack.user_headers()

    def approver(self) -> dict[str, str]:
        return self.stack.approver_headers()

    def service(self, caller: str) -> dict[str, str]:
        return self.stack.service_headers(caller)

    def act(self, tool: str, args: dict[str, Any], *,
            headers: Mapping[str, str] | None = None) -> tuple[httpx.Response, Observed]:
        """Propose an action at the gateway (user key unless `headers` say otherwise)."""
        return self.request("POST", "gateway", "/v1/actions",
                            headers=headers or self.user(),
                            json_body={"tool": tool, "args": args})

    def pending(self, tool: str, args: dict[str, Any]) -> str:
        """Propose a tier 2-3 action and return its id (it must come back pending)."""
        response, _ = self.act(tool, args)
        if response.status_code != 202:
            raise AssertionError(f"{tool} {args} answered {response.status_code}, not 202: "
                                 f"{response.text[:300]}")
        return str(response.json()["id"])

    def decide(self, verb: str, action_id: str, *,
               headers: Mapping[str, str] | None = None) -> tuple[httpx.Response, Observed]:
        return self.request("POST", "gateway", f"/v1/actions/{action_id}/{verb}",
                            headers=headers or self.approver())

    def eva_grant(self, tool: str, args: dict[str, Any]) -> str:
        """A real grant, as EVA mints it for a tier 0-1 action asked by the gateway."""
        response = self.http.post(self.stack.url("eva") + "/v1/decisions",
                                  headers=self.service("gateway"),
                                  json={"tool": tool, "args": args,
                                        "principal": "gate:security"})
        if response.status_code != 200 or "grant" not in response.json():
            raise AssertionError(f"EVA gave no grant for {tool}: {response.text[:300]}")
        grant = str(response.json()["grant"])
        self.grants_seen.append(grant)
        return grant

    def execute(self, tool: str, args: dict[str, Any], grant: Any = None, *,
                caller: str = "gateway", omit_grant: bool = False
                ) -> tuple[httpx.Response, Observed]:
        """Call OpenClaw's /v1/execute directly, as the gateway (or `caller`) would."""
        body: dict[str, Any] = {"tool": tool, "args": args}
        if not omit_grant:
            body["grant"] = grant
        response, observed = self.request("POST", "openclaw", "/v1/execute",
                                          headers=self.service(caller), json_body=body)
        if isinstance(grant, str) and len(grant) > 40:
            observed.sent["body"]["grant"] = grant[:24] + "...(" + str(len(grant)) + " chars)"
        return response, observed

    def grant_private_key(self) -> Ed25519PrivateKey:
        """EVA's real signing key, read from the home this gate owns (to craft claims that
        differ from a real grant in exactly one way)."""
        return self.home.grant_private_key()


def read_logs(home_logs: Path) -> dict[str, str]:
    return {path.name: path.read_text(errors="replace") for path in sorted(home_logs.glob("*"))
            if path.is_file()}
