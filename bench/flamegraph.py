"""A flame graph as a standalone SVG, from collapsed stacks ("a;b;c 12" per line).

Why our own: the profiler we sample with (py-spy) writes one SVG per process,
and a Sonia request crosses three to five processes. `bench/profile.py` merges
every service's samples under one root per service, and this module draws the
merged tree: width is the share of samples, each frame's tooltip (`<title>`)
gives its samples and percentage. No scripts, no external fonts, so the file
reads the same in a browser, a viewer or a code review.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

FRAME_H = 16
WIDTH = 1600
FONT_PX = 11
CHAR_PX = 6.4  # average width of a character of FONT_PX monospace, to decide what fits


@dataclass
class Node:
    name: str
    total: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    def child(self, name: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name)
        return node

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children.values()), default=0)


def tree(stacks: Iterable[tuple[list[str], int]], root: str = "all") -> Node:
    """Fold (frames root-first, count) pairs into one tree."""
    top = Node(root)
    for frames, count in stacks:
        top.total += count
        node = top
        for frame in frames:
            node = node.child(frame)
            node.total += count
    return top


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """Lines of `frame;frame;frame count`, as py-spy's raw format and flamegraph.pl use."""
    stacks = []
    for line in text.splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def _colour(name: str) -> str:
    """A warm colour that depends on the frame's module only, so one module keeps one hue."""
    module = name[name.find("(") + 1:].split(":")[0].split("/")[0] if "(" in name else name
    h = hashlib.sha256(module.encode()).digest()
    return f"rgb({205 + h[0] % 50},{80 + h[1] % 130},{30 + h[2] % 40})"


def render(top: Node, title: str, subtitle: str = "") -> str:
    """The SVG document for `top` (icicle order: root at the top, callees below)."""
    depth = top.depth()
    height = (depth + 3) * FRAME_H + 20
    scale = (WIDTH - 20) / max(1, top.total)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="{FONT_PX}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#f8f8f8"/>',
        f'<text x="10" y="16" font-size="14">{escape(title)}</text>',
        f'<text x="10" y="32" fill="#555">{escape(subtitle)}</text>',
    ]

    def draw(node: Node, x: float, level: int) -> None:
        width = node.total * scale
        if width < 0.3:
            return
        y = 44 + level * FRAME_H
        share = 100.0 * node.total / max(1, top.total)
        label = f"{node.name} ({node.total} samples, {share:.1f}%)"
        out.append(f'<g><title>{escape(label)}</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{FRAME_H - 1}" '
                   f'fill="{_colour(node.name)}" rx="1"/>')
        fits = int((width - 4) / CHAR_PX)
        if fits >= 3:
            text = node.name if len(node.name) <= fits else node.name[:max(1, fits - 2)] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + FRAME_H - 4}">{escape(text)}</text>')
        out.append("</g>")
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, child_x, level + 1)
            child_x += child.total * scale

    draw(top, 10.0, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"
