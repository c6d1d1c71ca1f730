"""Recorded determinations as W3C Verifiable Credentials (``application/vc+jwt``), the ledger's ``did:web``
document, and the Bitstring Status List that marks credentials whose verdict a later revocation changed.

Credentials are signed with the ledger's log key (the key that already signs checkpoints and determinations),
published as the DID document's one verification method. A determination's credential is read under the same
scoping as the determination event itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain.keys import SigningKey
from ledger.errors import InvalidInput, LedgerError, NotFound
from ledger.interop import credentials as vc
from ledger.interop import untp
from ledger.rules.engine import determine
from ledger.services.eligibility import Eligibility, parse_day
from ledger.services.epcis import Epcis
from ledger.services.log import TransparencyLog
from ledger.services.origin import Origin
from ledger.services.registry import Registry
from ledger.services.tokens import Caller
from ledger.store.repo import (
    attestation_from_row,
    attestations_t,
    events_t,
    facilities_t,
    participants_t,
)

REVOKING_KINDS = ("revoke_attestation", "suspend_attestation")


log = logging.getLogger("ledger.credentials")


class Credentials:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        eligibility: Eligibility,
        log: TransparencyLog,
        epcis: Epcis,
        origin: Origin,
    ) -> None:
        self._engine = engine
        self._origin = origin
        self._epcis = epcis
        self._registry = registry
        self._eligibility = eligibility
        self._log = log
        self._revoked: tuple[int | None, set[int]] = (-1, set())
        """(index of the last revocation or suspension, indices) of the last status computation: recomputed only
        when a new revocation or suspension is logged."""
        self._revoking = asyncio.Lock()
        """One computation at a time: concurrent requests for the public list wait for it and share its answer."""

    def _key(self) -> SigningKey:
        signer = self._log.signer
        if signer is None:
            raise InvalidInput("this server has no log key, so it cannot sign credentials; run `ledger init`")
        return signer.key

    def did_document(self, host: str) -> dict[str, Any]:
        """The ledger's DID document for ``did:web:<host>``."""
        return vc.did_document(vc.did_web(host), self._key().public_key)

    async def determination(self, event_id: str, host: str, base_url: str, caller: Caller | None) -> str:
        """The credential of a recorded determination (eligibility or origin), as a compact JWS
        (``application/vc+jwt``)."""
        view = await self._registry.event(event_id, caller)
        document = view.payload.get("determination") if view.kind == "determination" else None
        if not isinstance(document, dict):
            raise NotFound(f"event {event_id!r} is not a recorded determination")
        did = vc.did_web(host)
        credential = vc.determination_credential(
            did=did,
            base_url=base_url,
            event_id=view.event_id,
            log_index=view.log_index,
            timestamp=view.timestamp,
            determination=document,
        )
        return vc.sign_jwt(credential, self._key(), f"{did}#{vc.KEY_FRAGMENT}")

    async def certificate(self, certificate_id: str, host: str, base_url: str, caller: Caller | None) -> str:
        """A certification of origin as a credential (read as ``GET /v1/certificates/{id}`` is), a compact JWS."""
        view = await self._origin.certificate(certificate_id, caller)
        did = vc.did_web(host)
        credential = vc.certificate_credential(
            did=did,
            base_url=base_url,
            certificate=view.certificate,
            event_id=view.event_id,
            log_index=view.log_index,
            certifier=view.certifier,
        )
        return vc.sign_jwt(credential, self._key(), f"{did}#{vc.KEY_FRAGMENT}")

    async def status_list(self, host: str, base_url: str) -> str:
        """The revocation status list credential, as a compact JWS: bit ``i`` is set when the determination at
        log index ``i`` has a different verdict now that later revocations and suspensions are in the log."""
        encoded = vc.encode_bitstring(await self.revoked_indices())
        did = vc.did_web(host)
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        credential = vc.status_list_credential(did=did, base_url=base_url, encoded=encoded, valid_from=now)
        return vc.sign_jwt(credential, self._key(), f"{did}#{vc.KEY_FRAGMENT}")

    async def revoked_indices(self) -> set[int]:
        """Log indices of eligibility determinations that a revocation or suspension logged after them changed:
        re-run under the same profile version and date, with the ledger as it stands, the verdict differs."""
        async with self._revoking:
            async with self._engine.connect() as conn:
                last_revocation = await conn.scalar(
                    sa.select(sa.func.max(events_t.c.log_index)).where(events_t.c.kind.in_(REVOKING_KINDS))
                )
                if last_revocation == self._revoked[0]:
                    return set(self._revoked[1])
                rows: Sequence[Any] = []
                if last_revocation is not None:
                    rows = (
                        await conn.execute(
                            sa.select(events_t.c.log_index, events_t.c.payload).where(
                                events_t.c.kind == "determination", events_t.c.log_index < last_revocation
                            )
                        )
                    ).all()
            revoked: set[int] = set()
            for index, payload in rows:
                document = json.loads(bytes(payload)).get("determination", {})
                if isinstance(document.get("agreement"), dict):
                    continue  # an origin determination: no attestations in it
                try:
                    changed = await self._changed(document)
                except (
                    LedgerError
                ) as exc:  # one determination that cannot be re-run must not take the list down
                    log.warning("status list: determination at log index %s cannot be re-run: %s", index, exc)
                    continue
                if changed:
                    revoked.add(int(index))
            self._revoked = (last_revocation, revoked)
            return set(revoked)

    async def _changed(self, document: dict[str, Any]) -> bool:
        named = document.get("profile", {})
        profile = await self._eligibility.profile(named.get("id"), named.get("version"))
        batch = str(document["batch"])
        evidence = await self._eligibility.evidence(batch, profile)
        again = determine(evidence.events, batch, profile, parse_day(str(document["at"])))
        return again.verdict != document.get("verdict")

    async def traceability(self, batch_id: str, host: str, base_url: str, caller: Caller | None) -> str:
        """A UNTP Digital Traceability Event credential of the batch's custody events, as the caller may see
        them (404 for a batch it may not read), as a compact JWS."""
        document = await self._epcis.batch_events(batch_id, caller)
        events = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        did = vc.did_web(host)
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        credential = untp.traceability_credential(
            did=did, base_url=base_url, batch_id=batch_id, events=events, valid_from=now
        )
        return vc.sign_jwt(credential, self._key(), f"{did}#{vc.KEY_FRAGMENT}")

    async def conformity(self, attestation_id: str, host: str, base_url: str) -> str:
        """A UNTP Digital Conformity Credential of an attestation (attestations are public to every participant,
        as ``GET /v1/facilities/{id}/attestations`` shows them), as a compact JWS."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(attestations_t).where(attestations_t.c.id == attestation_id))
            ).first()
            if row is None:
                raise NotFound(f"attestation {attestation_id!r} does not exist")
            record = attestation_from_row(row)
            owner_id = record.subject_id
            subject_name = record.subject_id
            if record.subject_kind == "facility":
                facility = (
                    await conn.execute(sa.select(facilities_t).where(facilities_t.c.id == record.subject_id))
                ).one()
                owner_id, subject_name = facility.participant_id, facility.name
            names = dict(
                (
                    await conn.execute(
                        sa.select(participants_t.c.id, participants_t.c.name).where(
                            participants_t.c.id.in_([owner_id, record.auditor])
                        )
                    )
                ).all()
            )
        attestation = {
            "id": record.id,
            "subject": {record.subject_kind: record.subject_id},
            "standard": record.standard,
            "level": record.level,
            "valid_from": record.valid_from.isoformat(),
            "valid_to": record.valid_to.isoformat(),
            "report_sha256": record.report_sha256,
            "minerals": list(record.minerals),
            "activities": list(record.activities),
            "event_id": record.event_id,
        }
        did = vc.did_web(host)
        credential = untp.conformity_credential(
            did=did,
            base_url=base_url,
            attestation=attestation,
            subject_name=subject_name,
            owner={"id": owner_id, "name": names.get(owner_id, owner_id)},
            auditor={"id": record.auditor, "name": names.get(record.auditor, record.auditor)},
            stands=record.revoked_on is None and record.suspended_on is None,
        )
        return vc.sign_jwt(credential, self._key(), f"{did}#{vc.KEY_FRAGMENT}")
