"""Command validation: an argv runs only as an allowlisted binary with checked, literal arguments.
Shells, interpreters, wrappers, path-like names, unknown or abbreviated flags, dangerous
predicates and subcommands, and operands outside the workspace are INVALID_COMMAND."""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

from sonia.actions.commands import check_workspace_path, plan_command
from sonia.actions.policy import Policy, load_policy
from sonia.errors import InvalidCommand

DEFAULT_POLICIES = Path(str(files("sonia.policies")))
CORPUS = Path(__file__).resolve().parents[3] / "corpus" / "command-injection"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICIES)


def _bin(policy: Policy, name: str) -> str:
    return policy.commands[name].argv0


def _refused(policy: Policy, argv: object) -> str:
    with pytest.raises(InvalidCommand) as caught:
        plan_command(policy, argv)
    assert caught.value.status == 400 and caught.value.code == "INVALID_COMMAND"
    return caught.value.detail


def _needs_git(policy: Policy) -> None:
    if "git" not in policy.commands:
        pytest.skip("git is not installed here")


# --- what is accepted, and how it is normalized ----------------------------------------------
@pytest.mark.parametrize("argv, tail", [
    (["ls"], ["--"]),
    (["ls", "-la"], ["-l", "-a", "--"]),
    (["ls", "-l", "-a", "docs"], ["-l", "-a", "--", "docs"]),
    (["ls", "docs", "-l"], ["-l", "--", "docs"]),  # flags after operands, as GNU getopt reads
    (["ls", "--all", "--", "-rf"], ["--all", "--", "-rf"]),  # a file named -rf, after --
    (["cat", "notes.txt"], ["--", "notes.txt"]),
    (["cat", "./notes.txt", "a/b/c.md"], ["--", "./notes.txt", "a/b/c.md"]),
    (["head", "-n5", "f"], ["-n", "5", "--", "f"]),
    (["head", "-n", "5", "f"], ["-n", "5", "--", "f"]),
    (["head", "--lines=5", "f"], ["--lines=5", "--", "f"]),
    (["head", "--lines", "5", "f"], ["--lines=5", "--", "f"]),
    (["head", "-qn", "3", "f"], ["-q", "-n", "3", "--", "f"]),
    (["wc", "-lw", "f"], ["-l", "-w", "--", "f"]),
    (["grep", "-rn", "TODO", "."], ["-r", "-n", "--", "TODO", "."]),
    (["grep", "-e", "-v", "f"], ["-e", "-v", "--", "f"]),  # -v is -e's pattern
    (["grep", "-ie", "x", "f"], ["-i", "-e", "x", "--", "f"]),
    (["grep", "-ei", "f"], ["-e", "i", "--", "f"]),  # getopt: the rest of the cluster
    (["grep", "--", "-v", "f"], ["--", "-v", "f"]),  # a pattern that starts with -
    (["grep", "a;b|c$(id)", "f"], ["--", "a;b|c$(id)", "f"]),  # a pattern is just text
    (["grep", "--max-count=3", "x", "f"], ["--max-count=3", "--", "x", "f"]),
    (["find", ".", "-name", "*.py", "-type", "f"], [".", "-name", "*.py", "-type", "f"]),
    (["find", "src", "(", "-name", "a", "-o", "-iname", "b", ")", "-print"],
     ["src", "(", "-name", "a", "-o", "-iname", "b", ")", "-print"]),
    (["find", "-maxdepth", "2", "-newer", "ref.txt"], ["-maxdepth", "2", "-newer", "ref.txt"]),
    (["mkdir", "-p", "a/b"], ["-p", "--", "a/b"]),
    (["cp", "-r", "a", "b"], ["-r", "--", "a", "b"]),
    (["mv", "a", "b"], ["--", "a", "b"]),
    (["rm", "-rf", "build"], ["-r", "-f", "--", "build"]),
])
def test_allowed_commands_become_normalized_plans(
        policy: Policy, argv: list[str], tail: list[str]) -> None:
    plan = plan_command(policy, argv)
    command = policy.commands[argv[0]]
    assert plan.binary == command.binary
    assert plan.argv == [command.argv0, *tail]


@pytest.mark.parametrize("argv, tier", [
    (["ls"], 1), (["cat", "f"], 1), (["head", "f"], 1), (["wc", "f"], 1), (["grep", "x"], 1),
    (["find"], 1), (["mkdir", "d"], 3), (["cp", "a", "b"], 3), (["mv", "a", "b"], 3),
    (["rm", "f"], 3),
])
def test_read_only_commands_are_tier_1_and_mutating_ones_tier_3(
        policy: Policy, argv: list[str], tier: int) -> None:
    assert plan_command(policy, argv).tier == tier


def test_binaries_are_absolute(policy: Policy) -> None:
    for command in policy.commands.values():
        assert command.binary.startswith("/") and command.argv0.startswith("/")


@pytest.mark.parametrize("argv, tail", [
    (["git", "status"], ["status", "--ignore-submodules=all", "--"]),
    (["git", "status", "--short"], ["status", "--ignore-submodules=all", "--short", "--"]),
    (["git", "log", "-n", "5", "--oneline"],
     ["log", "--no-ext-diff", "--no-textconv", "-n", "5", "--oneline", "--"]),
    (["git", "diff", "HEAD~1", "--", "a.txt"],
     ["diff", "--no-ext-diff", "--no-textconv", "--ignore-submodules=all", "HEAD~1", "--",
      "a.txt"]),
    (["git", "show", "--stat", "HEAD"],
     ["show", "--no-ext-diff", "--no-textconv", "--stat", "HEAD", "--"]),
])
def test_git_read_only_subcommands_get_the_safe_fixed_arguments(
        policy: Policy, argv: list[str], tail: list[str]) -> None:
    _needs_git(policy)
    plan = plan_command(policy, argv)
    git = policy.commands["git"]
    assert plan.argv == [git.argv0, *git.global_args, *tail]
    assert "--no-pager" in plan.argv and "core.fsmonitor=false" in plan.argv
    assert plan.tier == 1


# --- what is refused ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["bash", "-c", "id"], ["sh", "-c", "id"], ["dash", "-c", "id"], ["zsh", "-c", "id"],
    ["env", "rm", "-rf", "x"], ["env"], ["xargs", "rm"], ["timeout", "1", "ls"],
    ["sudo", "ls"], ["su", "-c", "id"], ["nohup", "ls"], ["nice", "ls"], ["stdbuf", "-o0", "ls"],
    ["setsid", "ls"], ["python3", "-c", "print(1)"], ["python3.11", "-c", "1"],
    ["python", "-c", "1"],
    ["perl", "-e", "1"], ["ruby", "-e", "1"], ["node", "-e", "1"], ["awk", "BEGIN{system(\"id\")}"],
    ["sed", "e id"], ["busybox", "sh"], ["id"], ["curl", "http://127.0.0.1"], ["LS"], ["ls "],
])
def test_shells_interpreters_wrappers_and_unknown_names_are_refused(
        policy: Policy, argv: list[str]) -> None:
    assert "argv[0]" in _refused(policy, argv)


@pytest.mark.parametrize("name", [
    "./ls", "/bin/ls", "/usr/bin/ls", "/usr/bin/python3", "../ls", "bin/ls", ".ls", "~/ls",
    "ls;id", "ls|id", "ls&&id", "$(id)", "`id`", "ls${IFS}-la", "ls -la", "l\\s",
])
def test_path_like_or_shell_shaped_names_are_refused(policy: Policy, name: str) -> None:
    detail = _refused(policy, [name])
    assert "argv[0]" in detail and repr(name)[:20] in detail


@pytest.mark.parametrize("argv", [
    ["find", ".", "-exec", "id", ";"], ["find", ".", "-execdir", "id", ";"],
    ["find", ".", "-ok", "id", ";"], ["find", ".", "-okdir", "id", ";"],
    ["find", "-delete"], ["find", ".", "-delete"], ["find", ".", "-name", "x", "-delete"],
    ["find", ".", "-fprint", "out"], ["find", ".", "-fprint0", "out"],
    ["find", ".", "-fprintf", "out", "%p"], ["find", ".", "-fls", "out"],
    ["find", "-L", "."], ["find", ".", "-follow"], ["find", "/"], ["find", "..", "-name", "x"],
    ["find", ".", "-newer", "/etc/passwd"], ["find", ".", "-type", "f;id"],
    ["find", ".", "-maxdepth", "-1"], ["find", ".", "-name"], ["find", ".", "-name", "x", "y"],
    ["find", ".", ",", "-print"], ["find", ".", "-files0-from", "x"],
])
def test_find_accepts_only_listed_predicates(policy: Policy, argv: list[str]) -> None:
    _refused(policy, argv)


@pytest.mark.parametrize("argv", [
    ["git"], ["git", "-c", "core.pager=x", "log"], ["git", "-C", "/", "status"],
    ["git", "--git-dir=/x", "status"], ["git", "--work-tree=/", "status"],
    ["git", "--exec-path=/tmp", "log"], ["git", "--no-pager", "log"], ["git", "push"],
    ["git", "config", "core.pager", "x"], ["git", "clone", "x"], ["git", "fetch"],
    ["git", "commit", "-m", "x"], ["git", "checkout", "."], ["git", "LOG"],
    ["git", "log", "-c", "x"], ["git", "diff", "--output=x"], ["git", "diff", "--output", "x"],
    ["git", "log", "--ext-diff"], ["git", "log", "--textconv"], ["git", "show", "--textconv"],
    ["git", "log", "--upload-pack=x"], ["git", "log", "--config-env=a=b"],
    ["git", "log", "--exec=x"], ["git", "status", "--porcelain=v2"], ["git", "log", "--one"],
    ["git", "diff", "--", "/etc/passwd"], ["git", "diff", "--", "../x"],
    ["git", "log", "../../etc"], ["git", "show", "/etc/passwd"], ["git", "log", "-O", "x"],
    ["git", "log", "-n", "x"],
])
def test_git_refuses_everything_but_listed_read_only_use(policy: Policy, argv: list[str]) -> None:
    _needs_git(policy)
    _refused(policy, argv)


@pytest.mark.parametrize("argv, fragment", [
    (["grep", "--max-cou=3", "x", "f"], "--max-count"),
    (["grep", "--max-cou", "3", "x", "f"], "--max-count"),
    (["ls", "--al"], "--all"),
    (["ls", "--almost"], "--almost-all"),
    (["head", "--line=3", "f"], "--lines"),
    (["rm", "--recur", "x"], "--recursive"),
])
def test_abbreviated_long_flags_are_refused(
        policy: Policy, argv: list[str], fragment: str) -> None:
    assert fragment in _refused(policy, argv)


@pytest.mark.parametrize("argv", [
    ["ls", "--all=yes"], ["ls", "-L"], ["ls", "--dereference"], ["ls", "-la5"],
    ["ls", "--color=always"], ["ls", "---all"], ["ls", "--=x"],
    ["head", "-n"], ["head", "-n", "x", "f"], ["head", "-n", "-5", "f"], ["head", "-5", "f"],
    ["head", "--lines"], ["grep", "-f", "/etc/passwd", "x"], ["grep", "-R", "x"],
    ["grep", "--exclude-from=x", "y"], ["grep", "-rf", "list", "."], ["wc", "--files0-from=x"],
    ["cat", "-rf", "x"], ["rm", "-rf", "--no-preserve-root", "x"],
    ["rm", "--interactive=never", "x"],
    ["cp", "-L", "a", "b"], ["cp", "--target-directory=/tmp", "a"], ["mkdir", "-m", "777", "d"],
])
def test_unknown_flags_and_misused_values_are_refused(policy: Policy, argv: list[str]) -> None:
    _refused(policy, argv)


@pytest.mark.parametrize("argv", [
    ["cat"], ["head"], ["wc"], ["grep"], ["mkdir"], ["rm"], ["rm", "-rf"], ["cp", "a"],
    ["mv", "a"], ["grep", "-e", "x", *["f"] * 65],
])
def test_operand_counts_are_enforced(policy: Policy, argv: list[str]) -> None:
    _refused(policy, argv)


@pytest.mark.parametrize("operand", [
    "/etc/passwd", "//etc/passwd", "../secret", "../../etc/passwd", "a/../../b", "a/..",
    "..", "~", "~root/.ssh/id_rsa", "~/x", "", "-", "x" * 5000, "a/" + "b" * 300,
])
def test_operands_must_be_workspace_relative_paths(policy: Policy, operand: str) -> None:
    for command in (["cat"], ["ls"], ["rm", "-rf"], ["cat", "--"]):
        _refused(policy, [*command, operand])
    assert check_workspace_path(operand) is not None


@pytest.mark.parametrize("operand", ["-rf", "--help", "-n5", "--", "-"])
def test_dash_operands_before_double_dash_are_read_as_flags_and_refused(
        policy: Policy, operand: str) -> None:
    if operand == "--":
        assert plan_command(policy, ["rm", "x", "--"]).argv[-2:] == ["--", "x"]
        return
    _refused(policy, ["cat", operand])
    _refused(policy, ["wc", "x", operand])


@pytest.mark.parametrize("bad", [
    "a\x00b", "a\nb", "a\rb", "a\tb", "\x1b[31mred", "a\x7fb", "a\u0085b", "a\u2028b",
    "a\u202eb", "a\u200bb", "a\ud800b",
])
def test_control_and_format_characters_are_refused_anywhere(policy: Policy, bad: str) -> None:
    for argv in (["cat", bad], ["grep", bad, "f"], ["ls", "-l", bad], [bad],
                 ["find", ".", "-name", bad]):
        assert "U+" in _refused(policy, argv)


@pytest.mark.parametrize("argv", [
    "ls -la", ("ls",), [], None, [1], ["ls", None], ["ls", b"x"], ["ls", ["x"]], {"argv": ["ls"]},
])
def test_argv_must_be_a_list_of_strings(policy: Policy, argv: object) -> None:
    if argv == ("ls",):  # a tuple is a sequence of strings too
        assert plan_command(policy, argv).binary == policy.commands["ls"].binary
        return
    _refused(policy, argv)


def test_oversized_argv_is_refused(policy: Policy) -> None:
    _refused(policy, ["ls", *["a"] * 300])
    _refused(policy, ["ls", *["a" * 4000] * 20])


@pytest.mark.parametrize("payload", [";", "|", "&&", "$(id)", "`id`", "${IFS}", "a;id", "a|id|",
                                     "'", '"', "&", "<x", ">x", "*", "?", "!!"])
def test_shell_metacharacters_as_operands_are_literal_file_names(
        policy: Policy, payload: str) -> None:
    plan = plan_command(policy, ["cat", payload])
    assert plan.argv == [_bin(policy, "cat"), "--", payload]


# --- the public attack corpus --------------------------------------------------------------------
def _corpus() -> list[str]:
    payloads: list[str] = []
    for path in sorted(CORPUS.glob("*.txt")):
        payloads += [line for line in path.read_text(errors="surrogateescape").split("\n") if line]
    return payloads


PAYLOADS = _corpus()


def test_the_corpus_is_there() -> None:
    assert len(PAYLOADS) > 400


def test_no_corpus_payload_runs_as_a_command(policy: Policy) -> None:
    for payload in PAYLOADS:
        try:
            plan = plan_command(policy, [payload])
        except InvalidCommand:
            continue
        assert payload in policy.commands and plan.binary == policy.commands[payload].binary


@pytest.mark.parametrize("command", ["cat", "ls"])
def test_corpus_payloads_as_arguments_stay_literal_workspace_paths(
        policy: Policy, command: str) -> None:
    accepted = 0
    for payload in PAYLOADS:
        try:
            plan = plan_command(policy, [command, payload])
        except InvalidCommand:
            continue
        accepted += 1
        assert plan.binary == policy.commands[command].binary, payload
        assert plan.argv == [_bin(policy, command), "--", payload], payload
        assert not payload.startswith(("-", "/", "~")), payload
        assert check_workspace_path(payload) is None, payload
    assert accepted > 0  # most payloads are odd but harmless file names


def test_corpus_payloads_run_for_real_touch_nothing(policy: Policy, tmp_path: Path) -> None:
    """Run every accepted `cat <payload>` plan in an empty workspace: each only fails to find a
    file, and nothing is created (no `touch`, no redirection, no command substitution ran)."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    marker_payloads = [";touch pwned", "$(touch pwned)", "`touch pwned`", "|touch pwned",
                       "&& touch pwned", "a > pwned"]
    ran = 0
    for payload in [*PAYLOADS, *marker_payloads]:
        try:
            plan = plan_command(policy, ["cat", payload])
        except InvalidCommand:
            continue
        done = subprocess.run(plan.argv, executable=plan.binary, cwd=workspace,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              capture_output=True, timeout=10, check=False)
        assert done.returncode == 1 and done.stdout == b"", payload
        ran += 1
    assert ran > 0
    assert list(workspace.iterdir()) == []


def test_git_plans_ignore_a_hostile_repository_config(policy: Policy, tmp_path: Path) -> None:
    """A workspace repository whose config names a pager, an fsmonitor hook, an external diff
    and a textconv driver: none of them runs under the planned git command line."""
    _needs_git(policy)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                       timeout=30)

    git("init", "-q", ".")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    def evil(name: str) -> str:
        script = tmp_path / f"evil-{name}.sh"
        script.write_text(f'#!/bin/sh\ntouch "{tmp_path}/PWNED-{name}"\n'
                          f'if [ -f "$1" ]; then cat "$1"; else cat; fi\n')
        script.chmod(0o755)
        return str(script)

    for key, name in (("core.pager", "pager"), ("core.fsmonitor", "fsmonitor"),
                      ("diff.external", "external"), ("diff.evil.textconv", "textconv")):
        git("config", key, evil(name))
    (repo / ".gitattributes").write_text("* diff=evil\n")
    (repo / "a.txt").write_text("two\n")

    def pwned() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("PWNED"))

    # the threat is real: plain git runs the repository's programs
    subprocess.run(["git", "status"], cwd=repo, env=env, capture_output=True, timeout=30)
    subprocess.run(["git", "diff"], cwd=repo, env=env, capture_output=True, timeout=30)
    subprocess.run(["git", "diff", "--no-ext-diff"], cwd=repo, env=env, capture_output=True,
                   timeout=30)
    assert pwned() == ["PWNED-external", "PWNED-fsmonitor", "PWNED-textconv"]
    for name in pwned():
        (tmp_path / name).unlink()

    for argv in (["git", "status"], ["git", "log", "-p"], ["git", "diff"],
                 ["git", "show", "HEAD"], ["git", "diff", "HEAD", "--", "a.txt"]):
        plan = plan_command(policy, argv)
        done = subprocess.run(plan.argv, executable=plan.binary, cwd=repo, env=env,
                              capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, (argv, done.stderr)
    assert pwned() == []


# --- what the plan tells OpenClaw to check (issue 10, findings 2 and 3) ----------------------
@pytest.mark.parametrize(("argv", "paths", "recursive"), [
    (["cat", "a", "--", "-d/link"], ("a", "-d/link"), False),
    (["head", "-c", "30", "--", "-d/link"], ("-d/link",), False),
    (["grep", "-v", "-e", "PRIVATE", "link"], ("link",), False),
    (["grep", "PRIVATE", "link"], ("link",), False),
    (["grep", "-r", "-H", "", "proj"], ("proj",), True),
    (["grep", "-rH", "x"], (".",), True),
    (["ls", "-lR"], (".",), True),
    (["ls", "-l"], (), False),
    (["find", "proj", "-newer", "sub/link"], ("proj", "sub/link"), True),
    (["find", "-name", "x"], (".",), True),
    (["mkdir", "-p", "--", "-x/.git/hooks"], ("-x/.git/hooks",), False),
    (["cp", "-r", "a", "b"], ("a", "b"), True),
    (["git", "diff", "HEAD", "--", "a.txt"], ("a.txt",), False),
])
def test_the_plan_lists_every_path_and_whether_it_recurses(
        policy: Policy, argv: list[str], paths: tuple[str, ...], recursive: bool) -> None:
    if argv[0] == "git":
        _needs_git(policy)
    plan = plan_command(policy, argv)
    assert (plan.paths, plan.recursive, plan.name) == (paths, recursive, argv[0])


@pytest.mark.parametrize("argv", [
    ["git", "log", "--format=%H%(describe)"], ["git", "log", "--format", "tformat:%s"],
    ["git", "show", "--format=%B"], ["git", "log", "--date=format:%c"],
])
def test_git_has_no_free_text_format(policy: Policy, argv: list[str]) -> None:
    _needs_git(policy)
    with pytest.raises(InvalidCommand):
        plan_command(policy, argv)


def test_git_always_carries_every_protocol_switched_off(policy: Policy) -> None:
    _needs_git(policy)
    plan = plan_command(policy, ["git", "status"])
    pairs = {plan.argv[i + 1] for i, arg in enumerate(plan.argv[:-1]) if arg == "-c"}
    for name in ("ext", "fd", "file", "git", "http", "https", "ssh"):
        assert f"protocol.{name}.allow=never" in pairs
    assert {"protocol.allow=never", "safe.bareRepository=explicit",
            "core.hooksPath=/dev/null", "core.fsmonitor=false"} <= pairs


def test_glued_values_of_path_flags_are_listed_as_paths(tmp_path: Path) -> None:
    """`-fFILE`, `-f FILE` and `--file=FILE` all name FILE, for OpenClaw to check."""
    (tmp_path / "tools.toml").write_text((DEFAULT_POLICIES / "tools.toml").read_text())
    (tmp_path / "allowlist.toml").write_text(
        '[commands.head]\nbinary = "/usr/bin/head"\ntier = 1\n'
        'value_flags = { "-f" = "path", "--file" = "path", "-n" = "int" }\n')
    custom = load_policy(tmp_path)
    for argv in (["head", "-n1", "-fsub/link", "a"], ["head", "-f", "sub/link", "a"],
                 ["head", "--file=sub/link", "a"], ["head", "--file", "sub/link", "a"]):
        assert plan_command(custom, argv).paths == ("sub/link", "a"), argv
    with pytest.raises(InvalidCommand):
        plan_command(custom, ["head", "--file=../x", "a"])
