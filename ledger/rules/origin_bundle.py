"""Offline verification of trade-agreement origin: the bundle of one good's origin determination, and the bundle a
customs officer gets for a certification of origin.

Both are proven like eligibility bundles (:func:`ledger.rules.bundle.open_bundle`: pinned log key, checkpoint,
inclusion proofs, signatures against the bundle's own registry events, parent links). Then the same origin engine
(:func:`ledger.rules.origin.determine_origin`) is re-run on the signed evidence with the agreement profile from
the registrar's signed ``agreement_published`` entry, and its answer must equal the stated one byte for byte. For a
certificate, every good's recorded determination (an entry signed by the ledger's log key) is re-derived from the
events logged before it, and must say the good originates, under the criterion and HS subheading certified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.errors import LedgerError
from ledger.log.checkpoint import Checkpoint
from ledger.log.cosignature import WitnessPolicy
from ledger.rules.agreement import Agreement, agreement_from_document
from ledger.rules.bundle import BundleError, OpenedBundle, Progress, open_bundle, registrars_of
from ledger.rules.facts import LoggedEvent
from ledger.rules.origin import METHODS, OriginDetermination, determine_origin, origin_document

ORIGIN_BUNDLE_FORMAT = "mineral-ledger/origin-bundle/v1"
CERTIFICATE_BUNDLE_FORMAT = "mineral-ledger/certificate-bundle/v1"


@dataclass
class OriginBundleResult:
    determination: OriginDetermination
    checkpoint: Checkpoint
    entries: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class CertificateBundleResult:
    certificate: ev.CertificateInfo
    certifier: str
    event_id: str
    determinations: list[OriginDetermination]
    checkpoint: Checkpoint
    entries: int
    warnings: list[str] = field(default_factory=list)


def signed_agreement(
    opened: OpenedBundle,
    named: Mapping[str, Any],
    carried: Any,
    local: Mapping[str, Agreement] | None,
) -> Agreement:
    """The agreement profile a determination names, from the registrar's signed ``agreement_published`` entry
    in the bundle (else the document the bundle carries, with a warning), checked against its stated hash and
    against the verifier's own copy of the same version."""
    registrars = registrars_of(opened.entries)
    agreement: Agreement | None = None
    for logged, _, _ in opened.entries:
        event = logged.event
        if not isinstance(event, ev.AgreementPublished):
            continue
        if event.agreement.get("id") != named.get("id") or event.agreement.get("version") != named.get(
            "version"
        ):
            continue
        if event.actor not in registrars:
            raise BundleError(
                f"agreement entry {logged.event_id} is signed by {event.actor!r}, not by the registrar"
            )
        agreement = _parse(event.agreement, f"entry {logged.event_id}")
        if carried is not None and carried != agreement.document():
            raise BundleError(
                "the bundle's agreement document differs from the signed agreement entry it carries"
            )
        break
    if agreement is None:
        opened.warnings.append(
            f"agreement {named.get('id')} version {named.get('version')} is not a signed entry of this bundle (the "
            "ledger had not published it); using the document the bundle carries"
        )
        agreement = _parse(carried, "from the bundle")
    if named.get("content_hash") != agreement.content_hash:
        raise BundleError(
            f"the bundle's agreement hashes to {agreement.content_hash}, but the determination names "
            f"{named.get('content_hash')}"
        )
    mine = (local or {}).get(agreement.id)
    if mine is not None and mine.version == agreement.version and mine.content_hash != agreement.content_hash:
        raise BundleError(
            f"the bundle's agreement {agreement.id} version {agreement.version} ({agreement.content_hash}) differs "
            f"from the same version this verifier ships ({mine.content_hash}): the rules were changed"
        )
    return agreement


def _parse(document: Any, where: str) -> Agreement:
    try:
        return agreement_from_document(document, where)
    except LedgerError as exc:
        raise BundleError(exc.detail) from None


def _rerun(
    events: list[LoggedEvent], batch: str, agreement: Agreement, stated: Mapping[str, Any]
) -> OriginDetermination:
    """Re-run the engine for a stated determination and require the same document."""
    method = stated.get("method")
    if method not in METHODS:
        raise BundleError(f"the determination of {batch!r} names no valid method ({method!r})")
    try:
        at = date.fromisoformat(str(stated.get("at")))
        recomputed = determine_origin(events, batch, agreement, at, method)
    except (LedgerError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, LedgerError) else str(exc)
        raise BundleError(f"re-running the origin engine for {batch!r} fails: {detail}") from None
    ours = origin_document(recomputed)
    if canonical_bytes(ours) != canonical_bytes(dict(stated)):
        differing = sorted(k for k in set(ours) | set(stated) if ours.get(k) != stated.get(k))
        raise BundleError(
            f"the stated origin determination of {batch!r} differs from the one the evidence gives: "
            + "; ".join(f"{k}: stated {stated.get(k)!r}, recomputed {ours.get(k)!r}" for k in differing[:4])
        )
    return recomputed


def verify_origin_bundle(
    document: Mapping[str, Any],
    *,
    vkey: str | None = None,
    local_agreements: Mapping[str, Agreement] | None = None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
) -> OriginBundleResult:
    """Verify an origin bundle completely, offline; raise :class:`BundleError` naming the first thing that fails."""
    opened = open_bundle(document, ORIGIN_BUNDLE_FORMAT, vkey, witnesses, progress)
    stated = document.get("determination")
    if not isinstance(stated, dict):
        raise BundleError("the bundle has no valid 'determination'")
    agreement = signed_agreement(
        opened, stated.get("agreement") or {}, document.get("agreement"), local_agreements
    )
    batch = document.get("batch")
    if not isinstance(batch, str) or batch != stated.get("batch"):
        raise BundleError(f"the bundle's batch {batch!r} is not the one its determination names")
    recomputed = _rerun([logged for logged, _, _ in opened.entries], batch, agreement, stated)
    return OriginBundleResult(recomputed, opened.checkpoint, len(opened.entries), opened.warnings)


def verify_certificate_bundle(
    document: Mapping[str, Any],
    *,
    vkey: str | None = None,
    local_agreements: Mapping[str, Agreement] | None = None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
) -> CertificateBundleResult:
    """Verify a certificate bundle offline: the certificate's own entry and signature, and for every good the
    recorded origin determination it cites, re-derived from the events logged before it."""
    opened = open_bundle(document, CERTIFICATE_BUNDLE_FORMAT, vkey, witnesses, progress)
    wanted = document.get("certificate")
    found = [
        logged
        for logged, _, _ in opened.entries
        if isinstance(logged.event, ev.CertificateIssued) and logged.event.certificate.id == wanted
    ]
    if len(found) != 1:
        raise BundleError(f"the bundle carries no signed entry of certificate {wanted!r}")
    entry = found[0]
    issued = entry.event
    assert isinstance(issued, ev.CertificateIssued)
    certificate = issued.certificate
    by_id = {logged.event_id: logged for logged, _, _ in opened.entries}
    determinations: list[OriginDetermination] = []
    for index, good in enumerate(certificate.goods):
        where = f"goods[{index}] (batch {good.batch})"
        recorded = by_id.get(good.determination or "")
        if recorded is None or not isinstance(recorded.event, ev.DeterminationRecorded):
            raise BundleError(
                f"{where}: the determination {good.determination} is not an entry of the bundle"
            )
        if recorded.log_index > entry.log_index:
            raise BundleError(
                f"{where}: the determination {good.determination} was logged after the certificate"
            )
        stated = recorded.event.determination
        if recorded.event.batch != good.batch or stated.get("batch") != good.batch:
            raise BundleError(f"{where}: the determination {good.determination} is about another batch")
        named = stated.get("agreement") or {}
        if named.get("id") != certificate.agreement:
            raise BundleError(
                f"{where}: the determination is under {named.get('id')!r}, not {certificate.agreement!r}"
            )
        agreement = signed_agreement(opened, named, None, local_agreements)
        before = [logged for logged, _, _ in opened.entries if logged.log_index < recorded.log_index]
        assert good.batch is not None
        recomputed = _rerun(before, good.batch, agreement, stated)
        if recomputed.verdict != "originating":
            raise BundleError(f"{where}: the determination finds the good not originating")
        if recomputed.criterion != good.origin_criterion:
            raise BundleError(
                f"{where}: the certificate states criterion {good.origin_criterion}, the determination finds "
                f"{recomputed.criterion}"
            )
        if recomputed.hs6 != good.hs6:
            raise BundleError(
                f"{where}: the certificate states HS {good.hs6}, the batch is classified {recomputed.hs6}"
            )
        determinations.append(recomputed)
    return CertificateBundleResult(
        certificate,
        issued.actor,
        entry.event_id,
        determinations,
        opened.checkpoint,
        len(opened.entries),
        opened.warnings,
    )


__all__ = [
    "CERTIFICATE_BUNDLE_FORMAT",
    "ORIGIN_BUNDLE_FORMAT",
    "CertificateBundleResult",
    "OriginBundleResult",
    "verify_certificate_bundle",
    "verify_origin_bundle",
]
