"""``ledger epcis import``: an EPCIS 2.0 JSON-LD document onto the ledger. Each event is mapped onto a ledger
event (``ledger.interop.epcis_import``), shown, signed locally with its maker's key and submitted in batches;
an event that cannot be mapped is reported with the reason and nothing of it is submitted."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ledger.client import ClientError, LedgerClient, envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.errors import LedgerError
from ledger.interop.epcis_import import Mapped, Plan, all_batches_named, plan

DEFAULT_BATCH = 200
"""Envelopes per ``POST /v1/events/batch`` (the server takes up to LEDGER_MAX_BATCH)."""


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(1)


def _pairs(values: tuple[str, ...], default: str | None, what: str) -> dict[str, str]:
    """``PARTICIPANT=VALUE`` options (a bare VALUE is for ``--as``)."""
    found: dict[str, str] = {}
    for value in values:
        participant, sep, rest = value.partition("=")
        if not sep:
            if default is None:
                _fail(
                    f"a --{what} names no participant: write --{what} PARTICIPANT=... or give --as PARTICIPANT"
                )
            participant, rest = default or "", value
        found[participant] = rest
    return found


def _describe(item: Mapped) -> str:
    payload = ev.encode_event(item.event)
    kind = payload["kind"]
    match kind:
        case "extract":
            what = f"{payload['batch']['id']} ({payload['batch']['mass_g']} g) at {payload['facility']}"
        case "transfer":
            what = f"{payload['batch']} to {payload['to']}"
        case "receive":
            what = f"{payload['batch']} ({payload['mass_g']} g) at {payload['facility']}"
        case "transform" | "recycle":
            outputs = ", ".join(o["id"] for o in payload["outputs"])
            what = f"{', '.join(i['batch'] for i in payload.get('inputs', [])) or 'feedstock'} -> {outputs}"
        case "split":
            what = f"{payload['batch']} -> {', '.join(o['id'] for o in payload['outputs'])}"
        case _:
            what = f"{', '.join(i['batch'] for i in payload['inputs'])} -> {payload['output']}"
    return f"#{item.index} {kind} {what} by {payload['actor']}"


def _groups(items: list[Mapped], size: int) -> Iterator[list[Mapped]]:
    """Consecutive events of one signer, at most ``size`` at a time (a token submits its own events only)."""
    group: list[Mapped] = []
    for item in items:
        if group and (item.event.actor != group[0].event.actor or len(group) == size):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


@click.group()
def epcis() -> None:
    """GS1 EPCIS 2.0: import a document of events (export is GET /epcis/events)."""


@epcis.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="LEDGER_URL")
@click.option(
    "--key-file",
    "keys",
    multiple=True,
    envvar="LEDGER_KEY_FILE",
    help="[PARTICIPANT=]KEYFILE: the private signing key of a participant whose events to import (repeatable)",
)
@click.option(
    "--token", "tokens", multiple=True, help="[PARTICIPANT=]TOKEN: that participant's API token (repeatable)"
)
@click.option("--as", "actor", default=None, help="the participant a bare --key-file/--token is for, and the "
              "maker of events that name none")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="map and show the events, submit nothing")
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def epcis_import(
    file: Path,
    url: str,
    keys: tuple[str, ...],
    tokens: tuple[str, ...],
    actor: str | None,
    dry_run: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    """Map FILE (EPCIS 2.0 JSON-LD) onto ledger events, sign them locally, submit them in batches."""
    key_files = _pairs(keys, actor, "key")
    token_of = _pairs(tokens, actor, "token")
    if not key_files and not dry_run:
        _fail("give --key-file for the participant(s) whose events to import (or --dry-run)")
    if not token_of:
        _fail("give --token (the API token reads batch heads and submits)")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{file} is not JSON ({exc}); an EPCIS 2.0 JSON-LD document is")
    signing = {participant: SigningKey.load(Path(path)) for participant, path in key_files.items()}
    reader = next(iter(token_of.values()))
    with LedgerClient(url, token=reader) as client:
        try:
            heads = _heads(url, list(token_of.values()), all_batches_named(document))
            mapping = plan(document, heads, actor)
        except LedgerError as exc:
            _fail(exc.detail)
        report: dict[str, Any] = {"mapped": [], "not_imported": [], "submitted": []}
        ready: list[Mapped] = []
        for item in mapping.mapped:
            who = item.event.actor
            missing = "key-file" if who not in signing else "token" if who not in token_of else None
            if missing is not None and not dry_run:
                why = f"made by {who!r}, and no --{missing} {who}=... was given"
                report["not_imported"].append({"index": item.index, "eventID": item.epcis_id, "reason": why})
                continue
            ready.append(item)
            report["mapped"].append(
                {
                    "index": item.index,
                    "eventID": item.epcis_id,
                    "event_id": item.event_id,
                    "summary": _describe(item),
                }
            )
        report["not_imported"] += [
            {"index": s.index, "eventID": s.epcis_id, "reason": s.reason} for s in mapping.skipped
        ]
        report["not_imported"].sort(key=lambda entry: entry["index"])
        if not as_json:
            _show(mapping, report, dry_run)
        if not dry_run and ready:
            report["submitted"] = _submit(client, ready, signing, token_of, batch_size)
    rejected = [r for r in report["submitted"] if r["status"] == "rejected"]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not dry_run:
        accepted = sum(r["status"] == "accepted" for r in report["submitted"])
        duplicate = sum(r["status"] == "duplicate" for r in report["submitted"])
        for r in rejected:
            click.secho(f"  #{r['index']} rejected by the ledger: {r['problem']}", fg="red")
        click.echo(
            f"imported {accepted} events ({duplicate} were already there), {len(rejected)} rejected, "
            f"{len(report['not_imported'])} not imported"
        )
    if report["not_imported"] or rejected:
        raise SystemExit(1)


def _heads(url: str, tokens: list[str], batches: set[str]) -> dict[str, str]:
    """The head of every named batch that exists, asked with each participant's token in turn: a batch one
    participant may not read (404 to it) may be another's, and only a batch no token can read is taken as new."""
    heads: dict[str, str] = {}
    readers = [LedgerClient(url, token=token) for token in dict.fromkeys(tokens)]
    try:
        for batch in sorted(batches):
            for reader in readers:
                try:
                    heads[batch] = reader.batch(batch).head
                    break
                except ClientError as exc:
                    if exc.status != 404:
                        _fail(f"reading batch {batch!r}: {exc}")
    finally:
        for reader in readers:
            reader.close()
    return heads


def _show(mapping: Plan, report: dict[str, Any], dry_run: bool) -> None:
    verb = "would submit" if dry_run else "submitting"
    click.echo(f"{verb} {len(report['mapped'])} of {len(mapping.mapped) + len(mapping.skipped)} events:")
    for entry in report["mapped"]:
        click.echo(f"  {entry['summary']} -> {entry['event_id']}")
    if report["not_imported"]:
        click.secho(f"not imported ({len(report['not_imported'])}):", fg="yellow")
        for entry in report["not_imported"]:
            click.echo(f"  #{entry['index']}: {entry['reason']}")


def _submit(
    client: LedgerClient,
    ready: list[Mapped],
    signing: dict[str, SigningKey],
    token_of: dict[str, str],
    batch_size: int,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with click.progressbar(length=len(ready), label="submitting", file=sys.stderr) as bar:
        for group in _groups(ready, batch_size):
            who = group[0].event.actor
            envelopes = [envelope_for(item.event, signing[who]) for item in group]
            client.token = token_of[who]
            try:
                answer = client.submit_batch(envelopes)
            except ClientError as exc:
                _fail(f"submitting events of {who!r}: {exc}")
            for item, result in zip(group, answer.results, strict=True):
                problem = result.problem or {}
                entry: dict[str, Any] = {
                    "index": item.index,
                    "status": result.status,
                    "event_id": result.event_id,
                }
                if result.status == "rejected":
                    entry["problem"] = f"{problem.get('code', 'rejected')}: {problem.get('detail', '')}"
                results.append(entry)
            bar.update(len(group))
    return results
