"""The shape of the house, read from the code: the import graph of `src/sonia`.

Layers, lowest first; a module may import from its own layer's area or below,
never above, and no two services import each other (they talk over HTTP):

    sonia, errors, files              the package root, the one exception tree, atomic files
    config, redact, policies,         settings, secret redaction, default policy files,
    systemd                           the shipped systemd units
    home                              the home directory, secrets, API keys
    kit                               what every service is built from
    actions                           tool specs, policy, plans, grants, ledger, audit
    services.<name>, backup, pgdump,  the six services (each alone) and the data tools
    replica                           (a replica home is made from a home's files)
    services (runner), supervisor,    starting services, watching processes,
    testing, pgserver                 the in-process test client, a throwaway PostgreSQL
    gates, release                    the release gates and the bundle
    cli, __main__                     the `sonia` command

Inside `gates`, no family (`soak/`, `chaos/`, `security/`, a single-module gate)
imports another; what they share is in `gates/common/`.

The graph is parsed with `ast` (no import runs), so the test also sees imports
inside functions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("sonia", "errors", "files"),
    ("config", "redact", "policies", "systemd"),
    ("home",),
    ("kit",),
    ("actions",),
    ("services.*", "backup", "pgdump", "replica"),
    ("services", "supervisor", "testing", "pgserver"),
    ("gates", "release"),
    ("cli", "__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                found.add(full if full in known else source)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def area(module: str) -> str:
    """`sonia.services.eva.app` -> `services.eva`; `sonia.gates.soak.verdict` -> `gates`."""
    parts = module.split(".")[1:]
    if not parts:
        return "sonia"
    if parts[0] == "services" and len(parts) > 2:
        return f"services.{parts[1]}"
    if parts[0] == "services" and len(parts) == 2 and (SRC / "sonia/services" / parts[1]).is_dir():
        return f"services.{parts[1]}"
    return parts[0]


def layer(module_area: str) -> int:
    for index, names in enumerate(LAYERS):
        if module_area in names or (module_area.startswith("services.") and "services.*" in names):
            return index
    raise AssertionError(f"{module_area} is in no layer: add it to LAYERS and the docstring")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if layer(area(b)) > layer(area(a)))


def between_services(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if area(a).startswith("services.") and area(b).startswith("services.")
                  and area(a) != area(b))


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward(graph()) == []


def test_services_import_nothing_from_each_other() -> None:
    assert between_services(graph()) == []


def gate_family(module: str) -> str | None:
    """`sonia.gates.soak.verdict` -> `soak`; `sonia.gates.gonogo` -> `gonogo`; None outside."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "gates" else None


SHARED_IN_GATES = {"common", "catalog", "registry", "waivers"}
"""The parts of `gates` that are not a gate family (shared, or the machinery above them)."""


def between_gate_families(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for a, targets in edges.items():
        for b in targets:
            fa, fb = gate_family(a), gate_family(b)
            if fa and fb and fa != fb and fb not in SHARED_IN_GATES and fa not in {
                    "catalog", "registry", "waivers"}:
                found.append(f"{a} -> {b}")
    return sorted(found)


def test_no_gate_family_imports_another() -> None:
    assert between_gate_families(graph()) == []


def test_an_import_between_gate_families_is_found() -> None:
    edges = {"sonia.gates.chaos.gate": {"sonia.gates.soak.loadgen"},
             "sonia.gates.soak.loadgen": set()}
    assert between_gate_families(edges) == ["sonia.gates.chaos.gate -> sonia.gates.soak.loadgen"]


def test_every_area_has_a_layer() -> None:
    for module in graph():
        layer(area(module))


# The checks above must be able to fail: each is fed a graph with the fault.

def test_a_cycle_is_found() -> None:
    assert cycles({"sonia.a": {"sonia.b"}, "sonia.b": {"sonia.a"}}) == [["sonia.a", "sonia.b"]]


def test_an_upward_import_is_found() -> None:
    assert upward({"sonia.kit.app": {"sonia.gates.soak"}, "sonia.gates.soak": set()}) == [
        "sonia.kit.app -> sonia.gates.soak"]


def test_an_import_between_services_is_found() -> None:
    edges = {"sonia.services.openclaw.app": {"sonia.services.eva.plan"},
             "sonia.services.eva.plan": set()}
    assert between_services(edges) == ["sonia.services.openclaw.app -> sonia.services.eva.plan"]


def layout_paths(design: str) -> list[str]:
    """The paths named in the first column of DESIGN.md's code layout block."""
    block = design.split("## Code layout", 1)[1].split("```", 2)[1]
    base, paths = "", []
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 6):  # blank, or a description's next line
            continue
        first = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if not line.startswith(" "):
            base = first
            paths.append(first)
            continue
        paths += [base + name.strip().replace("<name>", "eva") for name in first.split(",")]
    return paths


def test_code_layout_paths_exist() -> None:
    """Every path DESIGN.md's code layout names is in the tree."""
    paths = layout_paths((SRC.parent / "docs" / "DESIGN.md").read_text())
    assert len(paths) > 15, paths
    assert [p for p in paths if not (SRC.parent / p).exists()] == []


def test_a_layout_path_that_does_not_exist_is_found() -> None:
    design = "## Code layout\n```\nsrc/sonia/\n  nosuch.py   what\n  kit/   the kit\n```\n"
    assert layout_paths(design) == ["src/sonia/", "src/sonia/nosuch.py", "src/sonia/kit/"]
