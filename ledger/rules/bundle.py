"""Proof bundles: everything a customs officer needs to re-derive a determination offline, and its verifier.

A bundle holds the lineage's envelopes, the registry and attestation events the verdict depends on, the rule
profile, a signed checkpoint, and an inclusion proof of every envelope against that checkpoint. The verifier
re-checks every signature (against keys introduced by registry events in the bundle itself, valid at the
event's log index) and every proof, re-runs the same engine, and compares the result with the stated one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.domain.dsse import PAYLOAD_TYPE, Envelope, Signature, pae
from ledger.domain.keys import decode_public_key, key_id, verify_signature
from ledger.errors import LedgerError
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_verifier_key
from ledger.log.cosignature import WitnessPolicy
from ledger.log.offline import leaf_for_event
from ledger.rules.engine import Determination, LoggedEvent, determination_document, determine
from ledger.rules.profiles import Profile, ProfileError, profile_from_document

BUNDLE_FORMAT = "mineral-ledger/bundle/v1"


Progress = Callable[[int, int], None]
"""Told (entries checked, entries in all) as signatures are verified, for a progress bar."""
PROGRESS_EVERY = 256


class BundleError(Exception):
    """The bundle does not prove what it claims; the message says exactly why."""


@dataclass
class BundleResult:
    determination: Determination
    checkpoint: Checkpoint
    entries: int
    warnings: list[str] = field(default_factory=list)


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise BundleError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what} is not valid base64") from None


def _field(document: Mapping[str, Any], name: str, kind: type, where: str = "the bundle") -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise BundleError(f"{where} has no valid {name!r}")
    return value


@dataclass
class _KeyRecord:
    participant: str
    public_key: bytes
    added_at: int
    revoked_at: int | None = None


def _decode_entries(
    document: Mapping[str, Any], checkpoint: Checkpoint
) -> list[tuple[LoggedEvent, Envelope, bytes]]:
    entries = _field(document, "entries", list)
    decoded: list[tuple[LoggedEvent, Envelope, bytes]] = []
    seen: set[int] = set()
    for position, entry in enumerate(entries):
        where = f"entries[{position}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{where} is not an object")
        log_index = _field(entry, "log_index", int, where)
        if log_index in seen:
            raise BundleError(f"{where} repeats log index {log_index}")
        seen.add(log_index)
        try:
            envelope = msgspec.convert(entry.get("envelope"), type=Envelope, strict=True)
        except msgspec.ValidationError as exc:
            raise BundleError(f"{where}.envelope is malformed: {exc}") from None
        payload = _b64(envelope.payload, f"{where}.envelope.payload")
        event_id = "sha256:" + hashlib.sha256(payload).hexdigest()
        proof = [_b64(h, f"{where}.proof[{i}]") for i, h in enumerate(_field(entry, "proof", list, where))]
        try:
            merkle.verify_inclusion(
                leaf_for_event(event_id),
                log_index,
                checkpoint.size,
                proof,
                checkpoint.root_hash,
            )
        except merkle.ProofError as exc:
            raise BundleError(
                f"{where} (event {event_id}, log index {log_index}) is not in the log the checkpoint commits to: {exc}"
            ) from None
        if envelope.payloadType != PAYLOAD_TYPE:
            raise BundleError(f"{where} has payload type {envelope.payloadType!r}, not {PAYLOAD_TYPE!r}")
        try:
            event = ev.decode_payload(payload)
        except LedgerError as exc:
            raise BundleError(f"{where} (event {event_id}) has an invalid payload: {exc.detail}") from None
        decoded.append((LoggedEvent(log_index, event_id, event), envelope, payload))
    decoded.sort(key=lambda item: item[0].log_index)
    return decoded


def _check_signatures(
    decoded: list[tuple[LoggedEvent, Envelope, bytes]],
    log_public_key: bytes,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Replay the registry's key events in log order; every envelope must be signed by a key of its actor that
    was introduced earlier in the log and not yet revoked."""
    keys: dict[str, _KeyRecord] = {}
    signers: dict[str, str] = {}
    for done, (logged, envelope, payload) in enumerate(decoded):
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, len(decoded))
        event = logged.event
        signed = {s.keyid: s for s in envelope.signatures}
        if isinstance(event, ev.DeterminationRecorded):
            candidates = [(key_id(log_public_key), log_public_key)]
        elif isinstance(event, ev.ParticipantAdmitted) and event.actor == event.participant.id and not keys:
            candidates = [
                (key_id(decode_public_key(k.public_key)), decode_public_key(k.public_key)) for k in event.keys
            ]
        else:
            candidates = [
                (kid, record.public_key)
                for kid, record in keys.items()
                if record.participant == event.actor
                and record.added_at < logged.log_index
                and (record.revoked_at is None or logged.log_index < record.revoked_at)
            ]
        usable = [(kid, public) for kid, public in candidates if kid in signed]
        if not usable:
            raise BundleError(
                f"event {logged.event_id} (log index {logged.log_index}) is signed by no key of {event.actor!r} that "
                "the bundle's registry events show valid at that point of the log: a registry event is missing "
                "or the signature is not the actor's"
            )
        kid, public = usable[0]
        signers[logged.event_id] = kid
        try:
            verify_signature(public, pae(envelope.payloadType, payload), _b64(signed[kid].sig, "signature"))
        except LedgerError:
            raise BundleError(
                f"event {logged.event_id} (log index {logged.log_index}): the signature by key {kid} does not verify; "
                "the envelope was altered"
            ) from None
        match event:
            case ev.ParticipantAdmitted(participant=p, keys=new_keys):
                for new in new_keys:
                    raw = decode_public_key(new.public_key)
                    keys[key_id(raw)] = _KeyRecord(p.id, raw, logged.log_index)
            case ev.KeyAdded(participant=pid, public_key=text):
                raw = decode_public_key(text)
                keys[key_id(raw)] = _KeyRecord(pid, raw, logged.log_index)
            case ev.KeyRevoked(key_id=revoked):
                if revoked in keys:
                    keys[revoked].revoked_at = logged.log_index
            case _:
                pass
    return signers


def _check_chains(decoded: list[tuple[LoggedEvent, Envelope, bytes]]) -> None:
    """Every parent a custody event names must be in the bundle: a missing link is a missing event."""
    present = {logged.event_id for logged, _, _ in decoded}
    for logged, _, _ in decoded:
        event = logged.event
        parents: list[tuple[str, str]] = []
        match event:
            case ev.Transfer(batch=b, parent=p) | ev.Receive(batch=b, parent=p) | ev.Split(batch=b, parent=p):
                parents = [(b, p)]
            case ev.Transform(inputs=inputs):
                parents = [(i.batch, i.parent) for i in inputs]
            case ev.Merge(inputs=merge_inputs):
                parents = [(i.batch, i.parent) for i in merge_inputs]
        for batch, parent in parents:
            if parent not in present:
                raise BundleError(
                    f"event {logged.event_id} names {parent} as the previous event on batch {batch!r}, "
                    "but that event is missing from the bundle"
                )


def _signed_profile(
    decoded: list[tuple[LoggedEvent, Envelope, bytes]],
    stated: Mapping[str, Any],
    document: Mapping[str, Any],
    warnings: list[str],
) -> Profile:
    """The rule profile the determination names, taken from the registrar's signed ``profile_published`` entry
    in the bundle; a bundle of a ledger that never published it carries the document only (with a warning)."""
    named = stated.get("profile") or {}
    registrars = {
        logged.event.participant.id
        for logged, _, _ in decoded
        if isinstance(logged.event, ev.ParticipantAdmitted) and "registrar" in logged.event.participant.roles
    }
    for logged, _, _ in decoded:
        event = logged.event
        if not isinstance(event, ev.ProfilePublished):
            continue
        if event.profile.get("id") != named.get("id") or event.profile.get("version") != named.get("version"):
            continue
        if event.actor not in registrars:
            raise BundleError(
                f"profile entry {logged.event_id} is signed by {event.actor!r}, not by the registrar"
            )
        try:
            profile = profile_from_document(event.profile, f"entry {logged.event_id}")
        except ProfileError as exc:
            raise BundleError(exc.detail) from None
        carried = document.get("profile")
        if carried is not None and carried != profile.document():
            raise BundleError(
                "the bundle's profile document differs from the signed profile entry it carries"
            )
        return profile
    warnings.append(
        f"profile {named.get('id')} version {named.get('version')} is not a signed entry of this bundle (the ledger "
        "had not published it); using the document the bundle carries"
    )
    try:
        return profile_from_document(document.get("profile"))
    except ProfileError as exc:
        raise BundleError(exc.detail) from None


@dataclass
class OpenedBundle:
    """A bundle whose log key, checkpoint, inclusion proofs, signatures and hash-chain links all verified."""

    entries: list[tuple[LoggedEvent, Envelope, bytes]]
    checkpoint: Checkpoint
    warnings: list[str]


def open_bundle(
    document: Mapping[str, Any],
    bundle_format: str,
    vkey: str | None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
) -> OpenedBundle:
    """Everything every kind of bundle proves the same way: that it pins the log key given (if one is), that its
    checkpoint is signed by that key (and cosigned by a quorum of ``witnesses``, if given), that every entry is in
    the log the checkpoint commits to, signed by a key its actor held at that point of the log, and that every
    parent link is present."""
    warnings: list[str] = []
    if document.get("format") != bundle_format:
        raise BundleError(f"this is not a {bundle_format} bundle (format is {document.get('format')!r})")
    log = _field(document, "log", dict)
    pinned = _field(log, "vkey", str, "the bundle's log section")
    if vkey is not None and vkey.strip() != pinned.strip():
        raise BundleError(
            f"the bundle pins log key {pinned.strip()!r}, not the key you gave ({vkey.strip()!r}): it was not "
            "produced by the ledger you trust"
        )
    if vkey is None:
        warnings.append(
            "no log key given: trusting the key pinned in the bundle; pass --log-key to compare it"
        )
    try:
        name, log_public_key = parse_verifier_key(pinned.strip())
        note = _field(log, "checkpoint", str, "the bundle's log section")
        checkpoint = open_checkpoint(note, name, log_public_key)
    except CheckpointError as exc:
        raise BundleError(f"the bundle's checkpoint does not verify: {exc}") from None
    if witnesses is not None:
        try:
            witnesses.check(note)
        except CheckpointError as exc:
            raise BundleError(f"the bundle's checkpoint is not witnessed as required: {exc}") from None

    decoded = _decode_entries(document, checkpoint)
    signers = _check_signatures(decoded, log_public_key, progress)
    if progress is not None:
        progress(len(decoded), len(decoded))
    decoded = [
        (
            LoggedEvent(logged.log_index, logged.event_id, logged.event, signers.get(logged.event_id)),
            envelope,
            payload,
        )
        for logged, envelope, payload in decoded
    ]
    _check_chains(decoded)
    return OpenedBundle(decoded, checkpoint, warnings)


def registrars_of(decoded: list[tuple[LoggedEvent, Envelope, bytes]]) -> set[str]:
    """The participants the bundle's registry events admit as registrars."""
    return {
        logged.event.participant.id
        for logged, _, _ in decoded
        if isinstance(logged.event, ev.ParticipantAdmitted) and "registrar" in logged.event.participant.roles
    }


def verify_bundle(
    document: Mapping[str, Any],
    *,
    vkey: str | None = None,
    local_profiles: Mapping[str, Profile] | None = None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
) -> BundleResult:
    """Verify a bundle completely, offline; raise :class:`BundleError` naming the first thing that fails.
    ``progress(done, total)`` hears how many entries' signatures are checked."""
    opened = open_bundle(document, BUNDLE_FORMAT, vkey, witnesses, progress)
    decoded, checkpoint, warnings = opened.entries, opened.checkpoint, opened.warnings

    stated = _field(document, "determination", dict)
    profile = _signed_profile(decoded, stated, document, warnings)
    stated_hash = (stated.get("profile") or {}).get("content_hash")
    if stated_hash != profile.content_hash:
        raise BundleError(
            f"the bundle's profile hashes to {profile.content_hash}, but the determination names {stated_hash}"
        )
    local = (local_profiles or {}).get(profile.id)
    if local is not None and local.version == profile.version and local.content_hash != profile.content_hash:
        raise BundleError(
            f"the bundle's profile {profile.id} version {profile.version} ({profile.content_hash}) differs from "
            f"the same version this verifier ships ({local.content_hash}): the rules were changed"
        )
    if local_profiles is not None and local is None:
        warnings.append(f"this verifier does not ship profile {profile.id!r}; using the bundle's signed copy")

    try:
        at = date.fromisoformat(_field(document, "at", str))
        batch = _field(document, "batch", str)
        recomputed = determine([logged for logged, _, _ in decoded], batch, profile, at)
    except (LedgerError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, LedgerError) else str(exc)
        raise BundleError(f"re-running the engine on the bundle fails: {detail}") from None
    ours = determination_document(recomputed)
    if canonical_bytes(ours) != canonical_bytes(dict(stated)):
        differing = sorted(k for k in set(ours) | set(stated) if ours.get(k) != stated.get(k))
        raise BundleError(
            "the stated determination differs from the one the evidence gives: "
            + "; ".join(f"{k}: stated {stated.get(k)!r}, recomputed {ours.get(k)!r}" for k in differing[:4])
        )
    return BundleResult(recomputed, checkpoint, len(decoded), warnings)


__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleResult",
    "OpenedBundle",
    "Signature",
    "open_bundle",
    "registrars_of",
    "verify_bundle",
]
