"""Trade-agreement origin use cases: determine a good's origin, record it, bundle it; certifications of origin
and their bundles for customs.

The evidence is the eligibility service's (the batch's upstream lineage and the registry and attestation events it
relies on) plus the registrar's signed ``agreement_published`` entry of the agreement used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain import events as ev
from ledger.domain.keys import b64encode
from ledger.errors import Forbidden, InvalidInput, NotFound
from ledger.log import merkle
from ledger.rules.agreement import Agreement, Agreements, agreement_from_document
from ledger.rules.facts import LoggedEvent
from ledger.rules.origin import METHOD_PARAM, OriginDetermination, determine_origin, origin_document
from ledger.rules.origin_bundle import CERTIFICATE_BUNDLE_FORMAT, ORIGIN_BUNDLE_FORMAT
from ledger.services.access import Access, declares_values, privileged
from ledger.services.eligibility import (
    BUNDLE_WAIT_SECONDS,
    Eligibility,
    EnvelopeRow,
    Evidence,
    parse_day,
)
from ledger.services.log import TransparencyLog
from ledger.services.submit import Submitter
from ledger.services.tokens import Caller
from ledger.services.views import SubmitResultView, View
from ledger.store.repo import batch_events_t, certificates_t, events_t

_decoder = msgspec.json.Decoder(ev.Event)

AMOUNT_CODES = frozenset({"rvc-met", "rvc-below", "de-minimis-met", "de-minimis-exceeded"})
"""Reasons whose sentences state declared amounts (redacted for callers who did not declare them)."""


class AgreementView(View):
    id: str
    name: str
    version: int
    content_hash: str
    published: bool
    document: dict[str, Any]


class AgreementList(View):
    items: list[AgreementView]


class CertificateView(View):
    id: str
    event_id: str
    log_index: int
    certifier: str
    """The participant that signed it (the importer, exporter or producer named in element 1)."""
    agreement: str
    accepted_at: datetime
    batches: list[str]
    determinations: list[str]
    """The recorded origin determinations that support it, one per good."""
    certificate: dict[str, Any]
    """The certification as signed: the nine data elements of USMCA Annex 5-A."""


class CertificateList(View):
    items: list[CertificateView]


def parse_method(text: str | None) -> str:
    """``tv`` or ``nc`` (default ``tv``), the API's names for the transaction-value and net-cost methods."""
    if text is None or text == "":
        return "transaction_value"
    method = METHOD_PARAM.get(text)
    if method is None:
        raise InvalidInput(
            f"method {text!r} is not a regional value content method; use tv (transaction value) or nc (net cost)"
        )
    return method


def redact_origin(determination: OriginDetermination) -> OriginDetermination:
    """The determination without the amounts its producer declared (transaction value, net cost, materials'
    values): the verdict, the criterion, the RVC ratios and every reason stay."""
    reasons = [
        msgspec.structs.replace(r, message=f"{r.code}: the figures are withheld (declared by the producer)")
        if r.code in AMOUNT_CODES
        else r
        for r in determination.reasons
    ]
    failing = [r for r in reasons if r.outcome == "fail"] if determination.not_originating else []
    return msgspec.structs.replace(
        determination,
        rvc=[msgspec.structs.replace(v, base=None, vnm=None, formula="redacted") for v in determination.rvc],
        materials=[msgspec.structs.replace(m, value=None) for m in determination.materials],
        de_minimis=(
            msgspec.structs.replace(determination.de_minimis, limit=None, non_shifting_value=None)
            if determination.de_minimis is not None
            else None
        ),
        reasons=reasons,
        not_originating=failing,
    )


def _within_lineage(evidence: Evidence) -> Evidence:
    """Leave out the productions and merges that consumed a batch of the lineage together with material from
    outside it (and whatever was built on them): they make goods outside the lineage, and their other inputs'
    histories are not evidence, so a bundle could not show their parent links."""
    present = {logged.event_id for logged in evidence.events}
    while True:
        dropped = [
            logged
            for logged in evidence.events
            if isinstance(logged.event, ev.Transform | ev.Recycle | ev.Merge)
            and any(item.parent not in present for item in logged.event.inputs)
        ]
        if not dropped:
            return evidence
        for logged in dropped:
            present.discard(logged.event_id)
            evidence.rows.pop(logged.log_index, None)
        evidence.events = [logged for logged in evidence.events if logged.event_id in present]


_ORIGIN_COLUMNS = (
    events_t.c.log_index,
    events_t.c.event_id,
    events_t.c.key_id,
    events_t.c.payload_type,
    events_t.c.payload,
    events_t.c.signatures,
    events_t.c.accepted_at,
)
"""What an agreement's or a cited event's row gives: the engine's fields and the envelope's."""


class Origin:
    def __init__(
        self,
        engine: AsyncEngine,
        eligibility: Eligibility,
        log: TransparencyLog,
        submitter: Submitter,
        access: Access,
    ) -> None:
        self._engine = engine
        self._eligibility = eligibility
        self._log = log
        self._submitter = submitter
        self._access = access
        self.agreements = Agreements()
        self._seen = -1
        self._rows: dict[tuple[str, int], int] = {}
        """(agreement id, version) -> log index of its ``agreement_published`` entry."""

    # --- agreements ------------------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Read the ``agreement_published`` events not yet seen (the log only grows)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(events_t.c.log_index, events_t.c.payload)
                .where(events_t.c.kind == "agreement_published", events_t.c.log_index > self._seen)
                .order_by(events_t.c.log_index)
            )
            for index, payload in rows:
                event = _decoder.decode(bytes(payload))
                assert isinstance(event, ev.AgreementPublished)
                agreement = agreement_from_document(event.agreement, "published in the log")
                self.agreements.add(agreement)
                self._rows[(agreement.id, agreement.version)] = index
                self._seen = max(self._seen, index)

    async def agreement(self, agreement_id: str | None, version: int | None = None) -> Agreement:
        await self._refresh()
        return self.agreements.get(agreement_id, version)

    def _view(self, agreement: Agreement) -> AgreementView:
        return AgreementView(
            id=agreement.id,
            name=agreement.name,
            version=agreement.version,
            content_hash=agreement.content_hash,
            published=(agreement.id, agreement.version) in self._rows,
            document=agreement.document(),
        )

    async def agreement_list(self) -> AgreementList:
        await self._refresh()
        current = self.agreements.by_id
        return AgreementList(items=[self._view(current[i]) for i in sorted(current)])

    async def agreement_view(self, agreement_id: str) -> AgreementView:
        return self._view(await self.agreement(agreement_id))

    # --- determinations --------------------------------------------------------------------------------------

    async def evidence(
        self, batch_ids: set[str], agreements: list[Agreement], extra: set[str] | None = None
    ) -> Evidence:
        """The lineage evidence of ``batch_ids``, the agreements' signed entries, and the events ``extra`` names."""
        # with envelopes: a determination's evidence and its bundle come from the same rows
        evidence = await self._eligibility.evidence_for(batch_ids, envelopes=True)
        indices = [i for a in agreements if (i := self._rows.get((a.id, a.version))) is not None]
        async with self._engine.connect() as conn:
            query = sa.select(*_ORIGIN_COLUMNS).where(
                sa.or_(events_t.c.event_id.in_(sorted(extra or ())), events_t.c.log_index.in_(indices))
            )
            for row in await conn.execute(query):
                if row.log_index not in evidence.rows:
                    evidence.rows[row.log_index] = EnvelopeRow(
                        row.log_index, row.payload_type, bytes(row.payload), row.signatures, row.accepted_at
                    )
                    event = _decoder.decode(bytes(row.payload))
                    evidence.events.append(LoggedEvent(row.log_index, row.event_id, event, row.key_id))
        evidence.events.sort(key=lambda logged: logged.log_index)
        return _within_lineage(evidence)

    async def _determined(
        self,
        batch_id: str,
        agreement_id: str | None,
        method: str | None,
        at: str | None,
        caller: Caller | None,
    ) -> tuple[OriginDetermination, Agreement, Evidence]:
        agreement = await self.agreement(agreement_id)
        chosen = parse_method(method)
        day = parse_day(at)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence({batch_id}, [agreement])
        determination = determine_origin(evidence.events, batch_id, agreement, day, chosen)  # type: ignore[arg-type]
        return determination, agreement, evidence

    async def determine(
        self,
        batch_id: str,
        agreement_id: str | None,
        method: str | None,
        at: str | None,
        caller: Caller | None = None,
    ) -> OriginDetermination:
        """The origin determination as ``caller`` may see it: the amounts only for the privileged roles and the
        producer that declared them."""
        determination, _, evidence = await self._determined(batch_id, agreement_id, method, at, caller)
        if privileged(caller):
            return determination
        assert caller is not None
        producer = next(
            (e.event.actor for e in evidence.events if e.event_id == determination.produced_by), None
        )
        if producer == caller.participant:
            return determination
        return redact_origin(determination)

    async def record(
        self,
        batch_id: str,
        agreement_id: str | None,
        method: str | None,
        at: str | None,
        requested_by: str,
        caller: Caller | None = None,
    ) -> SubmitResultView:
        """Determine, then append the determination to the log, signed with the ledger's log key."""
        determination, _, _ = await self._determined(batch_id, agreement_id, method, at, caller)
        return await self._eligibility.record_document(batch_id, requested_by, origin_document(determination))

    async def bundle(
        self,
        batch_id: str,
        agreement_id: str | None,
        method: str | None,
        at: str | None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """A self-contained bundle that ``ledger verify bundle`` re-derives offline; it carries the signed values,
        so it is for the privileged roles and for a participant that declared every value in it."""
        determination, agreement, evidence = await self._determined(
            batch_id, agreement_id, method, at, caller
        )
        self._require_values(caller, evidence, f"the origin bundle for {batch_id!r}")
        return {
            "format": ORIGIN_BUNDLE_FORMAT,
            "batch": batch_id,
            "at": determination.at,
            "agreement": agreement.document(),
            "determination": origin_document(determination),
            **await self._proven(evidence),
        }

    def _require_values(self, caller: Caller | None, evidence: Evidence, what: str) -> None:
        if privileged(caller):
            return
        assert caller is not None
        others = sorted(
            {
                logged.event.actor
                for logged in evidence.events
                if declares_values(logged.event)
                and logged.event.actor not in (caller.participant, ev.LEDGER_ACTOR)
            }
        )
        if others:
            raise Forbidden(
                f"{what} carries commercial values declared by {', '.join(others)}, which {caller.participant!r} "
                "may not see; customs, auditors and the registrar can fetch it"
            )

    async def _proven(self, evidence: Evidence) -> dict[str, Any]:
        """The log section and every evidence row as an entry with its inclusion proof."""
        signer = self._log.signer
        if signer is None:
            raise InvalidInput(
                "this server has no log key, so it cannot produce verifiable bundles; run `ledger init`"
            )
        checkpoint = await self._log.checkpoint_covering(max(evidence.rows) + 1, BUNDLE_WAIT_SECONDS)
        size = int(checkpoint.size)
        wanted: set[merkle.NodeId] = set()
        for index in evidence.rows:
            wanted.update(merkle.inclusion_proof_nodes(index, size))
        nodes = await self._log.fetch_nodes(sorted(wanted))
        entries = []
        for index in sorted(evidence.rows):
            row = evidence.rows[index]
            accepted = row.accepted_at if row.accepted_at.tzinfo else row.accepted_at.replace(tzinfo=UTC)
            entries.append(
                {
                    "log_index": index,
                    "accepted_at": accepted.astimezone(UTC).isoformat(timespec="seconds"),
                    "envelope": {
                        "payloadType": row.payload_type,
                        "payload": b64encode(bytes(row.payload)),
                        "signatures": msgspec.json.decode(row.signatures),
                    },
                    "proof": [b64encode(h) for h in merkle.inclusion_proof(index, size, nodes)],
                }
            )
        return {
            "log": {"origin": signer.origin, "vkey": signer.vkey, "checkpoint": checkpoint.note},
            "entries": entries,
        }

    # --- certificates ----------------------------------------------------------------------------------------

    async def _certificate_rows(self, query: Any) -> list[CertificateView]:
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query))
        views = []
        for row in rows:
            event = _decoder.decode(bytes(row.payload))
            assert isinstance(event, ev.CertificateIssued)
            certificate = event.certificate
            views.append(
                CertificateView(
                    id=certificate.id,
                    event_id=row.event_id,
                    log_index=row.log_index,
                    certifier=event.actor,
                    agreement=certificate.agreement,
                    accepted_at=row.accepted_at,
                    batches=[g.batch or "" for g in certificate.goods],
                    determinations=[g.determination or "" for g in certificate.goods],
                    certificate=msgspec.to_builtins(certificate),
                )
            )
        return views

    async def certificate(self, certificate_id: str, caller: Caller | None = None) -> CertificateView:
        """One certificate: for the privileged roles, its certifier, and whoever may read a batch it covers."""
        found = await self._certificate_rows(
            sa.select(events_t.c.event_id, events_t.c.log_index, events_t.c.payload, events_t.c.accepted_at)
            .join(certificates_t, certificates_t.c.event_id == events_t.c.event_id)
            .where(certificates_t.c.id == certificate_id)
        )
        if not found:
            raise NotFound(f"certificate {certificate_id!r} does not exist")
        view = found[0]
        if not await self._may_read(caller, view):
            raise NotFound(f"certificate {certificate_id!r} does not exist")
        return view

    async def _may_read(self, caller: Caller | None, view: CertificateView) -> bool:
        """The privileged roles, the certifier, and whoever may read every batch it covers (a certificate names
        its goods: a participant upstream of one of them must not learn of the others)."""
        if privileged(caller) or (caller is not None and caller.participant == view.certifier):
            return True
        return await self._access.readable_among(caller, view.batches) == set(view.batches)

    async def batch_certificates(self, batch_id: str, caller: Caller | None = None) -> CertificateList:
        """The certificates that cover a batch, in log order."""
        await self._access.require_batch(caller, batch_id)
        query = (
            sa.select(events_t.c.event_id, events_t.c.log_index, events_t.c.payload, events_t.c.accepted_at)
            .join(batch_events_t, batch_events_t.c.log_index == events_t.c.log_index)
            .where(batch_events_t.c.batch_id == batch_id, events_t.c.kind == "certificate")
            .order_by(events_t.c.log_index)
        )
        views = await self._certificate_rows(query)
        return CertificateList(items=[view for view in views if await self._may_read(caller, view)])

    async def certificate_bundle(self, certificate_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """What a customs officer verifies offline: the certificate's entry, every good's recorded determination,
        the lineage evidence of every good, and the agreement's signed entry."""
        view = await self.certificate(certificate_id, caller)
        agreements: dict[tuple[str, int], Agreement] = {}
        async with self._engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(events_t.c.payload).where(
                        events_t.c.event_id.in_(sorted(set(view.determinations)))
                    )
                )
            )
        for (payload,) in rows:
            event = _decoder.decode(bytes(payload))
            if isinstance(event, ev.DeterminationRecorded):
                named = event.determination.get("agreement") or {}
                found = await self.agreement(named.get("id"), named.get("version"))
                agreements[(found.id, found.version)] = found
        evidence = await self.evidence(
            set(view.batches), list(agreements.values()), {view.event_id, *view.determinations}
        )
        self._require_values(caller, evidence, f"the bundle of certificate {certificate_id!r}")
        return {
            "format": CERTIFICATE_BUNDLE_FORMAT,
            "certificate": certificate_id,
            **await self._proven(evidence),
        }


__all__ = [
    "AgreementList",
    "AgreementView",
    "CertificateList",
    "CertificateView",
    "Origin",
    "parse_method",
    "redact_origin",
]
