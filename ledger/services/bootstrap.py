"""``ledger init``: the registrar participant, its key and first token, and the ledger's own log key."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.errors import Conflict
from ledger.services.container import Services, load_signer
from ledger.store import repo

REGISTRAR_ID = "registrar"


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
) -> InitResult:
    """Create the log key and the registrar (genesis event, signed by the registrar's new key) and a token."""
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
        timestamp=timestamp_now(),
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
