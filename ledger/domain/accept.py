"""Acceptance: the rules an event must satisfy against the ledger's state, and the state change it makes.

Each ``_accept_<kind>`` function first checks everything and only then changes the working set, so that a
rejected event leaves no trace. Who may submit what is decided here, in the core, not in the web layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec

from ledger.domain import dsse
from ledger.domain import events as ev
from ledger.domain.dsse import MAX_SIGNATURES, PAYLOAD_TYPE, Envelope, verify_envelope_signature
from ledger.domain.keys import decode_public_key, key_id
from ledger.domain.state import (
    AT_FACILITY,
    CONSUMED,
    IN_TRANSIT,
    MERGED,
    SPLIT,
    AcceptedEvent,
    Attestation,
    Batch,
    CertificateRecord,
    ClaimRecord,
    Creation,
    CustodyModelRecord,
    Edge,
    Facility,
    Key,
    OriginDeterminationRecord,
    Owner,
    Participant,
    PublishedProfile,
    RateRecord,
    Stake,
    WorkingSet,
)
from ledger.errors import (
    Backdated,
    Conflict,
    Forbidden,
    InsufficientBalance,
    InvalidCertificate,
    InvalidEvent,
    InvalidInput,
    MassImbalance,
    OwnershipCycle,
    RevokedKey,
    StaleParent,
    UnknownKey,
)

PROCESSING_ROLES = frozenset({"processor", "recycler", "manufacturer"})
CUSTODY_ROLES = frozenset({"miner", "processor", "recycler", "manufacturer", "trader"})


@dataclass(frozen=True)
class Prepared:
    """An envelope whose payload decoded to a valid event (no state consulted yet)."""

    envelope: Envelope
    payload: bytes
    event: ev.Event
    event_id: str
    kind: str


def prepare(envelope: Envelope) -> Prepared:
    """Everything about an envelope that needs no ledger state: payload type, canonical form, schema."""
    if envelope.payloadType != PAYLOAD_TYPE:
        raise InvalidInput(f"payloadType must be {PAYLOAD_TYPE!r}, got {envelope.payloadType!r}")
    if not envelope.signatures:
        raise InvalidInput("envelope has no signatures")
    if len(envelope.signatures) > MAX_SIGNATURES:
        raise InvalidInput(f"envelope has {len(envelope.signatures)} signatures; at most {MAX_SIGNATURES}")
    payload = envelope.payload_bytes()
    event = ev.decode_payload(payload)
    return Prepared(
        envelope=envelope,
        payload=payload,
        event=event,
        event_id=dsse.event_id(payload),
        kind=ev.kind_of(event),
    )


def references(prepared: Prepared) -> dict[str, set[str]]:
    """The ids an event refers to, by table, so the store can load them all in one go for a group."""
    refs: dict[str, set[str]] = {}
    add_references(refs, prepared)
    return refs


def add_references(refs: dict[str, set[str]], prepared: Prepared) -> None:
    """Add the ids ``prepared`` refers to (:func:`references`) to ``refs``, a group's or a chunk's union of them
    (in place: a worker process adds a few thousand a second, and a dictionary of sets for each to merge cost as
    much again)."""
    event = prepared.event
    participants = refs.setdefault("participants", set())
    facilities = refs.setdefault("facilities", set())
    keys = refs.setdefault("keys", set())
    batches = refs.setdefault("batches", set())
    attestations = refs.setdefault("attestations", set())
    events = refs.setdefault("events", set())
    participants.add(event.actor)
    for signature in prepared.envelope.signatures:
        keys.add(signature.keyid)
    match event:
        case ev.ParticipantAdmitted(participant=p, keys=new_keys):
            participants.add(p.id)
            refs.setdefault("owners", set()).add(p.id)
            for new_key in new_keys:
                keys.add(_key_id_or_blank(new_key.public_key))
        case ev.FacilityRegistered(facility=f):
            participants.add(f.participant)
            facilities.add(f.id)
        case ev.KeyAdded(participant=participant, public_key=public_key):
            participants.add(participant)
            keys.add(_key_id_or_blank(public_key))
        case ev.KeyRevoked(participant=participant, key_id=revoked):
            participants.add(participant)
            keys.add(revoked)
        case ev.OwnershipChanged(participant=participant):
            participants.add(participant)
        case ev.Extract(facility=facility, batch=batch):
            facilities.add(facility)
            batches.add(batch.id)
        case ev.Transfer(batch=batch, to=to, to_facility=to_facility):
            batches.add(batch)
            participants.add(to)
            if to_facility:
                facilities.add(to_facility)
        case ev.Receive(batch=batch, facility=facility):
            batches.add(batch)
            facilities.add(facility)
        case ev.Transform(facility=facility, inputs=inputs, outputs=outputs):
            facilities.add(facility)
            batches.update(i.batch for i in inputs)
            batches.update(o.id for o in outputs)
        case ev.Split(batch=batch, outputs=outputs):
            batches.add(batch)
            batches.update(o.id for o in outputs)
        case ev.Merge(inputs=inputs, output=output):
            batches.update(i.batch for i in inputs)
            batches.add(output)
        case ev.Attest(attestation=a):
            attestations.add(a.id)
            if a.subject.facility:
                facilities.add(a.subject.facility)
            if a.subject.participant:
                participants.add(a.subject.participant)
        case ev.RevokeAttestation(attestation=a) | ev.SuspendAttestation(attestation=a):
            attestations.add(a)
        case ev.DeterminationRecorded(batch=batch):
            batches.add(batch)
        case ev.Reaffirm(events=event_ids):
            events.update(event_ids)
        case ev.OwnerRegistered(owner=owner):
            participants.add(owner.id)
            refs.setdefault("owners", set()).add(owner.id)
        case ev.StakeRecorded(holder=holder, subject=subject):
            participants.update((holder, subject))
            refs.setdefault("owners", set()).update((holder, subject))
            refs.setdefault("stake_graph", set()).add("all")
        case ev.ExchangeRatesPublished(date=day):
            refs.setdefault("rate_dates", set()).add(day)
        case ev.ProfilePublished(profile=document):
            profile_id = document.get("id")
            if isinstance(profile_id, str):
                refs.setdefault("profiles", set()).add(profile_id)
        case ev.CustodyModelDeclared(facility=facility):
            facilities.add(facility)
            refs.setdefault("custody_models", set()).add(facility)
        case ev.Recycle(facility=facility, inputs=inputs, outputs=outputs):
            facilities.add(facility)
            batches.update(i.batch for i in inputs)
            batches.update(o.id for o in outputs)
        case ev.Claim(facility=facility, profile=profile, batch=batch):
            facilities.add(facility)
            batches.add(batch)
            refs.setdefault("custody_models", set()).add(facility)
            refs.setdefault("profiles", set()).add(profile)
            refs.setdefault("creations", set()).add(batch)
            refs.setdefault("claims_of_batches", set()).add(batch)
            refs.setdefault("claims_of_facilities", set()).add(facility)
        case ev.AgreementPublished(agreement=document):
            agreement_id = document.get("id")
            if isinstance(agreement_id, str):
                refs.setdefault("agreements", set()).add(agreement_id)
        case ev.CertificateIssued(certificate=certificate):
            refs.setdefault("certificates", set()).add(certificate.id)
            batches.update(g.batch for g in certificate.goods if g.batch)
            refs.setdefault("determinations", set()).update(
                g.determination for g in certificate.goods if g.determination
            )
    events.update(parents_of(event))
    keys.discard("")


REFERENCE_TABLES = (
    "participants",
    "facilities",
    "keys",
    "batches",
    "attestations",
    "events",
    "owners",
    "stake_graph",
    "rate_dates",
    "profiles",
    "custody_models",
    "creations",
    "claims_of_batches",
    "claims_of_facilities",
    "agreements",
    "certificates",
    "determinations",
)
"""Every key :func:`references` may return (the store loads each kind of reference its own way)."""


def merge_references(refs: dict[str, set[str]], more: dict[str, set[str]]) -> None:
    """Add ``more``, ids by table, to ``refs``."""
    for table, ids in more.items():
        refs.setdefault(table, set()).update(ids)


def check_duplicate(
    ws: WorkingSet, prepared: Prepared, submitter: str | None, public_keys: dict[str, bytes]
) -> None:
    """A resubmitted event is acknowledged (idempotently) only to its signer: the token must be the actor's and
    the envelope must carry a valid signature by the key that signed the stored event. Otherwise a replay with
    a broken signature or someone else's token would learn nothing but be told "duplicate"."""
    actor, kid = ws.known_signers[prepared.event_id]
    if submitter is not None and submitter != actor:
        raise Forbidden(
            f"event {prepared.event_id} is already in the log, signed by {actor!r}; only its signer's token may "
            "submit it again"
        )
    signature = next((s for s in prepared.envelope.signatures if s.keyid == kid), None)
    known = ws.keys.get(kid)
    public_key = public_keys.get(kid) or (known.public_key if known is not None else None)
    if signature is None or public_key is None:
        raise UnknownKey(
            f"event {prepared.event_id} is already in the log, signed with key {kid}; this envelope carries no "
            "signature by that key"
        )
    verify_envelope_signature(prepared.envelope, prepared.payload, public_key, kid)


def parents_of(event: ev.Event) -> list[str]:
    """The events a custody event names as the heads it builds on."""
    match event:
        case ev.Transfer(parent=p) | ev.Receive(parent=p) | ev.Split(parent=p):
            return [p]
        case ev.Transform(inputs=inputs) | ev.Recycle(inputs=inputs):
            return [i.parent for i in inputs]
        case ev.Merge(inputs=merge_inputs):
            return [i.parent for i in merge_inputs]
    return []


def _check_time(
    ws: WorkingSet,
    event: ev.Event,
    timestamp: datetime,
    signer: Key,
    now: datetime,
    max_backdate: timedelta | None,
) -> None:
    """Time rules: an event is not dated more than ``max_backdate`` before its acceptance, nor before the key that
    signs it was introduced, nor before any parent it builds on (a signer cannot move material back in time,
    e.g. into an attestation's validity window)."""
    if max_backdate is not None and timestamp < now - max_backdate:
        raise Backdated(
            f"timestamp {event.timestamp} lies more than {_duration(max_backdate)} before the server's time "
            f"({now.isoformat(timespec='seconds')}); events are recorded as they happen (LEDGER_MAX_BACKDATE)"
        )
    if signer.valid_from is not None and timestamp < signer.valid_from:
        raise Backdated(
            f"timestamp {event.timestamp} is before key {signer.key_id} of {signer.participant_id!r} was introduced "
            f"({signer.valid_from.isoformat()}); an event cannot predate the key that signs it"
        )
    for parent in parents_of(event):
        dated = ws.event_times.get(parent)
        if dated is not None and timestamp < ev.parse_timestamp(dated):
            raise Backdated(
                f"timestamp {event.timestamp} is before that of the event it builds on, {parent} ({dated}); "
                "an event cannot predate its parent"
            )


def _duration(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    return f"{days} days" if not seconds else f"{int(delta.total_seconds())} s"


def _checked_ahead(prepared: Prepared, key_id: str, verified: Container[tuple[str, str, str]]) -> bool:
    """Whether the signature :func:`ledger.domain.dsse.verify_envelope_signature` would check (the envelope's first
    by ``key_id``) is among those ``verified`` before acceptance (off the lock: see the submitter and the audit).
    The signature itself must match, not only the event and key: another envelope of the same payload may carry a
    forged one."""
    for signature in prepared.envelope.signatures:
        if signature.keyid == key_id:
            return (prepared.event_id, key_id, signature.sig) in verified
    return False


def _key_id_or_blank(public_key: str) -> str:
    try:
        return key_id(decode_public_key(public_key))
    except Exception:
        return ""


def accept(
    ws: WorkingSet,
    prepared: Prepared,
    *,
    submitter: str | None,
    now: datetime,
    clock_skew: timedelta,
    verified: Container[tuple[str, str, str]] = (),
    max_backdate: timedelta | None = None,
) -> AcceptedEvent:
    """Check ``prepared`` against ``ws`` and record it; raise a :class:`LedgerError` (and change nothing) if not.

    ``submitter`` is the participant whose API token sent the envelope (None for trusted local tools such as
    ``ledger init``, which still need a valid signature).
    """
    event = prepared.event
    timestamp = ev.parse_timestamp(event.timestamp)
    if timestamp > now + clock_skew:
        raise InvalidEvent(
            f"timestamp {event.timestamp} lies more than {int(clock_skew.total_seconds())} s in the future "
            f"(server time {now.isoformat(timespec='seconds')}); check the signer's clock"
        )
    if submitter is not None and submitter != event.actor:
        raise Forbidden(
            f"the envelope's actor is {event.actor!r} but the API token belongs to {submitter!r}; "
            "a participant submits only envelopes it signed itself"
        )
    genesis = isinstance(event, ev.ParticipantAdmitted) and not ws.registrar_exists
    by_ledger = isinstance(event, ev.DeterminationRecorded)
    if by_ledger or event.actor == ev.LEDGER_ACTOR:
        signer = _ledger_key(ws, prepared, now)
    elif genesis:
        signer = _genesis_key(ws, prepared, now)
    else:
        signer = _signing_key(ws, prepared, now)
    if not _checked_ahead(prepared, signer.key_id, verified):
        verify_envelope_signature(prepared.envelope, prepared.payload, signer.public_key, signer.key_id)
    _check_time(ws, event, timestamp, signer, now, max_backdate)

    actor = ws.participants.get(event.actor)
    if not genesis and not by_ledger:
        assert actor is not None  # _signing_key established it
        if prepared.kind in ev.REGISTRY_KINDS and "registrar" not in actor.roles:
            raise Forbidden(
                f"only the registrar may submit {prepared.kind} events; {actor.id} is not the registrar"
            )

    accepted = AcceptedEvent(
        log_index=ws.next_index,
        event_id=prepared.event_id,
        kind=prepared.kind,
        actor=event.actor,
        key_id=signer.key_id,
        payload_type=prepared.envelope.payloadType,
        payload=prepared.payload,
        signatures=msgspec.json.encode(prepared.envelope.signatures).decode(),
        timestamp=event.timestamp,
        accepted_at=now,
    )
    handler = _HANDLERS[type(event)]
    handler(ws, event, accepted, actor)
    ws.events.append(accepted)
    ws.known_event_ids[accepted.event_id] = accepted.log_index
    ws.known_signers[accepted.event_id] = (event.actor, signer.key_id)
    ws.event_times[accepted.event_id] = event.timestamp
    ws.event_actors[accepted.event_id] = event.actor
    ws.next_index += 1
    return accepted


def _ledger_key(ws: WorkingSet, prepared: Prepared, now: datetime) -> Key:
    """Determinations are the ledger's own statements: actor ``ledger``, signed with the log key."""
    event = prepared.event
    if not isinstance(event, ev.DeterminationRecorded) or event.actor != ev.LEDGER_ACTOR:
        raise Forbidden(
            f"actor {ev.LEDGER_ACTOR!r} is reserved for determinations the ledger signs with its log key"
        )
    if ws.log_key is None:
        raise UnknownKey("this ledger has no log key configured, so it cannot accept determinations")
    return Key(key_id(ws.log_key), ev.LEDGER_ACTOR, ws.log_key, now, prepared.event_id)


def _genesis_key(ws: WorkingSet, prepared: Prepared, now: datetime) -> Key:
    """The first event of a ledger admits the registrar, signed by a key it brings along."""
    event = prepared.event
    assert isinstance(event, ev.ParticipantAdmitted)
    if "registrar" not in event.participant.roles or event.actor != event.participant.id:
        raise Forbidden(
            "the ledger has no registrar yet: its first event must admit a participant with the registrar role, "
            "signed by that participant with one of the keys it brings"
        )
    for new_key in event.keys:
        public_key = decode_public_key(new_key.public_key)
        if any(s.keyid == key_id(public_key) for s in prepared.envelope.signatures):
            signed = ev.parse_timestamp(event.timestamp)
            return Key(key_id(public_key), event.actor, public_key, now, prepared.event_id, valid_from=signed)
    raise UnknownKey("the registrar's genesis event must be signed by one of the keys it lists")


def _signing_key(ws: WorkingSet, prepared: Prepared, now: datetime) -> Key:
    actor = prepared.event.actor
    if ws.participants.get(actor) is None:
        raise UnknownKey(f"the envelope's actor {actor!r} is not a registered participant")
    problems: list[str] = []
    for signature in prepared.envelope.signatures:
        key = ws.keys.get(signature.keyid)
        if key is None:
            problems.append(f"key {signature.keyid} is not registered")
        elif key.participant_id != actor:
            problems.append(f"key {signature.keyid} belongs to {key.participant_id!r}, not to {actor!r}")
        elif not key.valid_at(now):
            raise RevokedKey(
                f"key {key.key_id} of {actor!r} was revoked at {key.revoked_at} ({key.revoked_reason}); "
                "sign with a current key",
                key_id=key.key_id,
            )
        else:
            return key
    raise UnknownKey("no usable signature: " + "; ".join(problems or ["the envelope has no signatures"]))


# --- registry ----------------------------------------------------------------------------------------------


def _accept_participant_admitted(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.ParticipantAdmitted)
    info = event.participant
    if ws.participants.get(info.id) is not None:
        raise Conflict(f"participant {info.id!r} already exists")
    if ws.owners.get(info.id) is not None:
        raise Conflict(
            f"{info.id!r} is already the id of a registered owner; owners and participants share one set of ids"
        )
    new_keys = _new_keys(ws, [k.public_key for k in event.keys], info.id, accepted)
    participant = Participant(
        id=info.id,
        name=info.name,
        roles=frozenset(info.roles),
        country=info.country,
        ownership=ownership_facts(info.ownership),
        admitted_event=accepted.event_id,
        admitted_at=accepted.accepted_at,
    )
    ws.participants[info.id] = participant
    ws.new_participants.append(info.id)
    if "registrar" in info.roles:
        ws.registrar_exists = True
    for key in new_keys:
        ws.keys[key.key_id] = key
        ws.new_keys.append(key.key_id)


def ownership_facts(ownership: ev.Ownership) -> dict[str, Any]:
    """Ownership as stored in the projection: every measure spelt out, defaults included."""
    return {
        "incorporated_in": ownership.incorporated_in,
        "headquartered_in": ownership.headquartered_in,
        "government_stakes": [
            {"country": s.country, "equity": s.equity, "votes": s.votes, "board_seats": s.board_seats}
            for s in ownership.government_stakes
        ],
    }


def _new_keys(ws: WorkingSet, public_keys: list[str], participant: str, accepted: AcceptedEvent) -> list[Key]:
    keys: list[Key] = []
    for text in public_keys:
        public_key = decode_public_key(text)
        kid = key_id(public_key)
        if ws.keys.get(kid) is not None or any(k.key_id == kid for k in keys):
            raise Conflict(f"key {kid} is already registered; every key belongs to one participant only")
        signed = ev.parse_timestamp(accepted.timestamp)
        keys.append(
            Key(kid, participant, public_key, accepted.accepted_at, accepted.event_id, valid_from=signed)
        )
    return keys


def _existing_participant(ws: WorkingSet, participant_id: str, field: str) -> Participant:
    participant = ws.participants.get(participant_id)
    if participant is None:
        raise InvalidEvent(f"{field} {participant_id!r} is not a registered participant")
    return participant


def _accept_facility_registered(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.FacilityRegistered)
    info = event.facility
    if ws.facilities.get(info.id) is not None:
        raise Conflict(f"facility {info.id!r} already exists")
    _existing_participant(ws, info.participant, "facility.participant")
    ws.facilities[info.id] = Facility(
        id=info.id,
        participant_id=info.participant,
        kind=info.kind,
        country=info.country,
        name=info.name,
        loss_tolerance=Decimal(info.loss_tolerance),
        registered_event=accepted.event_id,
    )
    ws.new_facilities.append(info.id)


def _accept_key_added(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.KeyAdded)
    _existing_participant(ws, event.participant, "participant")
    for key in _new_keys(ws, [event.public_key], event.participant, accepted):
        ws.keys[key.key_id] = key
        ws.new_keys.append(key.key_id)


def _accept_key_revoked(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.KeyRevoked)
    _existing_participant(ws, event.participant, "participant")
    key = ws.keys.get(event.key_id)
    if key is None or key.participant_id != event.participant:
        raise InvalidEvent(f"key {event.key_id} is not a key of {event.participant!r}")
    if key.revoked_at is not None:
        raise Conflict(f"key {event.key_id} was already revoked at {key.revoked_at.isoformat()}")
    now = accepted.accepted_at
    effective = ev.parse_timestamp(event.effective_at, "effective_at") if event.effective_at else now
    # A future effective time keeps the key usable until then; a past one is a compromise report: the key is
    # revoked now and whatever it signed after ``effective`` is suspect (audit and eligibility name those events).
    key.revoked_at = max(effective, now)
    key.compromised_since = effective if effective < now else None
    key.revoked_reason = event.reason
    key.revoked_event = accepted.event_id
    ws.changed_keys.add(key.key_id)


def _accept_ownership_changed(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.OwnershipChanged)
    participant = _existing_participant(ws, event.participant, "participant")
    participant.ownership = ownership_facts(event.ownership)
    ws.changed_participants.add(participant.id)


# --- owners and stakes, exchange rates, rule profiles, custody models ---------------------------------------


def _accept_owner_registered(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.OwnerRegistered)
    info = event.owner
    if ws.owners.get(info.id) is not None:
        raise Conflict(f"owner {info.id!r} already exists")
    if ws.participants.get(info.id) is not None:
        raise Conflict(
            f"{info.id!r} is already the id of a participant; owners and participants share one set of ids "
            "(a participant that holds stakes is named as the holder directly)"
        )
    ws.owners[info.id] = Owner(
        id=info.id, name=info.name, kind=info.kind, country=info.country, registered_event=accepted.event_id
    )
    ws.new_owners.append(info.id)


def _party(ws: WorkingSet, party_id: str, field: str) -> Owner | Participant:
    owner = ws.owners.get(party_id)
    if owner is not None:
        return owner
    participant = ws.participants.get(party_id)
    if participant is not None:
        return participant
    raise InvalidEvent(f"{field} {party_id!r} is neither a registered owner nor a registered participant")


def _holding_path(edges: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The shortest chain start -> ... -> goal in which each holds a stake in the next (breadth-first, so the
    answer is the same on every run), or None."""
    previous: dict[str, str] = {}
    frontier, seen = [start], {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child in seen:
                    continue
                previous[child] = node
                if child == goal:
                    path = [goal]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                seen.add(child)
                following.append(child)
        frontier = following
    return None


def _accept_stake_recorded(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.StakeRecorded)
    _party(ws, event.holder, "holder")
    subject = _party(ws, event.subject, "subject")
    if isinstance(subject, Owner) and subject.kind == "government":
        raise InvalidEvent(
            f"subject {subject.id!r} is a government ({subject.country}); governments hold stakes, nobody holds "
            "a stake in a government"
        )
    holds = any(ev.parse_share(share) != 0 for share in (event.equity, event.votes, event.board_seats))
    if holds:
        path = _holding_path(ws.stake_edges, event.subject, event.holder)
        if path is not None:
            cycle = [*path, event.subject]
            raise OwnershipCycle(
                f"recording that {event.holder!r} holds a stake in {event.subject!r} would close an ownership "
                f"cycle: {' -> '.join(cycle)} (each holds a stake in the next); stakes recorded earlier with a "
                "non-zero share count even if later ended",
                cycle=cycle,
            )
    ws.new_stakes.append(
        Stake(
            event_id=accepted.event_id,
            log_index=accepted.log_index,
            holder=event.holder,
            subject=event.subject,
            effective_date=event.effective_date,
            equity=event.equity,
            votes=event.votes,
            board_seats=event.board_seats,
        )
    )
    if holds:
        ws.stake_edges.setdefault(event.holder, set()).add(event.subject)


def _accept_exchange_rates(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.ExchangeRatesPublished)
    published = ws.rates.get(event.date, {})
    for index, rate in enumerate(event.rates):
        for pair in ((rate.from_, rate.to), (rate.to, rate.from_)):
            earlier = published.get(pair)
            if earlier is not None:
                raise Conflict(
                    f"rates[{index}]: a {earlier.from_}/{earlier.to} rate for {event.date} was already published "
                    f"({earlier.rate}, event {earlier.event_id}); a pair's rate for a date is published once, in "
                    "one direction"
                )
    records = [RateRecord(event.date, r.from_, r.to, r.rate, accepted.event_id) for r in event.rates]
    table = ws.rates.setdefault(event.date, {})
    for record in records:
        table[(record.from_, record.to)] = record
    ws.new_rates.extend(records)


MAX_PROFILE_VERSION = 2**53 - 1


def _accept_profile_published(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.ProfilePublished)
    from ledger.rules.profiles import profile_from_document  # the rules import the domain, not the reverse

    profile = profile_from_document(event.profile, "published")
    if profile.version > MAX_PROFILE_VERSION:
        raise InvalidEvent(f"profile.version {profile.version} is larger than {MAX_PROFILE_VERSION}")
    versions = ws.profile_versions.get(profile.id, {})
    if versions:
        latest = versions[max(versions)]
        if profile.version <= latest.version:
            raise Conflict(
                f"rule profile {profile.id!r} is published up to version {latest.version} (event "
                f"{latest.event_id}); a new publication needs a version greater than {latest.version}, "
                f"this one is {profile.version}",
                latest_version=latest.version,
            )
    record = PublishedProfile(
        id=profile.id,
        version=profile.version,
        content_hash=profile.content_hash,
        event_id=accepted.event_id,
        published_at=accepted.accepted_at,
    )
    ws.profile_versions[profile.id] = {**versions, profile.version: record}
    ws.new_profiles.append(record)


def _accept_agreement_published(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    """A trade-agreement origin profile, validated like a file; versions only go up (as rule profiles')."""
    assert isinstance(event, ev.AgreementPublished)
    from ledger.rules.agreement import agreement_from_document  # the rules import the domain, not the reverse

    agreement = agreement_from_document(event.agreement, "published")
    if agreement.version > MAX_PROFILE_VERSION:
        raise InvalidEvent(f"agreement.version {agreement.version} is larger than {MAX_PROFILE_VERSION}")
    versions = ws.agreement_versions.get(agreement.id, {})
    if versions:
        latest = versions[max(versions)]
        if agreement.version <= latest.version:
            raise Conflict(
                f"agreement profile {agreement.id!r} is published up to version {latest.version} (event "
                f"{latest.event_id}); a new publication needs a version greater than {latest.version}, this one "
                f"is {agreement.version}",
                latest_version=latest.version,
            )
    record = PublishedProfile(
        id=agreement.id,
        version=agreement.version,
        content_hash=agreement.content_hash,
        event_id=accepted.event_id,
        published_at=accepted.accepted_at,
    )
    ws.agreement_versions[agreement.id] = {**versions, agreement.version: record}
    ws.new_agreements.append(record)


def _accept_certificate(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None
) -> None:
    """A certification of origin (USMCA Art. 5.2): its nine elements were checked with the payload; here, that
    its id is new, and that every good is a batch of the ledger with a recorded origin determination under the
    certificate's agreement saying it originates, under the criterion and HS subheading the certificate states."""
    assert isinstance(event, ev.CertificateIssued) and actor is not None
    _need_role(actor, CUSTODY_ROLES, "certifying the origin of goods (an importer, exporter or producer)")
    certificate = event.certificate
    earlier = ws.certificates.get(certificate.id)
    if earlier is not None:
        raise Conflict(
            f"certificate {certificate.id!r} already exists (event {earlier.event_id}); give a new certificate a "
            "new id"
        )
    for index, good in enumerate(certificate.goods):
        where = f"goods[{index}]"
        assert good.batch is not None and good.determination is not None
        if ws.batches.get(good.batch) is None:
            raise InvalidEvent(f"{where}.batch {good.batch!r} does not exist")
        found = ws.origin_determinations.get(good.determination)
        if found is None:
            raise InvalidCertificate(
                f"certificate element 7 (origin criterion): {where}.determination {good.determination} is not a "
                "recorded origin determination; record one (POST /v1/batches/{id}/origin/determinations)",
                element=7,
            )
        if found.batch != good.batch or found.agreement != certificate.agreement:
            raise InvalidCertificate(
                f"certificate element 7 (origin criterion): {where}.determination {good.determination} determines "
                f"batch {found.batch!r} under {found.agreement!r}, not batch {good.batch!r} under "
                f"{certificate.agreement!r}",
                element=7,
            )
        if found.verdict != "originating":
            raise InvalidCertificate(
                f"certificate element 7 (origin criterion): {where}.determination {good.determination} found batch "
                f"{good.batch!r} not originating; only an originating good can be certified",
                element=7,
            )
        if found.criterion != good.origin_criterion:
            raise InvalidCertificate(
                f"certificate element 7 (origin criterion): {where}.origin_criterion is "
                f"{good.origin_criterion!r}, but determination {good.determination} found criterion "
                f"{found.criterion!r}",
                element=7,
            )
        if found.hs6 != good.hs6:
            raise InvalidCertificate(
                f"certificate element 6 (description of the good): {where}.hs6 is {good.hs6!r}, but batch "
                f"{good.batch!r} is classified {found.hs6!r} (determination {good.determination})",
                element=6,
            )
    record = CertificateRecord(
        certificate.id, accepted.event_id, accepted.log_index, actor.id, certificate.agreement
    )
    ws.certificates[certificate.id] = record
    ws.new_certificates.append(record)
    for good in certificate.goods:
        assert good.batch is not None
        ws.batch_events.append((good.batch, accepted.log_index))


def origin_record(event_id: str, event: ev.DeterminationRecorded) -> OriginDeterminationRecord | None:
    """The facts a certificate checks of a recorded determination, if it is an origin determination."""
    document = event.determination
    agreement = document.get("agreement")
    if not isinstance(agreement, dict) or not isinstance(agreement.get("id"), str):
        return None
    return OriginDeterminationRecord(
        event_id=event_id,
        batch=event.batch,
        agreement=agreement["id"],
        verdict=str(document.get("verdict")),
        criterion=document.get("criterion"),
        hs6=document.get("hs6"),
    )


def _accept_custody_model(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None
) -> None:
    assert isinstance(event, ev.CustodyModelDeclared) and actor is not None
    facility = ws.facilities.get(event.facility)
    if facility is None:
        raise InvalidEvent(f"facility {event.facility!r} is not a registered facility")
    if actor.id != facility.participant_id and "registrar" not in actor.roles:
        raise Forbidden(
            f"facility {facility.id!r} belongs to {facility.participant_id!r}; only it or the registrar may "
            "declare its chain-of-custody model"
        )
    history = ws.custody_models.get(facility.id, [])
    for earlier in history:
        if earlier.effective_date == event.effective_date:
            raise Conflict(
                f"facility {facility.id!r} already declared a custody model ({earlier.model}) effective "
                f"{earlier.effective_date} (event {earlier.event_id}); a change takes effect from another date"
            )
    record = CustodyModelRecord(
        event_id=accepted.event_id,
        log_index=accepted.log_index,
        facility_id=facility.id,
        model=event.model,
        period=event.period,
        conversion_factors=dict(sorted(event.conversion_factors.items())),
        effective_date=event.effective_date,
    )
    ws.custody_models[facility.id] = [*history, record]
    ws.new_custody_models.append(record)


def model_in_force(history: list[CustodyModelRecord], day: date) -> CustodyModelRecord | None:
    """The declaration in force on ``day``: the one with the latest effective date on or before it."""
    current: CustodyModelRecord | None = None
    for record in history:
        since = date.fromisoformat(record.effective_date)
        if since <= day and (current is None or since > date.fromisoformat(current.effective_date)):
            current = record
    return current


# --- custody -----------------------------------------------------------------------------------------------


def _own_facility(ws: WorkingSet, facility_id: str, actor: Participant, field: str = "facility") -> Facility:
    facility = ws.facilities.get(facility_id)
    if facility is None:
        raise InvalidEvent(f"{field} {facility_id!r} is not a registered facility")
    if facility.participant_id != actor.id:
        raise Forbidden(
            f"{field} {facility_id!r} belongs to {facility.participant_id!r}, not to {actor.id!r}"
        )
    return facility


def _need_role(actor: Participant, roles: frozenset[str], what: str) -> None:
    if not actor.roles & roles:
        raise Forbidden(
            f"{what} needs one of the roles {', '.join(sorted(roles))}; {actor.id!r} has {', '.join(sorted(actor.roles))}"
        )


def _new_batch_id(ws: WorkingSet, batch_id: str, field: str) -> None:
    if ws.batches.get(batch_id) is not None:
        raise Conflict(f"{field} {batch_id!r} already exists; batch ids are never reused")


def _held_batch(ws: WorkingSet, batch_id: str, parent: str, actor: Participant, field: str) -> Batch:
    """A batch the actor may act on: it exists, ``parent`` is its head, the actor holds it at a facility."""
    batch = _batch_at_head(ws, batch_id, parent, field)
    if batch.custodian != actor.id:
        raise Forbidden(
            f"{field} {batch_id!r} is held by {batch.custodian!r}; only its custodian may do this"
        )
    if batch.status != AT_FACILITY:
        raise InvalidEvent(f"{field} {batch_id!r} is {batch.status.replace('_', ' ')}, not at a facility")
    return batch


def _batch_at_head(ws: WorkingSet, batch_id: str, parent: str, field: str) -> Batch:
    batch = ws.batches.get(batch_id)
    if batch is None:
        raise InvalidEvent(f"{field} {batch_id!r} does not exist")
    if batch.head != parent:
        raise StaleParent(
            f"{field} {batch_id!r} has moved on: its head is {batch.head}, the event names {parent}; "
            "fetch the batch and sign again on top of the current head",
            batch=batch_id,
            current_head=batch.head,
        )
    return batch


def _touch(ws: WorkingSet, batch: Batch, accepted: AcceptedEvent) -> None:
    batch.head = accepted.event_id
    if batch.id not in ws.new_batches:
        ws.changed_batches.add(batch.id)
    ws.batch_events.append((batch.id, accepted.log_index))


def _create_batch(ws: WorkingSet, batch: Batch, accepted: AcceptedEvent) -> None:
    ws.batches[batch.id] = batch
    ws.new_batches.append(batch.id)
    ws.batch_events.append((batch.id, accepted.log_index))
    ws.holders.add((batch.id, batch.custodian))


def _accept_extract(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Extract) and actor is not None
    _need_role(actor, frozenset({"miner"}), "extract")
    facility = _own_facility(ws, event.facility, actor)
    if facility.kind != "mine":
        raise InvalidEvent(f"facility {facility.id!r} is a {facility.kind}; extraction happens at a mine")
    _new_batch_id(ws, event.batch.id, "batch.id")
    new = event.batch
    _create_batch(
        ws,
        Batch(
            id=new.id,
            mineral=new.mineral,
            form=new.form,
            mass_g=new.mass_g,
            status=AT_FACILITY,
            custodian=actor.id,
            facility_id=facility.id,
            head=accepted.event_id,
            created_event=accepted.event_id,
            value_amount=new.value.amount if new.value else None,
            value_currency=new.value.currency if new.value else None,
        ),
        accepted,
    )


def _accept_transfer(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Transfer) and actor is not None
    batch = _held_batch(ws, event.batch, event.parent, actor, "batch")
    receiver = _existing_participant(ws, event.to, "to")
    _need_role(receiver, CUSTODY_ROLES, f"receiving batch {batch.id!r} (participant {receiver.id!r})")
    if event.to_facility is not None:
        _own_facility(ws, event.to_facility, receiver, "to_facility")
    batch.status = IN_TRANSIT
    batch.receiver = receiver.id
    batch.receiver_facility = event.to_facility
    _touch(ws, batch, accepted)


def _accept_receive(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Receive) and actor is not None
    batch = _batch_at_head(ws, event.batch, event.parent, "batch")
    if batch.status != IN_TRANSIT:
        raise InvalidEvent(
            f"batch {batch.id!r} is {batch.status.replace('_', ' ')}, not in transit; only a shipped batch is received"
        )
    if batch.receiver != actor.id:
        raise Forbidden(
            f"batch {batch.id!r} was shipped to {batch.receiver!r}; {actor.id!r} cannot receive it"
        )
    facility = _own_facility(ws, event.facility, actor)
    if batch.receiver_facility is not None and facility.id != batch.receiver_facility:
        raise InvalidEvent(
            f"batch {batch.id!r} was shipped to facility {batch.receiver_facility!r}, not {facility.id!r}"
        )
    if event.mass_g > batch.mass_g:
        raise MassImbalance(
            f"received mass {event.mass_g} g exceeds the {batch.mass_g} g that were shipped in batch {batch.id!r}"
        )
    loss = batch.mass_g - event.mass_g
    # no loss (the usual case) is within any tolerance: only a loss needs the exact comparison
    if loss and Fraction(loss) > Fraction(facility.loss_tolerance) * batch.mass_g:
        raise MassImbalance(
            f"receiving {event.mass_g} g of the {batch.mass_g} g shipped declares a loss of {loss} g, more than "
            f"facility {facility.id!r} tolerates ({facility.loss_tolerance} of the shipped mass)"
        )
    batch.mass_g = event.mass_g
    batch.lost_g += loss
    batch.custodian = actor.id
    batch.facility_id = facility.id
    batch.status = AT_FACILITY
    batch.receiver = None
    batch.receiver_facility = None
    ws.holders.add((batch.id, actor.id))
    _touch(ws, batch, accepted)


def _accept_transform(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Transform) and actor is not None
    _need_role(actor, PROCESSING_ROLES, "transform")
    facility = _own_facility(ws, event.facility, actor)
    inputs = _consumable_inputs(ws, event.inputs, facility, actor)
    _check_new_outputs(ws, event.outputs)
    consumed = sum(mass for _, mass in inputs)
    produced = sum(output.mass_g for output in event.outputs)
    if produced > consumed:
        raise MassImbalance(
            f"outputs weigh {produced} g but only {consumed} g of input are consumed; nothing is made from nothing"
        )
    _consume_and_produce(ws, inputs, event.outputs, facility, actor, accepted)


def _consumable_inputs(
    ws: WorkingSet, items: list[ev.Input], facility: Facility, actor: Participant
) -> list[tuple[Batch, int]]:
    """Inputs of a transform or recycle: distinct batches the actor holds at ``facility``, at their heads, each
    giving no more than it holds."""
    inputs: list[tuple[Batch, int]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        field = f"inputs[{index}].batch"
        if item.batch in seen:
            raise InvalidEvent(f"{field} {item.batch!r} is listed twice")
        seen.add(item.batch)
        batch = _held_batch(ws, item.batch, item.parent, actor, field)
        if batch.facility_id != facility.id:
            raise InvalidEvent(
                f"{field} {batch.id!r} is at facility {batch.facility_id!r}, not at {facility.id!r}"
            )
        if item.mass_g > batch.mass_g:
            raise MassImbalance(
                f"{field} consumes {item.mass_g} g of batch {batch.id!r}, which holds only {batch.mass_g} g"
            )
        inputs.append((batch, item.mass_g))
    return inputs


def _check_new_outputs(ws: WorkingSet, outputs: list[ev.Output]) -> None:
    outputs_seen: set[str] = set()
    for index, output in enumerate(outputs):
        _new_batch_id(ws, output.id, f"outputs[{index}].id")
        if output.id in outputs_seen:
            raise InvalidEvent(f"outputs[{index}].id {output.id!r} is listed twice")
        outputs_seen.add(output.id)


def _consume_and_produce(
    ws: WorkingSet,
    inputs: list[tuple[Batch, int]],
    outputs: list[ev.Output],
    facility: Facility,
    actor: Participant,
    accepted: AcceptedEvent,
) -> None:
    """The effects of a checked transform or recycle: inputs give their mass (their heads move), outputs are new
    batches at the facility held by the actor, and lineage links every input to every output."""
    for batch, mass in inputs:
        batch.mass_g -= mass
        if batch.mass_g == 0:
            batch.status = CONSUMED
        _touch(ws, batch, accepted)
    for output in outputs:
        _create_batch(
            ws,
            Batch(
                id=output.id,
                mineral=output.mineral,
                form=output.form,
                mass_g=output.mass_g,
                status=AT_FACILITY,
                custodian=actor.id,
                facility_id=facility.id,
                head=accepted.event_id,
                created_event=accepted.event_id,
                value_amount=output.value.amount if output.value else None,
                value_currency=output.value.currency if output.value else None,
            ),
            accepted,
        )
        for batch, mass in inputs:
            ws.edges.append(Edge(batch.id, output.id, accepted.event_id, mass))
    ws.creations[accepted.event_id] = Creation(
        event_id=accepted.event_id,
        kind=accepted.kind,
        facility_id=facility.id,
        timestamp=accepted.timestamp,
        masses={output.id: output.mass_g for output in outputs},
    )


def _accept_recycle(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Recycle) and actor is not None
    _need_role(actor, frozenset({"recycler"}), "recycle")
    facility = _own_facility(ws, event.facility, actor)
    if facility.kind != "recycler":
        raise InvalidEvent(
            f"facility {facility.id!r} is a {facility.kind}; recycling happens at a facility of kind recycler"
        )
    inputs = _consumable_inputs(ws, event.inputs, facility, actor)
    _check_new_outputs(ws, event.outputs)
    feedstock = sum(item.mass_g for item in event.feedstock)
    consumed = sum(mass for _, mass in inputs)
    produced = sum(output.mass_g for output in event.outputs)
    if produced > feedstock + consumed:
        raise MassImbalance(
            f"outputs weigh {produced} g but only {feedstock} g of feedstock and {consumed} g of consumed input "
            "went in; a recycler recovers at most what it takes in"
        )
    _consume_and_produce(ws, inputs, event.outputs, facility, actor, accepted)


def _accept_split(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Split) and actor is not None
    batch = _held_batch(ws, event.batch, event.parent, actor, "batch")
    seen: set[str] = set()
    for index, part in enumerate(event.outputs):
        _new_batch_id(ws, part.id, f"outputs[{index}].id")
        if part.id in seen:
            raise InvalidEvent(f"outputs[{index}].id {part.id!r} is listed twice")
        seen.add(part.id)
    total = sum(part.mass_g for part in event.outputs)
    if total != batch.mass_g:
        raise MassImbalance(
            f"the parts of batch {batch.id!r} weigh {total} g but the batch holds {batch.mass_g} g; "
            "a split divides the whole batch exactly"
        )
    batch.status = SPLIT
    _touch(ws, batch, accepted)
    for part in event.outputs:
        _create_batch(
            ws,
            Batch(
                id=part.id,
                mineral=batch.mineral,
                form=batch.form,
                mass_g=part.mass_g,
                status=AT_FACILITY,
                custodian=actor.id,
                facility_id=batch.facility_id,
                head=accepted.event_id,
                created_event=accepted.event_id,
            ),
            accepted,
        )
        ws.edges.append(Edge(batch.id, part.id, accepted.event_id, part.mass_g))


def _accept_merge(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Merge) and actor is not None
    batches: list[Batch] = []
    for index, item in enumerate(event.inputs):
        field = f"inputs[{index}].batch"
        if any(b.id == item.batch for b in batches):
            raise InvalidEvent(f"{field} {item.batch!r} is listed twice")
        batches.append(_held_batch(ws, item.batch, item.parent, actor, field))
    first = batches[0]
    for batch in batches[1:]:
        if (batch.mineral, batch.form) != (first.mineral, first.form):
            raise InvalidEvent(
                f"batch {batch.id!r} is {batch.mineral} {batch.form}, batch {first.id!r} is {first.mineral} "
                f"{first.form}; only like material is merged (use a transform otherwise)"
            )
        if batch.facility_id != first.facility_id:
            raise InvalidEvent(f"batches {first.id!r} and {batch.id!r} are at different facilities")
    _new_batch_id(ws, event.output, "output")
    for batch in batches:
        batch.status = MERGED
        _touch(ws, batch, accepted)
    _create_batch(
        ws,
        Batch(
            id=event.output,
            mineral=first.mineral,
            form=first.form,
            mass_g=sum(b.mass_g for b in batches),
            status=AT_FACILITY,
            custodian=actor.id,
            facility_id=first.facility_id,
            head=accepted.event_id,
            created_event=accepted.event_id,
        ),
        accepted,
    )
    for batch in batches:
        ws.edges.append(Edge(batch.id, event.output, accepted.event_id, batch.mass_g))


# --- mass-balance claims -----------------------------------------------------------------------------------

PERIOD_FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "month": (re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$"), "YYYY-MM (e.g. 2026-03)"),
    "quarter": (re.compile(r"^[0-9]{4}-Q[1-4]$"), "YYYY-Qn (e.g. 2026-Q1)"),
    "year": (re.compile(r"^[0-9]{4}$"), "YYYY (e.g. 2026)"),
}
"""How a claim writes a mass-balance period of each length."""

CLAIMABLE_KINDS = frozenset({"transform", "recycle"})


def period_of(day: date, length: str) -> str:
    """The mass-balance period of ``length`` (month, quarter, year) that contains ``day``."""
    if length == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if length == "quarter":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}"


def exact_text(value: Fraction) -> str:
    """``value`` as a terminating decimal when it has one ("12.5"), else exactly as n/d ("1/3")."""
    sign, magnitude = ("-", -value) if value < 0 else ("", value)
    denominator, places = magnitude.denominator, 0
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{sign}{magnitude.numerator}/{magnitude.denominator}"
    while (magnitude * 10**places).denominator != 1:
        places += 1
    text = format(Decimal((magnitude * 10**places).numerator).scaleb(-places), "f")
    return sign + text


def _accept_claim(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Claim) and actor is not None
    facility = _own_facility(ws, event.facility, actor)
    day = ev.parse_timestamp(event.timestamp).date()
    model = model_in_force(ws.custody_models.get(facility.id, []), day)
    if model is None or model.model != "mass_balance_credit":
        in_force = (
            f"the model in force on {day} is {model.model} (declared effective {model.effective_date}, event "
            f"{model.event_id})"
            if model is not None
            else f"it has declared no custody model in force on {day}"
        )
        raise InvalidEvent(
            f"claims allocate mass-balance credits, so facility {facility.id!r} must follow mass_balance_credit; "
            f"{in_force}"
        )
    pattern, form = PERIOD_FORMS[model.period]
    if not pattern.match(event.period):
        raise InvalidEvent(
            f"period {event.period!r} is not a {model.period}: facility {facility.id!r} balances its mass by "
            f"{model.period}, written {form}"
        )
    batch = ws.batches.get(event.batch)
    if batch is None:
        raise InvalidEvent(f"batch {event.batch!r} does not exist")
    creation = ws.creations.get(batch.created_event)
    if creation is None or creation.kind not in CLAIMABLE_KINDS or creation.facility_id != facility.id:
        raise InvalidEvent(
            f"batch {batch.id!r} was not made by a transform or recycle at facility {facility.id!r}; credits "
            "are allocated to output made there"
        )
    made_on = ev.parse_timestamp(creation.timestamp).date()
    if period_of(made_on, model.period) != event.period:
        raise InvalidEvent(
            f"batch {batch.id!r} was made on {made_on} (local date of event {creation.event_id}), in period "
            f"{period_of(made_on, model.period)}, not in {event.period}; credits of a period go to output of "
            "that period"
        )
    if not ws.profile_versions.get(event.profile):
        raise InvalidEvent(
            f"profile {event.profile!r} is not a published rule profile; the registrar publishes profiles "
            "(`ledger profile publish`)"
        )
    made = creation.masses.get(batch.id, 0)
    on_batch = ws.batch_claimed.get((batch.id, event.profile), 0)
    if on_batch + event.mass_g > made:
        raise MassImbalance(
            f"batch {batch.id!r} was made with {made} g and {on_batch} g of it are already claimed under "
            f"{event.profile!r}; claiming {event.mass_g} g more would exceed it by {on_batch + event.mass_g - made} g"
        )
    key = (facility.id, event.profile, event.period)
    claimed = ws.period_claimed.get(key, 0)
    if ws.check_balance:
        error = ws.credit_errors.get(key)
        if error is not None:
            raise error
        credits = ws.credit_limits.get(key)
        if credits is None:
            raise InvalidEvent(
                "mass-balance credits cannot be computed here: this server has no eligibility engine to compute "
                f"the credits of facility {facility.id!r} under {event.profile!r} for {event.period}"
            )
        remaining = credits - claimed
        if claimed + event.mass_g > credits:
            raise InsufficientBalance(
                f"facility {facility.id!r} has {exact_text(credits)} g of credits under {event.profile!r} for "
                f"{event.period}, {claimed} g already claimed, {exact_text(remaining)} g remaining; this claim "
                f"asks for {event.mass_g} g",
                balance_g=exact_text(remaining),
                credits_g=exact_text(credits),
                claimed_g=str(claimed),
            )
    ws.batch_claimed[(batch.id, event.profile)] = on_batch + event.mass_g
    ws.period_claimed[key] = claimed + event.mass_g
    ws.batch_events.append((batch.id, accepted.log_index))
    ws.new_claims.append(
        ClaimRecord(
            event_id=accepted.event_id,
            log_index=accepted.log_index,
            participant_id=actor.id,
            facility_id=facility.id,
            profile_id=event.profile,
            period=event.period,
            batch_id=batch.id,
            mass_g=event.mass_g,
        )
    )


# --- attestations ------------------------------------------------------------------------------------------


def _accept_attest(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Attest) and actor is not None
    _need_role(actor, frozenset({"auditor"}), "attest")
    info = event.attestation
    if ws.attestations.get(info.id) is not None:
        raise Conflict(f"attestation {info.id!r} already exists")
    if info.subject.facility is not None:
        if ws.facilities.get(info.subject.facility) is None:
            raise InvalidEvent(
                f"attestation.subject.facility {info.subject.facility!r} is not a registered facility"
            )
        kind, subject = "facility", info.subject.facility
    else:
        assert info.subject.participant is not None
        _existing_participant(ws, info.subject.participant, "attestation.subject.participant")
        kind, subject = "participant", info.subject.participant
    ws.attestations[info.id] = Attestation(
        id=info.id,
        auditor=actor.id,
        subject_kind=kind,
        subject_id=subject,
        standard=info.standard,
        level=info.level,
        minerals=tuple(info.minerals),
        activities=tuple(info.activities),
        valid_from=date.fromisoformat(info.valid_from),
        valid_to=date.fromisoformat(info.valid_to),
        report_sha256=info.report_sha256,
        event_id=accepted.event_id,
    )
    ws.new_attestations.append(info.id)


def _accept_attestation_change(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None
) -> None:
    assert isinstance(event, ev.RevokeAttestation | ev.SuspendAttestation) and actor is not None
    attestation = ws.attestations.get(event.attestation)
    if attestation is None:
        raise InvalidEvent(f"attestation {event.attestation!r} does not exist")
    if actor.id != attestation.auditor and "registrar" not in actor.roles:
        raise Forbidden(
            f"attestation {attestation.id!r} was issued by {attestation.auditor!r}; only that auditor or the "
            "registrar may revoke or suspend it"
        )
    if attestation.revoked_on is not None:
        raise Conflict(
            f"attestation {attestation.id!r} was already revoked with effect from {attestation.revoked_on}"
        )
    day = date.fromisoformat(event.effective_date)
    kind = "revoked" if isinstance(event, ev.RevokeAttestation) else "suspended"
    if kind == "revoked":
        attestation.revoked_on = day
    else:
        attestation.suspended_on = (
            day if attestation.suspended_on is None else min(attestation.suspended_on, day)
        )
    attestation.changes.append(
        {
            "kind": kind,
            "effective_date": event.effective_date,
            "reason": event.reason,
            "event_id": accepted.event_id,
        }
    )
    if attestation.id not in ws.new_attestations:
        ws.changed_attestations.add(attestation.id)


def _accept_determination(
    ws: WorkingSet, event: Any, accepted: AcceptedEvent, _actor: Participant | None
) -> None:
    assert isinstance(event, ev.DeterminationRecorded)
    batch = ws.batches.get(event.batch)
    if batch is None:
        raise InvalidEvent(f"batch {event.batch!r} does not exist")
    ws.batch_events.append((batch.id, accepted.log_index))
    record = origin_record(accepted.event_id, event)
    if record is not None:
        ws.origin_determinations[accepted.event_id] = record


def _accept_reaffirm(ws: WorkingSet, event: Any, accepted: AcceptedEvent, actor: Participant | None) -> None:
    assert isinstance(event, ev.Reaffirm) and actor is not None
    registrar = "registrar" in actor.roles
    for index, event_id in enumerate(event.events):
        if event_id not in ws.event_actors:
            raise InvalidEvent(f"events[{index}] {event_id} is not in the log")
        original = ws.event_actors[event_id]
        if original is None:
            raise InvalidEvent(f"events[{index}] {event_id} is not in the log")
        if original != actor.id and not registrar:
            raise Forbidden(
                f"events[{index}] {event_id} was signed by {original!r}; only it or the registrar may reaffirm it"
            )


_Handler = Callable[[WorkingSet, Any, AcceptedEvent, Participant | None], None]
_HANDLERS: dict[type, _Handler] = {
    ev.ParticipantAdmitted: _accept_participant_admitted,
    ev.FacilityRegistered: _accept_facility_registered,
    ev.KeyAdded: _accept_key_added,
    ev.KeyRevoked: _accept_key_revoked,
    ev.OwnershipChanged: _accept_ownership_changed,
    ev.Extract: _accept_extract,
    ev.Transfer: _accept_transfer,
    ev.Receive: _accept_receive,
    ev.Transform: _accept_transform,
    ev.Split: _accept_split,
    ev.Merge: _accept_merge,
    ev.Attest: _accept_attest,
    ev.RevokeAttestation: _accept_attestation_change,
    ev.SuspendAttestation: _accept_attestation_change,
    ev.DeterminationRecorded: _accept_determination,
    ev.Reaffirm: _accept_reaffirm,
    ev.OwnerRegistered: _accept_owner_registered,
    ev.StakeRecorded: _accept_stake_recorded,
    ev.ExchangeRatesPublished: _accept_exchange_rates,
    ev.ProfilePublished: _accept_profile_published,
    ev.CustodyModelDeclared: _accept_custody_model,
    ev.Recycle: _accept_recycle,
    ev.Claim: _accept_claim,
    ev.AgreementPublished: _accept_agreement_published,
    ev.CertificateIssued: _accept_certificate,
}
