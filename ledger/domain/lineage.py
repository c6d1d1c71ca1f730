"""Lineage graphs: which batches a batch came from (upstream) or went into (downstream), and their pictures."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UPSTREAM = "upstream"
DOWNSTREAM = "downstream"


@dataclass(frozen=True)
class LineageNode:
    id: str
    mineral: str
    form: str
    mass_g: int
    status: str
    custodian: str
    facility: str | None
    depth: int
    used_up_g: int | None = None
    """For a batch that holds nothing any more: the grams it held when it was consumed, split or merged."""


@dataclass(frozen=True)
class LineageEdge:
    parent: str
    child: str
    event_id: str
    mass_g: int


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kg(mass_g: int) -> str:
    kilograms, grams = divmod(mass_g, 1000)
    return f"{kilograms:,} kg" if grams == 0 else f"{kilograms:,}.{grams:03d} kg"


def _label(node: LineageNode) -> str:
    where = f" @ {node.facility}" if node.facility else ""
    return f"{node.id}\n{node.mineral} {node.form.replace('_', ' ')}\n{mass_text(node.mass_g, node.status, node.used_up_g)}{where}"


def mass_text(mass_g: int, status: str, used_up_g: int | None) -> str:
    """``3,000 kg (at facility)``; a batch used up shows the mass it had then: ``3,000 kg when consumed``."""
    words = status.replace("_", " ")
    if mass_g == 0 and used_up_g:
        return f"{_kg(used_up_g)} when {words}"
    return f"{_kg(mass_g)} ({words})"


def to_dot(root: str, direction: str, nodes: Iterable[LineageNode], edges: Iterable[LineageEdge]) -> str:
    """Graphviz DOT: material flows left to right, the queried batch is highlighted."""
    lines = [
        f"digraph {_dot_quote(f'{direction} lineage of {root}')} {{",
        "  rankdir=LR;",
        "  node [shape=box];",
    ]
    for node in nodes:
        style = ', style=filled, fillcolor="#ffe9a8"' if node.id == root else ""
        lines.append(f"  {_dot_quote(node.id)} [label={_dot_quote(_label(node))}{style}];")
    for edge in edges:
        lines.append(
            f"  {_dot_quote(edge.parent)} -> {_dot_quote(edge.child)} [label={_dot_quote(_kg(edge.mass_g))}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(index: int) -> str:
    return f"b{index}"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def to_mermaid(root: str, direction: str, nodes: Iterable[LineageNode], edges: Iterable[LineageEdge]) -> str:
    """Mermaid flowchart text; node ids are synthetic because batch ids may hold characters Mermaid reserves."""
    node_list = list(nodes)
    ids = {node.id: _mermaid_id(i) for i, node in enumerate(node_list)}
    lines = ["flowchart LR", f"  %% {direction} lineage of {root}"]
    for node in node_list:
        lines.append(f'  {ids[node.id]}["{_mermaid_text(_label(node))}"]')
    for edge in edges:
        if edge.parent in ids and edge.child in ids:
            lines.append(f'  {ids[edge.parent]} -->|"{_kg(edge.mass_g)}"| {ids[edge.child]}')
    if root in ids:
        lines.append(f"  style {ids[root]} fill:#ffe9a8")
    return "\n".join(lines) + "\n"
