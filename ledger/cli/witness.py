"""``ledger witness``: run a C2SP tlog-witness; ``ledger monitor``: follow a ledger from outside."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click
from nacl.signing import SigningKey

from ledger.cli.common import inline_or_file
from ledger.log.checkpoint import CheckpointError
from ledger.log.cosignature import WitnessPolicy, witness_signer_key, witness_vkey


def _fail(message: str, code: int = 1) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(code)


@click.group()
def witness() -> None:
    """Witness another party's log: cosign only checkpoints consistent with what this witness saw before."""


@witness.command("keygen")
@click.option(
    "--name", required=True, help="the witness's name, e.g. witness.customs.example/w1 (no spaces or '+')"
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="where to write the private key (0600)",
)
def witness_keygen(name: str, out: Path) -> None:
    """Create a witness key; print its verifier key, which logs and verifiers configure."""
    if out.exists():
        _fail(f"{out} exists; refusing to overwrite a witness key")
    seed = os.urandom(32)
    try:
        private = witness_signer_key(name, seed)
    except CheckpointError as exc:
        _fail(f"cannot make a witness key: {exc}")
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(private + "\n")
    vkey = witness_vkey(name, SigningKey(seed).verify_key.encode())
    out.with_suffix(".vkey").write_text(vkey + "\n")
    click.echo(vkey)


@witness.command("serve")
@click.option(
    "--key-file", "key_file", required=True, type=click.Path(path_type=Path), help="the witness's private key"
)
@click.option(
    "--state",
    "state",
    required=True,
    type=click.Path(path_type=Path),
    help="directory of the witness's own state (the latest checkpoint it cosigned per log)",
)
@click.option(
    "--log-key",
    "log_keys",
    multiple=True,
    required=True,
    help="verifier key of a log to witness (its name is the log's origin), or a file holding it; repeatable",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
def witness_serve(key_file: Path, state: Path, log_keys: tuple[str, ...], host: str, port: int) -> None:
    """Serve the C2SP tlog-witness protocol: POST /add-checkpoint, GET /<origin hash>/checkpoint."""
    import uvicorn

    from ledger.services.witness import WitnessService, create_witness_app

    try:
        service = WitnessService(key_file.read_text(), [inline_or_file(k) for k in log_keys], state)
    except (OSError, CheckpointError) as exc:
        _fail(f"cannot start the witness: {exc}")
        return
    click.echo(f"witness {service.vkey} for {', '.join(sorted(service.log_keys))} on http://{host}:{port}")
    uvicorn.run(create_witness_app(service), host=host, port=port, log_level="warning")


@click.command("monitor")
@click.argument("url")
@click.option(
    "--state",
    "state",
    required=True,
    type=click.Path(path_type=Path),
    help="the monitor's own state directory",
)
@click.option(
    "--log-key", "log_key", required=True, help="the log's verifier key (or a file), pinned out of band"
)
@click.option(
    "--token",
    envvar="LEDGER_TOKEN",
    required=True,
    help="an API token allowed to read the log's entries (registrar, auditor or customs); or LEDGER_TOKEN",
)
@click.option(
    "--witness", "witnesses", multiple=True, help="a witness's verifier key (or a file); repeatable"
)
@click.option(
    "--quorum", type=int, default=None, help="cosignatures needed from --witness keys (default: all)"
)
@click.option(
    "--witness-url",
    "witness_urls",
    multiple=True,
    help="a witness's monitoring prefix, to compare its view of the log with this monitor's; repeatable",
)
@click.option("--webhook", default=None, help="URL to POST each alarm to, as JSON")
@click.option("--once", is_flag=True, help="one round, then exit (default: follow the log)")
@click.option("--interval", default=10.0, show_default=True, help="seconds between rounds when following")
def monitor(
    url: str,
    state: Path,
    log_key: str,
    token: str,
    witnesses: tuple[str, ...],
    quorum: int | None,
    witness_urls: tuple[str, ...],
    webhook: str | None,
    once: bool,
    interval: float,
) -> None:
    """Follow the ledger at URL from outside: check every checkpoint's consistency with the last one seen (and
    with the witnesses' views), replay every entry, keep a history; exit 3 on a rollback, a split view or any
    entry that does not verify."""
    from ledger.services.monitor import Monitor

    try:
        policy = WitnessPolicy.of([inline_or_file(w) for w in witnesses], quorum)
    except CheckpointError as exc:
        _fail(f"bad witness policy: {exc}", 2)
        return
    watcher = Monitor(url, state, inline_or_file(log_key), token, policy, witness_urls, webhook)

    async def go() -> int:
        while True:
            result = await watcher.round()
            for alarm in result.alarms:
                click.secho(f"ALARM {alarm.kind}: {alarm.detail}", fg="red", err=True)
            if result.alarms:
                return 3
            if result.after != result.before:
                click.echo(f"verified entries {result.before:,} to {result.after:,}")
            if once:
                click.echo(
                    f"OK: the log is consistent with everything this monitor has seen ({result.after:,} entries)"
                )
                return 0
            await asyncio.sleep(interval)

    sys.exit(asyncio.run(go()))
