"""``ledger untp import-dcc``: an auditor records, as an ``attest`` event, a UNTP Digital Conformity Credential it
already issued (``application/vc+jwt``, signed with its ledger key). The credential's proof is checked against
the auditor's keys in the ledger before anything is signed or submitted."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ledger.client import ClientError, LedgerClient, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey, decode_public_key
from ledger.errors import LedgerError
from ledger.interop.untp import attestation_from_dcc, verify_jwt


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(1)


@click.group()
def untp() -> None:
    """UN Transparency Protocol credentials (issuing them is GET /v1/credentials/...)."""


@untp.command("import-dcc")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="LEDGER_URL")
@click.option("--as", "auditor", required=True, help="the auditor that issued the credential")
@click.option(
    "--key-file",
    "key_file",
    required=True,
    envvar="LEDGER_KEY_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the auditor's private key file",
)
@click.option("--token", required=True, envvar="LEDGER_TOKEN", help="the auditor's API token")
def import_dcc(file: Path, url: str, auditor: str, key_file: Path, token: str) -> None:
    """Check FILE's proof (a DCC as a compact JWS) against AUDITOR's keys, then record it as an attestation."""
    text = file.read_text(encoding="utf-8").strip()
    key = SigningKey.load(key_file)
    with LedgerClient(url, token=token, actor=auditor, key=key) as client:
        try:
            participant = client.participant(auditor)
        except ClientError as exc:
            _fail(f"reading {auditor!r}: {exc}")
        valid = [decode_public_key(k.public_key) for k in participant.keys if k.revoked_at is None]
        try:
            credential = verify_jwt(text, valid)
            attestation = attestation_from_dcc(credential)
            event = ev.decode_event(
                {"kind": "attest", "actor": auditor, "timestamp": timestamp_now(), "attestation": attestation}
            )
        except LedgerError as exc:
            _fail(exc.detail)
        try:
            result = client.submit(event)
        except ClientError as exc:
            _fail(str(exc))
    click.echo(
        json.dumps(
            {"status": result.status, "event_id": result.event_id, "attestation": attestation}, indent=2
        )
    )
