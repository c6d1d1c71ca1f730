"""``ledger agreement``, ``ledger origin`` and ``ledger certificate``: trade-agreement origin from the command
line. Certificates are signed locally with the certifier's own key and submitted through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import json_flag, show, wants_json
from ledger.cli.common import participant_options as common_participant_options
from ledger.client import ClientError, LedgerClient
from ledger.domain.keys import SigningKey
from ledger.errors import LedgerError


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(1)


def _print(value: Any) -> None:
    show(value)


def _client(url: str, token: str | None, key_file: Path | None, actor: str | None) -> LedgerClient:
    from ledger.settings import Settings

    settings = Settings.from_env()
    if token is None and settings.registrar_token_path.exists():
        token = settings.registrar_token_path.read_text().strip()
    if token is None:
        _fail("no --token given (or LEDGER_TOKEN), and no registrar token in LEDGER_DATA_DIR")
    key = SigningKey.load(key_file) if key_file is not None else None
    if key is None and actor in (None, "registrar") and settings.registrar_key_path.exists():
        key = SigningKey.load(settings.registrar_key_path)
    return LedgerClient(url, token=token, actor=actor or "registrar", key=key)


def participant_options(func: Any) -> Any:
    """The shared connection and signer options (``--url``, ``--token``, ``--as``, ``--key-file``) and ``--json``."""
    return json_flag(common_participant_options(func))


@click.group()
def agreement() -> None:
    """Trade-agreement origin profiles (registrar)."""


@agreement.command("publish")
@participant_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def agreement_publish(
    url: str, token: str | None, key_file: Path | None, actor: str | None, path: Path
) -> None:
    """Publish an agreement profile (a TOML file like ledger/rules/agreements/usmca.toml) in the log."""
    from ledger.rules.agreement import load_agreement

    try:
        loaded = load_agreement(path)
    except LedgerError as exc:
        _fail(" ".join(exc.detail.split()))
        return
    with _client(url, token, key_file, actor) as client:
        try:
            result = client.publish_agreement(loaded.document())
        except ClientError as exc:
            _fail(str(exc))
            return
    _print(
        {
            "id": loaded.id,
            "version": loaded.version,
            "content_hash": loaded.content_hash,
            "event_id": result.event_id,
            "log_index": result.log_index,
            "status": result.status,
        }
    )


@click.command("origin")
@participant_options
@click.argument("batch")
@click.option("--agreement", "agreement_id", default=None, help="agreement profile id (default usmca)")
@click.option("--method", type=click.Choice(["tv", "nc"]), default=None, help="RVC method (default tv)")
@click.option("--at", default=None, help="determination date YYYY-MM-DD (default today)")
@click.option("--record", is_flag=True, help="record the determination in the log (signed by the ledger)")
def origin(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str | None,
    batch: str,
    agreement_id: str | None,
    method: str | None,
    at: str | None,
    record: bool,
) -> None:
    """Does a good originate under a trade agreement? With --record, log the determination (its event id is
    what a certificate of origin cites)."""
    with _client(url, token, key_file, actor) as client:
        try:
            if record:
                _print(client.record_origin(batch, agreement_id, method, at))
            else:
                _print(client.origin(batch, agreement_id, method, at))
        except ClientError as exc:
            _fail(str(exc))


@click.group()
def certificate() -> None:
    """Certifications of origin (importer, exporter or producer)."""


@certificate.command("issue")
@participant_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def certificate_issue(
    url: str, token: str | None, key_file: Path | None, actor: str | None, path: Path
) -> None:
    """Sign a certification of origin (a JSON file with the nine data elements of USMCA Annex 5-A) with your own
    key and submit it; a missing or malformed element is named before anything is sent."""
    if key_file is None or actor is None:
        _fail("a certificate is signed by its certifier: give --as PARTICIPANT and --key-file KEYFILE")
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(f"{path.name} is not a JSON document: {exc}")
        return
    with _client(url, token, key_file, actor) as client:
        try:
            result = client.issue_certificate(document)
        except LedgerError as exc:
            _fail(f"{path.name}: {exc.detail}")
            return
        except ClientError as exc:
            _fail(str(exc))
            return
    _print(result)


def _certificate_text(document: dict[str, Any]) -> str:
    certificate = document.get("certificate", document)
    goods = certificate.get("goods", [])
    lines = [
        f"certificate {certificate.get('id')} ({certificate.get('agreement')}), certified by "
        f"{document.get('certifier', (certificate.get('certifier') or {}).get('name'))} as {certificate.get('certifier_role')}",
    ]
    period = certificate.get("blanket_period")
    if period:
        lines.append(f"  blanket period: {period.get('from')} to {period.get('to')}")
    for good in goods:
        lines.append(
            f"  good {good.get('batch')}: HS {good.get('hs6')}, criterion {good.get('origin_criterion')}, "
            f"determination {good.get('determination')}"
        )
    if document.get("event_id"):
        lines.append(f"  signed in event {document['event_id']}")
    return "\n".join(lines)


@certificate.command("show")
@participant_options
@click.argument("certificate_id")
def certificate_show(
    url: str, token: str | None, key_file: Path | None, actor: str | None, certificate_id: str
) -> None:
    """One certification of origin: its data elements, certifier, goods and the determinations they cite."""
    with _client(url, token, key_file, actor) as client:
        try:
            document = client.certificate(certificate_id)
        except ClientError as exc:
            _fail(str(exc))
            return
    show(document, _certificate_text)


@certificate.command("bundle")
@participant_options
@click.argument("certificate_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def certificate_bundle(
    url: str, token: str | None, key_file: Path | None, actor: str | None, certificate_id: str, out: Path
) -> None:
    """Fetch a certificate's bundle (customs, auditors, the registrar) to verify with `ledger verify bundle`."""
    with _client(url, token, key_file, actor) as client:
        try:
            bundle = client.certificate_bundle(certificate_id)
        except ClientError as exc:
            _fail(str(exc))
            return
    out.write_text(json.dumps(bundle, indent=1))
    entries = len(bundle.get("entries", []))
    if wants_json():
        show({"file": str(out), "certificate": certificate_id, "entries": entries})
        return
    click.echo(f"wrote {out}: {entries} entries; verify it with `ledger verify bundle {out} --log-key VKEY`")
