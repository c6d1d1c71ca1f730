"""Reading commands for everyone who follows material: ``ledger batch show|history|lineage``, ``ledger
eligibility`` (the verdict in words, naming the reason that decided) and ``ledger bundle get`` (the proof bundle
for ``ledger verify bundle``, optionally verified on the spot against a pinned log key)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ledger.cli.common import (
    connection_options,
    emit,
    fail,
    inline_or_file,
    json_option,
    kg,
    log_key_option,
    make_client,
    reported,
)
from ledger.domain.lineage import mass_text
from ledger.rules.engine import Determination
from ledger.services.views import BatchView, HistoryView, LineageView, SubmitResultView
from ledger.services.wording import headline, share_line


@click.group()
def batch() -> None:
    """A batch: its state, its history (the hash chain) and its lineage."""


def _batch_text(view: BatchView) -> str:
    lines = [
        f"batch {view.id}: {view.mineral} {view.form.replace('_', ' ')}, {kg(view.mass_g)}, "
        f"{view.status.replace('_', ' ')}",
        f"  custodian: {view.custodian}" + (f" at {view.facility}" if view.facility else ""),
    ]
    if view.receiver:
        lines.append(
            f"  shipped to: {view.receiver}"
            + (f" ({view.receiver_facility})" if view.receiver_facility else "")
        )
    if view.lost_g:
        lines.append(f"  lost in transit: {kg(view.lost_g)}")
    if view.value is not None:
        lines.append(f"  declared value: {view.value.amount} {view.value.currency}")
    elif view.value_redacted:
        lines.append("  declared value: (not yours to see)")
    lines.append(f"  head: {view.head}")
    lines.append(f"  created by: {view.created_event}")
    return "\n".join(lines)


@batch.command("show")
@connection_options
@json_option
@click.argument("batch_id")
def batch_show(url: str, token: str | None, as_json: bool, batch_id: str) -> None:
    """The batch's state: custodian, facility, mass, status, head event."""
    with reported(), make_client(url, token, None, None, signs=False) as client:
        emit(client.batch(batch_id), as_json, _batch_text)


def _history_text(view: HistoryView) -> str:
    lines = [f"history of {view.batch}: {len(view.events)} events, oldest first"]
    for event in view.events:
        parent = event.payload.get("parent")
        link = f" <- {parent[:19]}..." if isinstance(parent, str) else ""
        lines.append(
            f"  #{event.log_index} {event.timestamp} {event.kind} by {event.actor} (key {event.key_id[:12]}...)"
        )
        lines.append(f"      {event.event_id}{link}")
    return "\n".join(lines)


@batch.command("history")
@connection_options
@json_option
@click.argument("batch_id")
def batch_history(url: str, token: str | None, as_json: bool, batch_id: str) -> None:
    """Every event on the batch in log order: its hash chain, who signed, when."""
    with reported(), make_client(url, token, None, None, signs=False) as client:
        emit(client.history(batch_id), as_json, _history_text)


def _lineage_text(view: LineageView) -> str:
    arrow = "from" if view.direction == "upstream" else "into"
    lines = [f"{view.direction} lineage of {view.root}: {len(view.batches)} batches"]
    flows: dict[str, list[str]] = {}
    for edge in view.edges:
        near, far = (edge.child, edge.parent) if view.direction == "upstream" else (edge.parent, edge.child)
        flows.setdefault(near, []).append(f"{far} ({kg(edge.mass_g)})")
    for node in view.batches:
        where = f" at {node.facility}" if node.facility else ""
        mass = mass_text(node.mass_g, node.status, node.used_up_g)
        lines.append(
            f"{'  ' * (node.depth + 1)}{node.id}: {node.mineral} {node.form.replace('_', ' ')}, {mass}, "
            f"custodian {node.custodian}{where}"
        )
        if node.id in flows:
            lines.append(f"{'  ' * (node.depth + 2)}{arrow} {', '.join(flows[node.id])}")
    return "\n".join(lines)


@batch.command("lineage")
@connection_options
@json_option
@click.argument("batch_id")
@click.option(
    "--direction", type=click.Choice(["upstream", "downstream"]), default="upstream", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="text for people; dot (Graphviz) or mermaid for a picture",
)
def batch_lineage(
    url: str, token: str | None, as_json: bool, batch_id: str, direction: str, fmt: str
) -> None:
    """Where the batch came from (upstream) or went (downstream)."""
    with reported(), make_client(url, token, None, None, signs=False) as client:
        if fmt != "text" and not as_json:
            click.echo(client.lineage_picture(batch_id, direction, fmt), nl=False)
            return
        emit(client.lineage(batch_id, direction), as_json, _lineage_text)


def _determination_text(determination: Determination) -> str:
    lines = [
        f"{determination.batch}: {headline(determination, determination.reasons)}",
        f"  {share_line(determination)}",
        f"  as of {determination.at}; {determination.events_considered} events considered",
        "reasons:",
    ]
    marks = {"pass": "+", "fail": "-", "info": "i"}
    for reason in determination.reasons:
        lines.append(f"  {marks[reason.outcome]} {reason.code}: {reason.message}")
    if determination.sources:
        lines.append("sources:")
        for source in determination.sources:
            lines.append(
                f"  {source.batch} ({source.kind}, {source.country}, {source.mineral}): "
                f"{source.traced_mass_g} g traced, qualifying {source.qualifying_fraction} by {source.rule}"
            )
    return "\n".join(lines)


@click.command()
@connection_options
@json_option
@click.argument("batch_id")
@click.option("--profile", default=None, help="rule profile id (default: the ledger's default, ptz-2026)")
@click.option("--at", default=None, help="determination date YYYY-MM-DD (default: today)")
@click.option(
    "--record", is_flag=True, help="also record the determination in the log (signed by the ledger)"
)
def eligibility(
    url: str,
    token: str | None,
    as_json: bool,
    batch_id: str,
    profile: str | None,
    at: str | None,
    record: bool,
) -> None:
    """Does the batch qualify? The verdict first, naming the reason that decided, then every reason."""
    with reported(), make_client(url, token, None, None, signs=False) as client:
        determination = client.eligibility(batch_id, profile, at)
        recorded: SubmitResultView | None = None
        if record:
            recorded = client.record_determination(batch_id, profile, at)
    if as_json:
        emit({"determination": determination, "recorded": recorded} if record else determination, True)
        return
    click.echo(_determination_text(determination))
    if recorded is not None:
        click.echo(f"recorded in the log as {recorded.event_id} (log index {recorded.log_index})")


@click.group()
def bundle() -> None:
    """Proof bundles, for `ledger verify bundle` (customs, auditors)."""


@bundle.command("get")
@connection_options
@json_option
@click.argument("batch_id")
@click.option("--profile", default=None, help="rule profile id (default ptz-2026)")
@click.option("--at", default=None, help="determination date YYYY-MM-DD (default today)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="file to write")
@click.option("--verify", "check", is_flag=True, help="verify it here, offline, before writing it")
@log_key_option(
    required=False, help="the log's verifier key to verify against (or a file); pin it out of band"
)
def bundle_get(
    url: str,
    token: str | None,
    as_json: bool,
    batch_id: str,
    profile: str | None,
    at: str | None,
    out: Path,
    check: bool,
    key: str | None,
) -> None:
    """Fetch a batch's proof bundle (eligibility evidence: every event, proof and the checkpoint) into a file."""
    with reported(), make_client(url, token, None, None, signs=False) as client:
        document = client.bundle(batch_id, profile, at)
    summary: dict[str, object] = {
        "file": str(out),
        "batch": batch_id,
        "entries": len(document.get("entries", [])),
    }
    if check:
        from ledger.rules.bundle import BundleError, verify_bundle
        from ledger.rules.profiles import Profiles

        if key is None:
            fail("--verify needs the log's verifier key, pinned out of band: --log-key VKEY (or a file)")
        vkey = inline_or_file(key)
        try:
            result = verify_bundle(document, vkey=vkey, local_profiles=Profiles().by_id)
        except BundleError as exc:
            fail(f"the bundle does not verify, not written: {exc}")
        summary["verified"] = True
        summary["verdict"] = result.determination.verdict
    out.write_text(json.dumps(document, indent=1))
    if as_json:
        emit(summary, True)
        return
    text = f"wrote {out}: {summary['entries']} entries"
    if check:
        text += f"; verified offline, verdict {summary['verdict']} reproduced"
    click.echo(text + f"; verify it anywhere with `ledger verify bundle {out} --log-key VKEY`")


COMMANDS = [batch, eligibility, bundle]
