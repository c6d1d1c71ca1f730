"""The ``ledger`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from ledger.cli.common import (
    Progress,
    connection_options,
    inline_or_file,
    json_flag,
    log_key_option,
    refuse_old_key,
    report,
    show,
    wants_json,
)
from ledger.client import ClientError, LedgerClient
from ledger.domain.keys import SigningKey
from ledger.errors import LedgerError
from ledger.settings import Settings

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def main() -> None:
    for noisy in ("httpx", "alembic", "ledger.store.db"):  # pool life-cycle lines are not for people
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cli(standalone_mode=True)
    except LedgerError as exc:
        fail(" ".join(exc.detail.split()))
    except (ClientError, httpx.TransportError) as exc:
        report(exc)


@click.group()
def cli() -> None:
    """Mineral provenance ledger: signed custody events, a transparency log, origin eligibility."""


# --- database ----------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@json_flag
def db_upgrade() -> None:
    """Migrate the database named by LEDGER_DATABASE_URL to the latest schema."""
    from ledger.store.db import create_engine, upgrade

    settings = Settings.from_env()

    async def go() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run(go())
    show(
        {"database": _safe_url(settings.database_url), "at_latest_schema": True},
        lambda d: f"database {d['database']} is at the latest schema",
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- server ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="API processes (PostgreSQL only)")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (refuses to start on an unmigrated database)."""
    import uvicorn

    from api import security
    from ledger.logs import configure as configure_logs
    from ledger.logs import uvicorn_log_config
    from ledger.services.limits import require_shared_limits
    from ledger.store.db import create_engine, ensure_migrated

    settings = Settings.from_env()
    if workers > 1 and settings.database_url.startswith("sqlite"):
        raise click.UsageError(
            f"--workers {workers} needs PostgreSQL: SQLite lets one process write at a time, so more workers "
            "would only queue on its lock; serve one worker, or set LEDGER_DATABASE_URL to a PostgreSQL database"
        )
    require_shared_limits(settings, workers)

    async def check() -> None:
        engine = create_engine(settings.database_url)
        try:
            await ensure_migrated(engine)
        finally:
            await engine.dispose()

    run(check())
    if workers > 1:
        _prometheus_multiprocess_dir(settings)
    configure_logs()
    logging.getLogger("ledger").info(
        f"serving the ledger on http://{host}:{port} (API docs: http://{host}:{port}/schema)"
    )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=uvicorn_log_config(),
        access_log=False,  # a tenth of a busy server's CPU; the app logs each request itself
        server_header=False,  # no "server: uvicorn" on every response: it tells an attacker, not a client
        # slow or idle clients must not hold connections: a deadline for each request's line and headers
        # (LEDGER_HEADER_TIMEOUT, in the protocol) and its body (LEDGER_BODY_TIMEOUT, in the app's edge), and
        # idle keep-alive connections closed after LEDGER_KEEPALIVE_TIMEOUT
        http=security.http_protocol(),
        loop=_event_loop(),
        timeout_keep_alive=settings.keepalive_timeout_seconds,
        h11_max_incomplete_event_size=security.MAX_HEADER_BYTES,
    )


def _prometheus_multiprocess_dir(settings: Settings) -> None:
    """Workers share their counters through files (prometheus_client's multiprocess mode): a fresh directory
    under the data directory, named in the environment the workers inherit."""
    import os
    import shutil

    directory = settings.data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _event_loop() -> str:
    """uvloop where it is installed (a dependency on Linux and macOS): a faster event loop for the same code."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# --- keys and bootstrap ------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="private key file to create"
)
@json_flag
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair; print the public key and key id."""
    if out.exists():
        fail(f"{out} already exists; a key file is never overwritten (choose another --out)")
    key = SigningKey.generate()
    key.save(out)
    show(
        {"key_id": key.key_id, "public_key": key.public_key_b64, "file": str(out)},
        lambda k: (
            f"wrote the private key {k['file']} (mode 0600; keep it secret)\n"
            f"public key: {k['public_key']}  (give it to the registrar)\nkey id: {k['key_id']}"
        ),
    )


@cli.command()
@click.option(
    "--if-needed", is_flag=True, help="do nothing (successfully) if the ledger already has a registrar"
)
@click.option("--registrar-id", default="registrar", show_default=True)
@click.option("--name", default="Ledger registrar", show_default=True)
@click.option("--country", default="US", show_default=True)
@json_flag
def init(if_needed: bool, registrar_id: str, name: str, country: str) -> None:
    """Create the registrar participant, its key and API token, and the ledger's log key, and publish the built-in
    rule profiles. With --if-needed on an initialised ledger: publish any built-in profile not yet published."""
    from ledger.services.bootstrap import (
        initialise,
        is_initialised,
        publish_builtin_agreements,
        publish_builtin_profiles,
    )
    from ledger.services.container import Services
    from ledger.store.db import ensure_migrated

    settings = Settings.from_env()
    lines: list[str] = []
    data: dict[str, Any] = {}

    def published_item(kind: str, item: Any) -> None:
        data.setdefault("published", []).append(
            {"kind": kind, "id": item.id, "version": item.version, "content_hash": item.content_hash}
        )

    async def go() -> None:
        services = Services(settings)
        try:
            await ensure_migrated(services.engine)
            if if_needed and await is_initialised(services):
                data.update(initialised=False, data_dir=str(settings.data_dir), published=[])
                lines.append(f"ledger already initialised; registrar credentials are in {settings.data_dir}/")
                if not settings.registrar_key_path.exists():
                    lines.append(
                        f"  {settings.registrar_key_path} is not here, so built-in rule profiles that are not yet "
                        "published were not checked; publish them with `ledger profile publish`"
                    )
                    return
                key = SigningKey.load(settings.registrar_key_path)
                for item in await publish_builtin_profiles(services, key, registrar_id):
                    published_item("profile", item)
                    lines.append(
                        f"  published built-in rule profile {item.id} version {item.version} "
                        f"({item.content_hash}) in event {item.event_id}"
                    )
                for item in await publish_builtin_agreements(services, key, registrar_id):
                    published_item("agreement", item)
                    lines.append(
                        f"  published built-in agreement profile {item.id} version {item.version} "
                        f"({item.content_hash}) in event {item.event_id}"
                    )
                return
            result = await initialise(services, registrar_id=registrar_id, name=name, country=country)
            published = await publish_builtin_profiles(
                services, SigningKey.load(result.registrar_key_path), result.registrar
            )
            agreements = await publish_builtin_agreements(
                services, SigningKey.load(result.registrar_key_path), result.registrar
            )
        finally:
            await services.close()
        data.update(
            initialised=True,
            registrar=result.registrar,
            registrar_key_file=str(result.registrar_key_path),
            log_key_file=str(result.log_key_path),
            log_vkey=result.log_vkey,
            token=result.token,
            token_file=str(result.token_path),
            published=[],
        )
        lines.append(f"registrar {result.registrar!r} created.")
        lines.append(f"  registrar key : {result.registrar_key_path} (keep it secret)")
        lines.append(f"  log key       : {result.log_key_path}")
        lines.append(
            f"  log vkey      : {result.log_vkey} (also in {result.log_key_path.with_suffix('.vkey')})"
        )
        lines.append(f"  API token     : {result.token}")
        lines.append(f"  (shown once; a copy readable only by you is in {result.token_path})")
        for item in published:
            published_item("profile", item)
            lines.append(
                f"  rule profile  : {item.id} version {item.version} ({item.content_hash}) published"
            )
        for item in agreements:
            published_item("agreement", item)
            lines.append(
                f"  agreement     : {item.id} version {item.version} ({item.content_hash}) published"
            )

    run(go())
    show(data, lambda _: "\n".join(lines))


# --- registrar commands through the HTTP API ----------------------------------------------------------------


def _registrar_client(
    url: str, token: str | None, key_file: Path | None, actor: str, http: httpx.Client | None = None
) -> LedgerClient:
    settings = Settings.from_env()
    token_path = settings.registrar_token_path
    if token is None:
        if not token_path.exists():
            fail(f"no --token given and {token_path} does not exist; run `ledger init` or pass --token")
        token = token_path.read_text().strip()
    key = SigningKey.load(key_file or settings.registrar_key_path)
    return LedgerClient(url, token=token, actor=actor, key=key, http=http)


def registrar_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--url``, ``--token``, ``--key-file`` (the registrar's private key), ``--as`` and ``--json``."""
    func = json_flag(func)
    func = connection_options(func)
    func = click.option("--key", "old_key", hidden=True, expose_value=False, callback=refuse_old_key)(func)
    func = click.option(
        "--key-file",
        "key_file",
        default=None,
        type=click.Path(path_type=Path),
        help="the registrar's private key file; default: LEDGER_DATA_DIR/registrar.key",
    )(func)
    return click.option(
        "--as", "actor", default="registrar", show_default=True, help="registrar participant id"
    )(func)


def _print(value: Any) -> None:
    show(value)


@cli.group()
def participant() -> None:
    """Participants (registrar)."""


@participant.command("add")
@registrar_options
@click.option("--id", "participant_id", required=True)
@click.option("--name", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="repeat for several roles")
@click.option("--country", required=True, help="ISO 3166-1 alpha-2")
@click.option("--incorporated-in", default=None)
@click.option("--headquartered-in", default=None)
@click.option("--public-key", "public_keys", multiple=True, help="base64 Ed25519 public key (repeatable)")
def participant_add(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    participant_id: str,
    name: str,
    roles: tuple[str, ...],
    country: str,
    incorporated_in: str | None,
    headquartered_in: str | None,
    public_keys: tuple[str, ...],
) -> None:
    """Admit a participant."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(
            client.admit_participant(
                participant_id,
                name,
                list(roles),
                country,
                public_keys=list(public_keys),
                incorporated_in=incorporated_in,
                headquartered_in=headquartered_in,
            )
        )


@participant.command("list")
@registrar_options
def participant_list(url: str, token: str | None, key_file: Path | None, actor: str) -> None:
    """List participants."""
    with _registrar_client(url, token, key_file, actor) as client:
        show(client.participants(), _participants_text)


def _participants_text(listed: Any) -> str:
    lines = []
    for p in listed.items:
        valid = sum(1 for k in p.keys if k.revoked_at is None)
        facilities = ", ".join(f.id for f in p.facilities) or "no facility"
        lines.append(
            f"{p.id}: {p.name} ({', '.join(p.roles)}, {p.country}); {valid} valid key(s); {facilities}"
        )
    if listed.next_cursor:
        lines.append(f"(more after {listed.next_cursor})")
    return "\n".join(lines) or "no participants"


@cli.group()
def facility() -> None:
    """Facilities (registrar)."""


@facility.command("add")
@registrar_options
@click.option("--id", "facility_id", required=True)
@click.option("--participant", required=True)
@click.option("--kind", required=True, help="mine, refinery, smelter, plant, recycler, warehouse, port")
@click.option("--country", required=True)
@click.option("--name", required=True)
@click.option("--loss-tolerance", default="0.005", show_default=True)
def facility_add(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    facility_id: str,
    participant: str,
    kind: str,
    country: str,
    name: str,
    loss_tolerance: str,
) -> None:
    """Register a facility of a participant."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(
            client.register_facility(
                facility_id, participant, kind, country, name, loss_tolerance=loss_tolerance
            )
        )


@cli.group()
def key() -> None:
    """Participants' signing keys (registrar)."""


@key.command("add")
@registrar_options
@click.option("--participant", required=True)
@click.option("--public-key", required=True)
def key_add(
    url: str, token: str | None, key_file: Path | None, actor: str, participant: str, public_key: str
) -> None:
    """Add a key to a participant (rotation: the old key stays valid until revoked)."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.add_key(participant, public_key))


@key.command("revoke")
@registrar_options
@click.option("--participant", required=True)
@click.option("--key-id", required=True)
@click.option("--reason", required=True)
@click.option("--effective-at", default=None, help="RFC 3339; in the past for a compromise report")
def key_revoke(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    participant: str,
    key_id: str,
    reason: str,
    effective_at: str | None,
) -> None:
    """Revoke a key."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.revoke_key(participant, key_id, reason, effective_at=effective_at))


@cli.group()
def token() -> None:
    """API tokens (registrar)."""


@token.command("issue")
@registrar_options
@click.option("--participant", required=True)
@click.option("--label", default="")
def token_issue(
    url: str, token: str | None, key_file: Path | None, actor: str, participant: str, label: str
) -> None:
    """Issue a token for a participant; it is printed once."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.issue_token(participant, label))


@token.command("issue-local")
@click.option("--participant", required=True)
@click.option("--label", default="issued locally")
@json_flag
def token_issue_local(participant: str, label: str) -> None:
    """Issue a token straight in LEDGER_DATABASE_URL, for the operator of that database (a mirror, a restore):
    tokens are not part of the log, so a copy of a ledger starts with none."""
    from ledger.services.container import Services

    async def go() -> None:
        services = Services(Settings.from_env())
        try:
            _print(await services.tokens.issue(participant, label))
        finally:
            await services.close()

    try:
        run(go())
    except LedgerError as exc:
        fail(exc.detail)


@token.command("list")
@registrar_options
@click.option("--participant", default=None)
def token_list(
    url: str, token: str | None, key_file: Path | None, actor: str, participant: str | None
) -> None:
    """List tokens (ids, owners, state; never secrets)."""
    with _registrar_client(url, token, key_file, actor) as client:
        show(client.list_tokens(participant), _tokens_text)


def _tokens_text(listed: Any) -> str:
    lines = []
    for t in listed.items:
        state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
        expiry = f", expires {t.expires_at:%Y-%m-%d}" if t.expires_at else ""
        label = f" {t.label!r}" if t.label else ""
        lines.append(f"{t.id}: {t.participant}{label}, created {t.created_at:%Y-%m-%d}, {state}{expiry}")
    return "\n".join(lines) or "no tokens"


@token.command("revoke")
@registrar_options
@click.argument("token_id")
def token_revoke(url: str, token: str | None, key_file: Path | None, actor: str, token_id: str) -> None:
    """Revoke a token."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.revoke_token(token_id))


@cli.group()
def profile() -> None:
    """Rule profiles (registrar)."""


@profile.command("publish")
@registrar_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def profile_publish(url: str, token: str | None, key_file: Path | None, actor: str, path: Path) -> None:
    """Publish a rule profile (a TOML file like ledger/rules/profiles/*.toml) in the log."""
    from ledger.rules.profiles import load_profile

    try:
        loaded = load_profile(path)
    except LedgerError as exc:
        fail(" ".join(exc.detail.split()))  # one line, naming the file and the field
        return
    with _registrar_client(url, token, key_file, actor) as client:
        result = client.publish_profile(loaded.document())
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


@cli.group()
def owner() -> None:
    """Owners that are not participants (registrar)."""


@owner.command("add")
@registrar_options
@click.option("--id", "owner_id", required=True)
@click.option("--name", required=True)
@click.option(
    "--kind",
    required=True,
    help="government, government_official, state_enterprise, political_party, company, fund, person",
)
@click.option("--country", required=True, help="ISO 3166-1 alpha-2")
def owner_add(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    owner_id: str,
    name: str,
    kind: str,
    country: str,
) -> None:
    """Register an owner (a government, a state enterprise, a fund...)."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.register_owner(owner_id, name, kind, country))


@cli.group()
def stake() -> None:
    """Stakes of owners and participants in one another (registrar)."""


@stake.command("record")
@registrar_options
@click.option("--holder", required=True, help="owner or participant id")
@click.option("--subject", required=True, help="owner or participant id")
@click.option("--equity", default="0", show_default=True, help='share: a decimal ("0.25") or n/d ("1/3")')
@click.option("--votes", default="0", show_default=True)
@click.option("--board-seats", default="0", show_default=True)
@click.option("--effective-date", required=True, help="YYYY-MM-DD")
def stake_record(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    holder: str,
    subject: str,
    equity: str,
    votes: str,
    board_seats: str,
    effective_date: str,
) -> None:
    """Record the shares a holder holds in a subject from a date (all zero ends the holding)."""
    with _registrar_client(url, token, key_file, actor) as client:
        _print(
            client.record_stake(
                holder, subject, effective_date, equity=equity, votes=votes, board_seats=board_seats
            )
        )


@cli.group()
def rates() -> None:
    """Reference exchange rates (registrar)."""


def _rate(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        fail(f"--rate {text!r} is not FROM:TO:RATE (e.g. EUR:USD:1.0834)")
    return parts[0], parts[1], parts[2]


@rates.command("publish")
@registrar_options
@click.option("--date", "day", required=True, help="YYYY-MM-DD")
@click.option(
    "--rate",
    "rate_texts",
    multiple=True,
    required=True,
    help="FROM:TO:RATE, e.g. EUR:USD:1.0834 (repeatable)",
)
@click.option("--source", required=True, help="where the rates come from")
def rates_publish(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    day: str,
    rate_texts: tuple[str, ...],
    source: str,
) -> None:
    """Publish the reference exchange rates of a date (units of TO for one FROM)."""
    parsed = [_rate(text) for text in rate_texts]
    with _registrar_client(url, token, key_file, actor) as client:
        _print(client.publish_rates(day, parsed, source))


@cli.command()
@registrar_options
@click.option("--local", is_flag=True, help="run in-process against LEDGER_DATABASE_URL instead of a server")
@click.option("--if-empty", is_flag=True, help="only if the ledger holds no batch yet (used by make run)")
@click.option(
    "--suffix", default=None, help="appended to every demo id; default: none, or random if already played"
)
def demo(
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str,
    local: bool,
    if_empty: bool,
    suffix: str | None,
) -> None:
    """Play the demo supply chain (mine -> refinery -> cathode plant) through the API."""
    from ledger.cli.common import Progress
    from ledger.services.demo import DEMO_REQUESTS, play

    settings = Settings.from_env()
    as_json = wants_json()

    def played(registrar: LedgerClient) -> None:
        with Progress("playing the demo", "requests") as progress:
            say = (lambda _: None) if as_json else progress.echo
            done = [0]

            def count(_: httpx.Response) -> None:
                done[0] += 1
                progress.update(done[0], max(DEMO_REQUESTS, done[0]))

            registrar.http.event_hooks["response"].append(count)
            try:
                result = play(registrar, suffix=suffix, say=say, vkey=_local_vkey(settings))
            finally:
                registrar.http.event_hooks["response"].remove(count)
        if as_json:
            show({"suffix": result.suffix, "batches": result.batches, "requests": done[0]})

    if local:
        if not settings.demo and if_empty:
            click.echo("LEDGER_DEMO=0: not loading the demo supply chain")
            return
        from litestar.testing import TestClient

        from api.app import create_app

        with TestClient(app=create_app(settings)) as http:
            logging.getLogger("httpx").setLevel(logging.WARNING)  # the app's logging config reset it
            registrar = _registrar_client("", token, key_file, actor, http=http)
            if if_empty and registrar.http.get("/readyz").status_code == 200 and _has_batches(registrar):
                click.echo("the ledger already holds batches; not loading the demo")
                return
            click.echo("loading the demo supply chain (LEDGER_DEMO=0 turns this off)")
            played(registrar)
        return
    with _registrar_client(url, token, key_file, actor) as registrar:
        if if_empty and _has_batches(registrar):
            click.echo("the ledger already holds batches; not loading the demo")
            return
        played(registrar)


def _local_vkey(settings: Settings) -> str | None:
    """The log key that `ledger init` left here, pinned so the demo's bundle check does not trust the server."""
    path = settings.log_key_path.with_suffix(".vkey")
    return path.read_text().strip() if path.exists() else None


def _has_batches(client: LedgerClient) -> bool:
    response = client.http.get(
        "/v1/participants", params={"role": "miner", "limit": 1}, headers=client._auth()
    )
    return response.status_code == 200 and bool(response.json()["items"])


@cli.command()
@log_key_option(required=False, help="the log's verifier key (or a file); default LEDGER_DATA_DIR/log.vkey")
@json_flag
def audit(key: str | None) -> None:
    """Re-verify every event, parent link, mass balance and checkpoint in LEDGER_DATABASE_URL."""
    from datetime import timedelta

    from ledger.log.checkpoint import parse_verifier_key
    from ledger.services.audit import audit as run_audit
    from ledger.store.db import create_engine, ensure_migrated
    from ledger.tuning import tune_garbage_collector

    settings = Settings.from_env()
    vkey_path = settings.log_key_path.with_suffix(".vkey")
    vkey = inline_or_file(key) if key else None
    if vkey is None and vkey_path.exists():
        vkey = vkey_path.read_text()
    log_key = parse_verifier_key(vkey.strip()) if vkey else None
    if log_key is None:
        click.echo(
            "no log key given: checkpoint roots are compared, their signatures are not checked", err=True
        )

    bar = Progress("auditing", "events")
    tune_garbage_collector()

    def progress(done: int, total: int, seconds: float) -> None:
        bar.update(done, total)

    async def go() -> None:
        engine = create_engine(settings.database_url)
        try:
            await ensure_migrated(engine)
            report = await run_audit(
                engine,
                log_key=log_key,
                clock_skew=timedelta(seconds=settings.clock_skew_seconds),
                progress=progress,
            )
        finally:
            bar.close()
            await engine.dispose()
        rate = report.events / report.seconds if report.seconds else 0.0
        if wants_json():
            show(
                {
                    "passed": True,
                    "events": report.events,
                    "tree_size": report.tree_size,
                    "checkpoints": report.checkpoints,
                    "seconds": round(report.seconds, 3),
                    "suspect": list(report.suspect),
                    "signatures_checked": log_key is not None,
                }
            )
            return
        click.echo(
            f"audit passed: {report.events:,} events, Merkle tree of {report.tree_size:,} entries, "
            f"{report.checkpoints:,} checkpoints verified, in {report.seconds:.2f} s ({rate:,.0f} events/s)"
        )
        for event_id in report.suspect:
            click.echo(f"suspect (signed by a key after its reported compromise): {event_id}")

    try:
        run(go())
    except LedgerError as exc:
        bar.close()
        click.secho(f"AUDIT FAILED: {exc.detail}", fg="red", err=True)
        sys.exit(2)


@cli.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_flag
def export_command(path: Path) -> None:
    """Write the whole ledger (every entry as signed, every checkpoint) to PATH (JSON Lines; .gz compresses)."""
    from ledger.services.backup import export
    from ledger.store.db import create_engine, ensure_migrated

    settings = Settings.from_env()
    vkey_path = settings.log_key_path.with_suffix(".vkey")
    if not vkey_path.exists():
        fail(f"{vkey_path} is missing: run the export where the ledger's data directory is (LEDGER_DATA_DIR)")

    async def go() -> None:
        engine = create_engine(settings.database_url, statement_timeout_ms=0)
        try:
            await ensure_migrated(engine)
            report = await export(engine, path, settings.log_origin, vkey_path.read_text())
        finally:
            await engine.dispose()
        show(
            {"file": str(path), "entries": report.entries, "checkpoints": report.checkpoints},
            lambda _: f"exported {report.entries:,} entries and {report.checkpoints:,} checkpoints to {path}",
        )

    try:
        run(go())
    except LedgerError as exc:
        fail(exc.detail)


@cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@log_key_option(
    required=False,
    help="the log's verifier key (or a file) to check against; default LEDGER_DATA_DIR/log.vkey",
)
@json_flag
def import_command(path: Path, key: str | None) -> None:
    """Restore an export into the empty database at LEDGER_DATABASE_URL, replaying and verifying every entry and
    checkpoint; nothing is written unless all of it verifies. Issues the registrar a fresh API token."""
    from ledger.services.backup import import_ledger, registrar_of
    from ledger.services.bootstrap import write_secret
    from ledger.services.container import Services
    from ledger.store.db import ensure_migrated

    settings = Settings.from_env()
    vkey_path = settings.log_key_path.with_suffix(".vkey")
    vkey = inline_or_file(key) if key else None
    if vkey is None and vkey_path.exists():
        vkey = vkey_path.read_text()
    if not vkey:
        fail("pin the log's verifier key with --log-key (the export's own header is not trusted)")
        return

    async def go() -> None:
        services = Services(settings)
        try:
            await ensure_migrated(services.engine)
            with Progress("importing", "entries") as bar:
                report = await import_ledger(services.engine, path, vkey, progress=bar.update)
            registrar_id = await registrar_of(services.engine)
            if registrar_id is not None:
                issued = await services.tokens.issue(registrar_id, "issued by ledger import")
                # a token file already there belongs to the database the export came from (tokens are not
                # exported), so the restored ledger's token replaces it
                fresh = settings.registrar_token_path.with_name("registrar.token.new")
                fresh.unlink(missing_ok=True)
                write_secret(fresh, issued.token + "\n")
                fresh.replace(settings.registrar_token_path)
        finally:
            await services.close()
        token_note = (
            f"; the registrar's new API token is in {settings.registrar_token_path}" if registrar_id else ""
        )
        show(
            {
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "tree_size": report.tree_size,
                "registrar_token_file": str(settings.registrar_token_path) if registrar_id else None,
            },
            lambda _: (
                f"imported and verified {report.entries:,} entries and {report.checkpoints:,} checkpoints "
                f"(Merkle tree of {report.tree_size:,}){token_note}"
            ),
        )

    try:
        run(go())
    except LedgerError as exc:
        fail(f"IMPORT FAILED, nothing was written: {exc.detail}", code=2)


@cli.command("mirror")
@click.argument("url")
@click.option(
    "--token", "token", required=True, help="an API token of the source's registrar, an auditor or customs"
)
@log_key_option(required=True, help="the source log's verifier key (or a file), pinned out of band")
@click.option("--once", is_flag=True, help="one round, then exit (default: follow the source)")
@click.option("--interval", default=10.0, show_default=True, help="seconds between rounds when following")
@json_flag
def mirror_command(url: str, token: str, key: str, once: bool, interval: float) -> None:
    """Keep LEDGER_DATABASE_URL a verified, read-only copy of the ledger at URL (serve it with LEDGER_READ_ONLY=1).

    Each round checks the source's signed checkpoint, its consistency with the last one this mirror verified, and
    replays the new entries through the acceptance rules; a round that does not verify changes nothing, and the
    command exits 2 saying why (a rewritten, rolled-back or forked log, a tampered entry)."""
    import asyncio

    from ledger.services.backup import mirror_round
    from ledger.store.db import create_engine, ensure_migrated

    settings = Settings.from_env()
    vkey = inline_or_file(key)

    async def go() -> None:
        engine = create_engine(settings.database_url, statement_timeout_ms=0)
        try:
            await ensure_migrated(engine)
            while True:
                done = await mirror_round(engine, url, token, vkey)
                if done.after != done.before and not wants_json():
                    click.echo(f"mirrored entries {done.before:,} to {done.after:,} (verified)")
                if once:
                    show(
                        {"before": done.before, "after": done.after, "verified": True},
                        lambda d: (
                            f"the mirror holds {d['after']:,} entries, verified against the source's "
                            "checkpoint"
                        ),
                    )
                    return
                await asyncio.sleep(interval)
        finally:
            await engine.dispose()

    try:
        run(go())
    except LedgerError as exc:
        fail(f"MIRROR REFUSED, nothing was written this round: {exc.detail}", code=2)


@cli.group("log")
def log_group() -> None:
    """The transparency log."""


@log_group.command("integrate")
@json_flag
def log_integrate() -> None:
    """Fold every sequenced event into the Merkle tree now and sign a checkpoint (the server does this itself)."""
    from ledger.services.container import Services

    settings = Settings.from_env()

    async def go() -> int:
        services = Services(settings)
        try:
            return await services.log.integrate_all()
        finally:
            await services.close()

    show({"integrated": run(go())}, lambda d: f"integrated {d['integrated']:,} entries")


from ledger.cli.verify import verify  # noqa: E402
from ledger.cli.witness import monitor, witness  # noqa: E402

cli.add_command(verify)
cli.add_command(witness)
cli.add_command(monitor)

from ledger.cli.origin import agreement, certificate, origin  # noqa: E402

cli.add_command(agreement)
cli.add_command(origin)
cli.add_command(certificate)

from ledger.cli import batch as _batch  # noqa: E402
from ledger.cli import roles as _roles  # noqa: E402

for _command in (*_roles.COMMANDS, *_batch.COMMANDS):
    cli.add_command(_command)
from ledger.cli.epcis import epcis  # noqa: E402
from ledger.cli.untp import untp  # noqa: E402

cli.add_command(epcis)
cli.add_command(untp)

__all__ = ["cli", "main"]
