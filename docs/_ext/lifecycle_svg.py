"""The lifecycle diagram as a self-contained SVG, drawn from the transition table when the
documentation is built.

sphinxcontrib-mermaid drew it in the reader's browser with mermaid.js fetched from a CDN, so
the page needed a network; Graphviz needs a system package that CI would have to install.
Here grandalf (pure Python, from PyPI) computes a layered (Sugiyama) layout and this module
writes the SVG: no binary, no network, at build time or in a test.

Each state is a ``<g class="state" data-state="...">`` and each arrow a
``<g class="transition" data-source="..." data-target="..." data-events="a b">``, with a
``<title>`` that browsers show on hover, so a test can read back exactly which states and
transitions the picture holds (``tests/test_cli.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout
from grandalf.routing import EdgeViewer, route_with_lines

__all__ = ["lifecycle_svg", "svg"]

_CHAR = 7.2  # average width of a 12 px sans-serif character
_LABEL_CHAR = 6.0  # and of a 10 px one
_PAD = 12
_HEIGHT = 30
_MARGIN = 20

_TERMINAL_FILL = "#eceff1"
_OPEN_FILL = "#e3f2fd"


class _Vertex(Vertex):
    """A vertex hashed by its position in the input: grandalf keeps vertices and edges in
    sets, which iterate by hash, and the default hash (the object's address) would lay the
    same graph out differently on every run."""

    def __init__(self, data: str, number: int) -> None:
        super().__init__(data)
        self.number = number

    def __hash__(self) -> int:
        return self.number


class _Edge(Edge):
    def __hash__(self) -> int:
        return int(self.v[0].number * 1000 + self.v[1].number)


class _Box:
    """The size grandalf lays out and the position it gives back."""

    def __init__(self, width: float, height: float) -> None:
        self.w = width
        self.h = height
        self.xy = (0.0, 0.0)


def svg(
    states: Sequence[str],
    transitions: Iterable[tuple[str, str, str]],
    terminal: Iterable[str] = (),
    title: str = "",
) -> str:
    """An SVG of ``states`` and ``(source, event, target)`` ``transitions``; events between
    the same two states share one arrow, labelled with all of them."""
    finals = set(terminal)
    events: dict[tuple[str, str], list[str]] = {}
    for source, event, target in transitions:
        events.setdefault((source, target), []).append(event)
    vertices = {name: _Vertex(name, number) for number, name in enumerate(states)}
    for name, vertex in vertices.items():
        vertex.view = _Box(len(name) * _CHAR + 2 * _PAD, _HEIGHT)
    edges = {}
    for source, target in events:
        if source != target:
            edge = _Edge(vertices[source], vertices[target])
            edge.view = EdgeViewer()
            edges[source, target] = edge
    graph = Graph(list(vertices.values()), list(edges.values()))
    for component in graph.C:
        layout = SugiyamaLayout(component)
        layout.xspace, layout.yspace = 24, 70
        # dummy vertices (the bends of long edges) default to the median state size,
        # which spreads every layer wide
        layout.dw, layout.dh = 6, 6
        roots = [v for v in component.sV if v.data == states[0]] or None
        layout.init_all(roots=roots)
        layout.route_edge = route_with_lines
        layout.draw(3)
    boxes = {name: v.view for name, v in vertices.items()}
    # every arrow's points (a loop beside its state) and where its label goes
    arrows: list[tuple[str, str, list[str], list[tuple[float, float]], tuple[float, float]]] = []
    for (source, target), names in events.items():
        if source == target:
            box = boxes[source]
            x, y = box.xy[0] + box.w / 2, box.xy[1]
            points = [(x, y - 6), (x + 40, y - 30), (x + 40, y + 30), (x, y + 6)]
            label_at = (x + 32, y)
        else:
            points = [(float(p[0]), float(p[1])) for p in edges[source, target].view._pts]
            # an arrow with one coming back along it: labels at different ends, not on top
            # of each other
            label_at = _along(points, 0.3 if (target, source) in events else 0.5)
        arrows.append((source, target, names, points, label_at))
    xs = [b.xy[0] - b.w / 2 for b in boxes.values()] + [b.xy[0] + b.w / 2 for b in boxes.values()]
    ys = [b.xy[1] - b.h / 2 for b in boxes.values()] + [b.xy[1] + b.h / 2 for b in boxes.values()]
    for _, _, names, points, label_at in arrows:
        xs += [p[0] for p in points] + [label_at[0] + len(" / ".join(names)) * _LABEL_CHAR + 6]
        ys += [p[1] for p in points] + [label_at[1] - 14]
    left, top = min(xs) - _MARGIN, min(ys) - _MARGIN
    width, height = max(xs) - left + _MARGIN, max(ys) - top + _MARGIN

    def at(x: float, y: float) -> str:
        return f"{x - left:.1f},{y - top:.1f}"

    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>" if title else "",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#455a64"/></marker></defs>',
    ]
    for source, target, names, points, label_at in arrows:
        label = " / ".join(names)
        attributes = (
            f"data-source={quoteattr(source)} data-target={quoteattr(target)} "
            f"data-events={quoteattr(' '.join(names))}"
        )
        out.append(f'<g class="transition" {attributes}>')
        out.append(f"<title>{escape(f'{source} → {target}: {label}')}</title>")
        if source == target:
            start, bend1, bend2, end = (at(*p) for p in points)
            out.append(
                f'<path d="M{start} C{bend1} {bend2} {end}" fill="none" stroke="#455a64" '
                'marker-end="url(#arrow)"/>'
            )
        else:
            out.append(
                f'<polyline points="{" ".join(at(*p) for p in points)}" fill="none" '
                'stroke="#455a64" marker-end="url(#arrow)"/>'
            )
        out.append(
            f'<text x="{label_at[0] - left + 3:.1f}" y="{label_at[1] - top - 3:.1f}" '
            f'font-size="10" fill="#37474f">{escape(label)}</text>'
        )
        out.append("</g>")
    for name in states:
        box = boxes[name]
        fill = _TERMINAL_FILL if name in finals else _OPEN_FILL
        stroke = ' stroke-width="2.5"' if name in finals else ""
        out.append(
            f'<g class="state" data-state={quoteattr(name)}><title>{escape(name)}</title>'
            f'<rect x="{box.xy[0] - box.w / 2 - left:.1f}" y="{box.xy[1] - box.h / 2 - top:.1f}" '
            f'width="{box.w:.1f}" height="{box.h:.1f}" rx="8" fill="{fill}" '
            f'stroke="#263238"{stroke}/>'
            f'<text x="{box.xy[0] - left:.1f}" y="{box.xy[1] - top + 4:.1f}" '
            f'text-anchor="middle">{escape(name)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(line for line in out if line) + "\n"


def _along(points: Sequence[Sequence[float]], fraction: float) -> tuple[float, float]:
    """The point ``fraction`` of the way along a polyline."""
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(points)]
    remaining = sum(lengths) * fraction
    for (a, b), length in zip(itertools.pairwise(points), lengths, strict=True):
        if remaining <= length and length:
            share = remaining / length
            return a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share
        remaining -= length
    return float(points[0][0]), float(points[0][1])


def lifecycle_svg() -> str:
    """The referral lifecycle, from :data:`referralkit.lifecycle.TABLE`."""
    from referralkit.lifecycle import TABLE
    from referralkit.model import Status

    order = {status: index for index, status in enumerate(Status)}
    triples = sorted(TABLE.pairs(), key=lambda t: (order[t[0]], order[t[2]], t[1]))
    return svg(
        [s.value for s in Status],
        [(s.value, e, t.value) for s, e, t in triples],
        terminal=[s.value for s in Status if s.is_terminal],
        title="The referral lifecycle: every state and transition",
    )
