"""``ledger init``: the registrar participant, its key and first token, the ledger's own log key, and the
built-in rule profiles published in the log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.errors import Conflict
from ledger.services.container import Services, load_signer
from ledger.store import repo

REGISTRAR_ID = "registrar"


@dataclass(frozen=True)
class PublishedBuiltin:
    id: str
    version: int
    content_hash: str
    event_id: str


@dataclass(frozen=True)
class InitResult:
    registrar: str
    registrar_key_path: Path
    log_key_path: Path
    token_path: Path
    token: str
    log_vkey: str


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


async def is_initialised(services: Services) -> bool:
    async with services.engine.connect() as conn:
        return await repo.registrar_exists(conn)


async def initialise(
    services: Services,
    *,
    registrar_id: str = REGISTRAR_ID,
    name: str = "Ledger registrar",
    country: str = "US",
    timestamp: str | None = None,
) -> InitResult:
    """Create the log key and the registrar (genesis event, signed by the registrar's new key) and a token.

    ``timestamp`` dates the genesis event (default now): nothing the registrar's key signs may be dated earlier.
    """
    settings = services.settings
    if await is_initialised(services):
        raise Conflict(f"the ledger at {settings.database_url} already has a registrar")
    for path in (settings.registrar_key_path, settings.registrar_token_path):
        if path.exists():
            raise Conflict(
                f"{path} exists but the database has no registrar; move it away or use another data dir"
            )
    if not settings.log_key_path.exists():
        SigningKey.generate().save(settings.log_key_path)
    signer = load_signer(settings)
    services.set_signer(signer)
    assert signer is not None
    vkey_path = settings.log_key_path.with_suffix(".vkey")
    if not vkey_path.exists():
        vkey_path.write_text(signer.vkey + "\n")  # public: hand it to whoever verifies checkpoints
    key = SigningKey.generate()
    genesis = ev.ParticipantAdmitted(
        actor=registrar_id,
        timestamp=timestamp or timestamp_now(),
        participant=ev.ParticipantInfo(
            id=registrar_id,
            name=name,
            roles=["registrar"],
            country=country,
            ownership=ev.Ownership(incorporated_in=country, headquartered_in=country),
        ),
        keys=[ev.NewKey(public_key=key.public_key_b64)],
    )
    (result,) = await services.submitter.submit([envelope_for(genesis, key)], submitter=None)
    if result.error is not None:
        raise result.error
    key.save(settings.registrar_key_path)
    issued = await services.tokens.issue(registrar_id, "created by ledger init")
    write_secret(settings.registrar_token_path, issued.token + "\n")
    return InitResult(
        registrar=registrar_id,
        registrar_key_path=settings.registrar_key_path,
        log_key_path=settings.log_key_path,
        token_path=settings.registrar_token_path,
        token=issued.token,
        log_vkey=signer.vkey,
    )


async def publish_builtin_profiles(
    services: Services, registrar_key: SigningKey, registrar_id: str = REGISTRAR_ID
) -> list[PublishedBuiltin]:
    """Publish, as ``profile_published`` events signed by the registrar, every built-in profile (sorted by id)
    whose (id, version) the log does not hold yet; return what was published. A built-in profile that a later
    version already supersedes in the log is left alone (a publication must raise the version)."""
    from ledger.rules.profiles import Profiles

    async with services.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(repo.profiles_t.c.id, sa.func.max(repo.profiles_t.c.version)).group_by(
                repo.profiles_t.c.id
            )
        )
        latest: dict[str, int] = {row[0]: int(row[1]) for row in rows}
    builtin = Profiles().builtin
    wanted = [builtin[i] for i in sorted(builtin) if builtin[i].version > latest.get(i, 0)]
    if not wanted:
        return []
    now = timestamp_now()
    envelopes = [
        envelope_for(
            ev.ProfilePublished(actor=registrar_id, timestamp=now, profile=profile.document()), registrar_key
        )
        for profile in wanted
    ]
    results = await services.submitter.submit(envelopes, submitter=None)
    published: list[PublishedBuiltin] = []
    for profile, result in zip(wanted, results, strict=True):
        if result.error is not None:
            raise result.error
        assert result.event_id is not None
        published.append(PublishedBuiltin(profile.id, profile.version, profile.content_hash, result.event_id))
    return published


async def publish_builtin_agreements(
    services: Services, registrar_key: SigningKey, registrar_id: str = REGISTRAR_ID
) -> list[PublishedBuiltin]:
    """Publish, as ``agreement_published`` events signed by the registrar, every built-in trade-agreement origin
    profile whose (id, version) the log does not hold yet (as :func:`publish_builtin_profiles` does for rule
    profiles); return what was published."""
    from ledger.rules.agreement import Agreements

    async with services.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(repo.agreements_t.c.id, sa.func.max(repo.agreements_t.c.version)).group_by(
                repo.agreements_t.c.id
            )
        )
        latest: dict[str, int] = {row[0]: int(row[1]) for row in rows}
    builtin = Agreements().builtin
    wanted = [builtin[i] for i in sorted(builtin) if builtin[i].version > latest.get(i, 0)]
    if not wanted:
        return []
    now = timestamp_now()
    envelopes = [
        envelope_for(
            ev.AgreementPublished(actor=registrar_id, timestamp=now, agreement=agreement.document()),
            registrar_key,
        )
        for agreement in wanted
    ]
    results = await services.submitter.submit(envelopes, submitter=None)
    published: list[PublishedBuiltin] = []
    for agreement, result in zip(wanted, results, strict=True):
        if result.error is not None:
            raise result.error
        assert result.event_id is not None
        published.append(
            PublishedBuiltin(agreement.id, agreement.version, agreement.content_hash, result.event_id)
        )
    return published
