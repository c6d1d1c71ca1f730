"""Lineage drawn as inline SVG, server-side: one column per depth, one box per batch, an arrow per edge labelled
with the mass that moved along it. Batches the caller may not read are drawn as hidden boxes (no id, no mass),
so that the picture says that something is there without saying what."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from ledger.services.views import LineageView

BOX_W = 230
BOX_H = 86
GAP_X = 70
GAP_Y = 22
PAD = 12


@dataclass(frozen=True)
class _Box:
    key: str
    x: int
    y: int
    lines: tuple[str, ...]
    href: str | None
    root: bool = False
    hidden: bool = False


def grams(mass_g: int) -> str:
    """Mass for people: kilograms (or tonnes) with the grams exact below 1 kg."""
    if mass_g >= 1_000_000:
        return f"{mass_g / 1_000_000:,.3f} t".replace(".000 t", " t")
    if mass_g >= 1000:
        return f"{mass_g / 1000:,.3f} kg".replace(".000 kg", " kg")
    return f"{mass_g:,} g"


def _clip(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def lineage_svg(view: LineageView, countries: dict[str, str], hidden: dict[str, int] | None = None) -> Markup:
    """``view`` (upstream or downstream) as an SVG graph; ``countries`` maps a batch id to its facility's country;
    ``hidden`` counts, per visible batch, the children the caller may not read (downstream only)."""
    hidden = hidden or {}
    upstream = view.direction == "upstream"
    columns: dict[int, list[str]] = {}
    for node in view.batches:
        columns.setdefault(node.depth, []).append(node.id)
    for parent, count in sorted(hidden.items()):
        depth = next((n.depth for n in view.batches if n.id == parent), 0) + 1
        columns.setdefault(depth, []).append(f"hidden:{parent}:{count}")
    depths = sorted(columns)
    last = depths[-1] if depths else 0
    nodes = {n.id: n for n in view.batches}
    boxes: dict[str, _Box] = {}
    for depth in depths:
        column = last - depth if upstream else depth
        for row, key in enumerate(columns[depth]):
            x = PAD + column * (BOX_W + GAP_X)
            y = PAD + row * (BOX_H + GAP_Y)
            if key.startswith("hidden:"):
                count = int(key.rsplit(":", 1)[1])
                label = "1 hidden batch" if count == 1 else f"{count} hidden batches"
                boxes[key] = _Box(
                    key, x, y, (label, "not yours to see", "(another participant's flow)"), None, hidden=True
                )
                continue
            node = nodes[key]
            mass = "consumed" if node.status == "consumed" and node.mass_g == 0 else grams(node.mass_g)
            place = countries.get(node.id, "?")
            boxes[key] = _Box(
                key,
                x,
                y,
                (
                    _clip(node.id),
                    f"{node.mineral} {node.form} · {mass}",
                    _clip(f"{node.custodian} · {place}"),
                ),
                f"/ui/batches/{node.id}",
                root=node.id == view.root,
            )
    width = PAD * 2 + (last + 1) * BOX_W + last * GAP_X
    height = PAD * 2 + max((len(c) for c in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="lineage" role="img" aria-labelledby="lineage-{view.direction}-title" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="lineage-{view.direction}-title">{escape(view.direction.capitalize())} lineage of '
        f"{escape(view.root)}: {len(view.batches)} batches</title>",
        '<defs><marker id="arrow-'
        + view.direction
        + '" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    edges = [(e.parent, e.child, grams(e.mass_g)) for e in view.edges]
    edges += [(parent, f"hidden:{parent}:{count}", "") for parent, count in hidden.items()]
    for parent, child, label in edges:
        if parent not in boxes or child not in boxes:
            continue
        a, b = boxes[parent], boxes[child]
        x1, y1 = a.x + BOX_W, a.y + BOX_H // 2
        x2, y2 = b.x, b.y + BOX_H // 2
        dash = ' stroke-dasharray="5 4"' if b.hidden else ""
        parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#555" stroke-width="1.5"{dash} '
            f'marker-end="url(#arrow-{view.direction})"/>'
        )
        if label:
            parts.append(
                f'<text x="{(x1 + x2) // 2}" y="{(y1 + y2) // 2 - 4}" text-anchor="middle" font-size="11" '
                f'fill="#333">{escape(label)}</text>'
            )
    for box in boxes.values():
        fill = "#f1f1f1" if box.hidden else ("#fff4d6" if box.root else "#ffffff")
        stroke = "#999" if box.hidden else ("#b07d00" if box.root else "#3a5a80")
        dash = ' stroke-dasharray="5 4"' if box.hidden else ""
        rect = (
            f'<rect x="{box.x}" y="{box.y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{2 if box.root else 1.2}"{dash}/>'
        )
        texts = "".join(
            f'<text x="{box.x + 10}" y="{box.y + 22 + i * 22}" font-size="{13 if i == 0 else 12}" '
            f'font-weight="{"bold" if i == 0 else "normal"}" fill="{"#666" if box.hidden else "#111"}">'
            f"{escape(line)}</text>"
            for i, line in enumerate(box.lines)
        )
        group = f'<g class="{"hidden-node" if box.hidden else "node"}">{rect}{texts}</g>'
        if box.href:
            group = f'<a href="{escape(box.href)}">{group}</a>'
        parts.append(group)
    parts.append("</svg>")
    return Markup("".join(parts))


def share_bar(share: float, threshold: float | None) -> Markup:
    """The qualifying share against the threshold: a horizontal bar with the threshold marked."""
    width, height = 600, 54
    filled = max(0.0, min(share, 1.0)) * width
    passed = threshold is None or share >= threshold
    parts = [
        f'<svg class="share" role="img" aria-label="qualifying share {share * 100:.2f} %'
        + (f" against a threshold of {threshold * 100:.2f} %" if threshold is not None else "")
        + f'" viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="0" y="10" width="{width}" height="24" fill="#e6e6e6"/>',
        f'<rect x="0" y="10" width="{filled:.1f}" height="24" fill="{"#2e7d32" if passed else "#c62828"}"/>',
    ]
    if threshold is not None:
        tx = threshold * width
        parts.append(f'<line x1="{tx:.1f}" y1="2" x2="{tx:.1f}" y2="42" stroke="#000" stroke-width="2"/>')
        anchor = "end" if threshold > 0.8 else "start"
        parts.append(
            f'<text x="{tx + (-4 if anchor == "end" else 4):.1f}" y="52" font-size="11" text-anchor="{anchor}">'
            f"threshold {threshold * 100:.2f} %</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


PALETTE = ["#2e7d32", "#66bb6a", "#1565c0", "#64b5f6", "#c62828", "#ef9a9a", "#6a1b9a", "#ffb300", "#8d6e63"]


def stacked_bar(parts_in: list[tuple[str, float]]) -> Markup:
    """Shares of the whole (label, fraction) as one stacked bar with a legend below."""
    width = 600
    rows = len(parts_in)
    height = 40 + rows * 20
    out = [
        f'<svg class="stack" role="img" aria-label="traced mass by source group" viewBox="0 0 {width} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg">'
    ]
    x = 0.0
    for i, (label, fraction) in enumerate(parts_in):
        w = max(fraction, 0.0) * width
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x:.1f}" y="4" width="{w:.1f}" height="24" fill="{colour}"><title>{escape(label)}: '
            f"{fraction * 100:.2f} %</title></rect>"
        )
        x += w
        out.append(f'<rect x="0" y="{38 + i * 20}" width="12" height="12" fill="{colour}"/>')
        out.append(
            f'<text x="18" y="{48 + i * 20}" font-size="12">{escape(label)}: {fraction * 100:.2f} %</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))
