"""A Python client for the ledger's HTTP API: builds, signs and submits envelopes, and reads resources."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.domain.dsse import Envelope, sign_envelope
from ledger.domain.keys import SigningKey
from ledger.rules.engine import Determination
from ledger.rules.origin import OriginDetermination
from ledger.services.views import (
    BatchList,
    BatchSubmitView,
    BatchView,
    CustodyModelHistory,
    EventView,
    ExchangeRateList,
    HistoryView,
    IssuedTokenView,
    LineageView,
    OwnerList,
    OwnerView,
    ParticipantList,
    ParticipantView,
    StakeList,
    SubmitResultView,
    TokenList,
    TokenView,
)

T = TypeVar("T")


class ClientError(Exception):
    """The server answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        code = f" [{problem['code']}]" if problem.get("code") else ""
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', problem)}{code}")


def timestamp_now() -> str:
    """The current time as an RFC 3339 timestamp in UTC, second precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def envelope_for(event: ev.Event, key: SigningKey) -> Envelope:
    """Canonicalise ``event`` (RFC 8785) and sign it in a DSSE envelope."""
    return sign_envelope(canonical_bytes(ev.encode_event(event)), key)


class LedgerClient:
    """Talks to one ledger as one participant (``actor``), signing with ``key`` and sending ``token``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        actor: str | None = None,
        key: SigningKey | None = None,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.http = http if http is not None else httpx.Client(base_url=url, timeout=timeout)
        self._owns_http = http is None
        self.token = token
        self.actor = actor
        self.key = key

    def acting_as(self, actor: str, key: SigningKey, token: str) -> LedgerClient:
        """Another participant's client over the same connection pool."""
        return LedgerClient(http=self.http, token=token, actor=actor, key=key)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------------------

    def _auth(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        merged = dict(headers or {})
        if self.token:
            merged["Authorization"] = f"Bearer {self.token}"
        return merged

    def _call(self, method: str, path: str, type_: type[T], **kwargs: Any) -> T:
        kwargs["headers"] = self._auth(kwargs.get("headers"))
        response = self.http.request(method, path, **kwargs)
        _raise_for(response)
        return msgspec.json.decode(response.content, type=type_)

    def sign(self, event: ev.Event) -> Envelope:
        if self.key is None:
            raise ValueError("this client has no signing key")
        return envelope_for(event, self.key)

    def submit_envelope(self, envelope: Envelope) -> SubmitResultView:
        return self._call("POST", "/v1/events", SubmitResultView, content=envelope.to_json(), headers=_JSON)

    def submit(self, event: ev.Event) -> SubmitResultView:
        return self.submit_envelope(self.sign(event))

    def submit_batch(self, envelopes: list[Envelope]) -> BatchSubmitView:
        body = msgspec.json.encode({"envelopes": envelopes})
        return self._call("POST", "/v1/events/batch", BatchSubmitView, content=body, headers=_JSON)

    def _actor(self) -> str:
        if self.actor is None:
            raise ValueError("this client has no actor (participant id)")
        return self.actor

    # --- registrar ------------------------------------------------------------------------------------------

    def admit_participant(
        self,
        participant_id: str,
        name: str,
        roles: list[str],
        country: str,
        *,
        public_keys: Sequence[str] = (),
        incorporated_in: str | None = None,
        headquartered_in: str | None = None,
        government_stakes: Sequence[ev.GovernmentStake] = (),
        timestamp: str | None = None,
    ) -> SubmitResultView:
        return self.submit(
            ev.ParticipantAdmitted(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                participant=ev.ParticipantInfo(
                    id=participant_id,
                    name=name,
                    roles=list(roles),
                    country=country,
                    ownership=ev.Ownership(
                        incorporated_in=incorporated_in or country,
                        headquartered_in=headquartered_in or country,
                        government_stakes=list(government_stakes),
                    ),
                ),
                keys=[ev.NewKey(public_key=k) for k in public_keys],
            )
        )

    def register_facility(
        self,
        facility_id: str,
        participant: str,
        kind: str,
        country: str,
        name: str,
        *,
        loss_tolerance: str = "0.005",
        timestamp: str | None = None,
    ) -> SubmitResultView:
        return self.submit(
            ev.FacilityRegistered(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                facility=ev.FacilityInfo(
                    id=facility_id,
                    participant=participant,
                    kind=kind,
                    country=country,
                    name=name,
                    loss_tolerance=loss_tolerance,
                ),
            )
        )

    def add_key(self, participant: str, public_key: str, *, timestamp: str | None = None) -> SubmitResultView:
        return self.submit(
            ev.KeyAdded(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                participant=participant,
                public_key=public_key,
            )
        )

    def revoke_key(
        self,
        participant: str,
        key_id: str,
        reason: str,
        *,
        effective_at: str | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        return self.submit(
            ev.KeyRevoked(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                participant=participant,
                key_id=key_id,
                reason=reason,
                effective_at=effective_at,
            )
        )

    def register_owner(
        self, owner_id: str, name: str, kind: str, country: str, *, timestamp: str | None = None
    ) -> SubmitResultView:
        """Register an owner that is not a participant (a government, a state enterprise, a fund...)."""
        return self.submit(
            ev.OwnerRegistered(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                owner=ev.OwnerInfo(id=owner_id, name=name, kind=kind, country=country),
            )
        )

    def record_stake(
        self,
        holder: str,
        subject: str,
        effective_date: str,
        *,
        equity: str = "0",
        votes: str = "0",
        board_seats: str = "0",
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """Record that ``holder`` holds these shares (decimals or n/d) of ``subject`` from ``effective_date``."""
        return self.submit(
            ev.StakeRecorded(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                holder=holder,
                subject=subject,
                effective_date=effective_date,
                equity=equity,
                votes=votes,
                board_seats=board_seats,
            )
        )

    def publish_rates(
        self, day: str, rates: Sequence[tuple[str, str, str]], source: str, *, timestamp: str | None = None
    ) -> SubmitResultView:
        """Publish (from, to, rate) reference exchange rates for ``day``."""
        return self.submit(
            ev.ExchangeRatesPublished(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                date=day,
                rates=[ev.ExchangeRate(from_=f, to=t, rate=r) for f, t, r in rates],
                source=source,
            )
        )

    def publish_profile(self, document: dict[str, Any], *, timestamp: str | None = None) -> SubmitResultView:
        """Publish a rule profile (``Profile.document()``) in the log."""
        return self.submit(
            ev.ProfilePublished(actor=self._actor(), timestamp=timestamp or timestamp_now(), profile=document)
        )

    def declare_custody_model(
        self,
        facility: str,
        model: str,
        effective_date: str,
        *,
        period: str = "quarter",
        conversion_factors: dict[str, str] | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """As the facility's owner (or the registrar): its chain-of-custody model from ``effective_date``."""
        return self.submit(
            ev.CustodyModelDeclared(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                facility=facility,
                model=model,
                effective_date=effective_date,
                period=period,
                conversion_factors=dict(conversion_factors or {}),
            )
        )

    def issue_token(
        self, participant: str, label: str = "", expires_at: datetime | None = None
    ) -> IssuedTokenView:
        body = {"participant": participant, "label": label}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self._call("POST", "/v1/tokens", IssuedTokenView, json=body)

    def list_tokens(self, participant: str | None = None) -> TokenList:
        params = {"participant": participant} if participant else {}
        return self._call("GET", "/v1/tokens", TokenList, params=params)

    def revoke_token(self, token_id: str) -> TokenView:
        return self._call("POST", f"/v1/tokens/{token_id}/revoke", TokenView)

    # --- custody --------------------------------------------------------------------------------------------
    # Each helper signs one event as this client's actor. ``parent`` defaults to the batch's current head, read
    # from the server; pass it explicitly to chain events without a round trip.

    def head(self, batch_id: str) -> str:
        return self.batch(batch_id).head

    def extract(
        self,
        facility: str,
        batch_id: str,
        mineral: str,
        form: str,
        mass_g: int,
        *,
        value: ev.Money | None = None,
        hs6: str | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        batch = ev.NewBatch(id=batch_id, mineral=mineral, form=form, mass_g=mass_g, value=value, hs6=hs6)
        return self.submit(
            ev.Extract(
                actor=self._actor(), timestamp=timestamp or timestamp_now(), facility=facility, batch=batch
            )
        )

    def transfer(
        self,
        batch_id: str,
        to: str,
        route: Sequence[tuple[str, bool] | ev.RouteLeg],
        *,
        to_facility: str | None = None,
        parent: str | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """Ship a batch to ``to``; ``route`` lists legs, each a :class:`RouteLeg` or (country, stayed under
        customs control)."""
        return self.submit(
            ev.Transfer(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                batch=batch_id,
                parent=parent or self.head(batch_id),
                to=to,
                route=[
                    leg
                    if isinstance(leg, ev.RouteLeg)
                    else ev.RouteLeg(country=leg[0], customs_control=leg[1])
                    for leg in route
                ],
                to_facility=to_facility,
            )
        )

    def receive(
        self,
        batch_id: str,
        facility: str,
        *,
        mass_g: int | None = None,
        parent: str | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """Receive a shipped batch; ``mass_g`` defaults to the shipped mass (no loss)."""
        if mass_g is None or parent is None:
            current = self.batch(batch_id)
            mass_g = current.mass_g if mass_g is None else mass_g
            parent = parent or current.head
        return self.submit(
            ev.Receive(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                batch=batch_id,
                parent=parent,
                facility=facility,
                mass_g=mass_g,
            )
        )

    def transform(
        self,
        facility: str,
        process: str,
        inputs: Sequence[tuple[str, int]],
        outputs: Sequence[ev.Output],
        value_added: ev.Money,
        *,
        parents: dict[str, str] | None = None,
        input_values: dict[str, ev.Money] | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """Consume (batch, grams) inputs at ``facility`` and produce ``outputs``; ``input_values`` declares the
        value of a material as used (for trade-agreement origin)."""
        parents = parents or {}
        values = input_values or {}
        return self.submit(
            ev.Transform(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                facility=facility,
                process=process,
                inputs=[
                    ev.Input(batch=b, parent=parents.get(b) or self.head(b), mass_g=m, value=values.get(b))
                    for b, m in inputs
                ],
                outputs=list(outputs),
                value_added=value_added,
            )
        )

    def recycle(
        self,
        facility: str,
        feedstock: Sequence[ev.Feedstock],
        outputs: Sequence[ev.Output],
        *,
        inputs: Sequence[tuple[str, int]] = (),
        parents: dict[str, str] | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """As a recycler: recover ``outputs`` from ``feedstock`` (and optional ledger batches, (batch, grams))."""
        parents = parents or {}
        return self.submit(
            ev.Recycle(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                facility=facility,
                feedstock=list(feedstock),
                outputs=list(outputs),
                inputs=[
                    ev.Input(batch=b, parent=parents.get(b) or self.head(b), mass_g=m) for b, m in inputs
                ],
            )
        )

    def claim(
        self,
        facility: str,
        profile: str,
        period: str,
        batch_id: str,
        mass_g: int,
        *,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """Allocate ``mass_g`` of the facility's mass-balance credits of ``period`` under ``profile`` to a batch."""
        return self.submit(
            ev.Claim(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                facility=facility,
                profile=profile,
                period=period,
                batch=batch_id,
                mass_g=mass_g,
            )
        )

    def split(
        self,
        batch_id: str,
        parts: Sequence[tuple[str, int]],
        *,
        parent: str | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        return self.submit(
            ev.Split(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                batch=batch_id,
                parent=parent or self.head(batch_id),
                outputs=[ev.SplitPart(id=i, mass_g=m) for i, m in parts],
            )
        )

    def merge(
        self,
        inputs: Sequence[str],
        output: str,
        *,
        parents: dict[str, str] | None = None,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        parents = parents or {}
        return self.submit(
            ev.Merge(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                inputs=[ev.MergeInput(batch=b, parent=parents.get(b) or self.head(b)) for b in inputs],
                output=output,
            )
        )

    def batch(self, batch_id: str) -> BatchView:
        return self._call("GET", f"/v1/batches/{batch_id}", BatchView)

    def history(self, batch_id: str) -> HistoryView:
        return self._call("GET", f"/v1/batches/{batch_id}/history", HistoryView)

    def lineage(self, batch_id: str, direction: str = "upstream") -> LineageView:
        return self._call(
            "GET", f"/v1/batches/{batch_id}/lineage", LineageView, params={"direction": direction}
        )

    def lineage_picture(self, batch_id: str, direction: str = "upstream", fmt: str = "dot") -> str:
        params = {"direction": direction, "format": fmt}
        response = self.http.get(f"/v1/batches/{batch_id}/lineage", params=params, headers=self._auth())
        _raise_for(response)
        return response.text

    def participant_batches(self, participant_id: str) -> BatchList:
        return self._call("GET", f"/v1/participants/{participant_id}/batches", BatchList)

    # --- attestations and eligibility ------------------------------------------------------------------------

    def attest(
        self,
        attestation_id: str,
        *,
        facility: str | None = None,
        participant: str | None = None,
        standard: str,
        level: str,
        valid_from: str,
        valid_to: str,
        report_sha256: str,
        minerals: Sequence[str] = (),
        activities: Sequence[str] = (),
        timestamp: str | None = None,
    ) -> SubmitResultView:
        """As an auditor: attest a facility (or a participant) to a standard at a level, for a validity period."""
        return self.submit(
            ev.Attest(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                attestation=ev.AttestationInfo(
                    id=attestation_id,
                    subject=ev.AttestationSubject(facility=facility, participant=participant),
                    standard=standard,
                    level=level,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    report_sha256=report_sha256,
                    minerals=list(minerals),
                    activities=list(activities),
                ),
            )
        )

    def revoke_attestation(
        self,
        attestation_id: str,
        effective_date: str,
        reason: str,
        *,
        suspend: bool = False,
        timestamp: str | None = None,
    ) -> SubmitResultView:
        kind = ev.SuspendAttestation if suspend else ev.RevokeAttestation
        return self.submit(
            kind(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                attestation=attestation_id,
                effective_date=effective_date,
                reason=reason,
            )
        )

    def reaffirm(
        self, event_ids: Sequence[str], statement: str, *, timestamp: str | None = None
    ) -> SubmitResultView:
        """Vouch for events signed with a key after its reported compromise (as their signer, or the registrar)."""
        return self.submit(
            ev.Reaffirm(
                actor=self._actor(),
                timestamp=timestamp or timestamp_now(),
                events=list(event_ids),
                statement=statement,
            )
        )

    def eligibility(self, batch_id: str, profile: str | None = None, at: str | None = None) -> Determination:
        """The full determination (every reason and source); the server's default answer is a summary."""
        params = {k: v for k, v in (("profile", profile), ("at", at), ("detail", "full")) if v}
        return self._call("GET", f"/v1/batches/{batch_id}/eligibility", Determination, params=params)

    def record_determination(
        self, batch_id: str, profile: str | None = None, at: str | None = None
    ) -> SubmitResultView:
        body = {k: v for k, v in (("profile", profile), ("at", at)) if v}
        return self._call("POST", f"/v1/batches/{batch_id}/determinations", SubmitResultView, json=body)

    def bundle(self, batch_id: str, profile: str | None = None, at: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("profile", profile), ("at", at)) if v}
        return self._call("GET", f"/v1/batches/{batch_id}/bundle", dict[str, Any], params=params)

    def publish_agreement(
        self, document: dict[str, Any], *, timestamp: str | None = None
    ) -> SubmitResultView:
        """Publish a trade-agreement origin profile (``Agreement.document()``) in the log (registrar)."""
        return self.submit(
            ev.AgreementPublished(
                actor=self._actor(), timestamp=timestamp or timestamp_now(), agreement=document
            )
        )

    def origin(
        self, batch_id: str, agreement: str | None = None, method: str | None = None, at: str | None = None
    ) -> OriginDetermination:
        """Whether a good originates under a trade agreement (``method``: ``tv`` or ``nc``)."""
        params = {k: v for k, v in (("agreement", agreement), ("method", method), ("at", at)) if v}
        return self._call("GET", f"/v1/batches/{batch_id}/origin", OriginDetermination, params=params)

    def record_origin(
        self, batch_id: str, agreement: str | None = None, method: str | None = None, at: str | None = None
    ) -> SubmitResultView:
        body = {k: v for k, v in (("agreement", agreement), ("method", method), ("at", at)) if v}
        return self._call(
            "POST", f"/v1/batches/{batch_id}/origin/determinations", SubmitResultView, json=body
        )

    def issue_certificate(
        self, certificate: dict[str, Any], *, timestamp: str | None = None
    ) -> SubmitResultView:
        """Sign and submit a certification of origin; its nine data elements are checked here first, so a
        missing or malformed element is named before anything is sent."""
        event = ev.decode_event(
            {
                "kind": "certificate",
                "actor": self._actor(),
                "timestamp": timestamp or timestamp_now(),
                "certificate": certificate,
            }
        )
        return self.submit(event)

    def certificate(self, certificate_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/certificates/{certificate_id}", dict[str, Any])

    def certificate_bundle(self, certificate_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/certificates/{certificate_id}/bundle", dict[str, Any])

    def log_key(self) -> str:
        response = self.http.get("/v1/log/key")
        _raise_for(response)
        return response.text.strip()

    # --- reads ----------------------------------------------------------------------------------------------

    def participants(self, *, limit: int = 100, after: str | None = None) -> ParticipantList:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._call("GET", "/v1/participants", ParticipantList, params=params)

    def participant(self, participant_id: str) -> ParticipantView:
        return self._call("GET", f"/v1/participants/{participant_id}", ParticipantView)

    def event(self, event_id: str) -> EventView:
        return self._call("GET", f"/v1/events/{event_id}", EventView)

    def owners(self, *, limit: int = 100, after: str | None = None) -> OwnerList:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._call("GET", "/v1/owners", OwnerList, params=params)

    def owner(self, owner_id: str) -> OwnerView:
        return self._call("GET", f"/v1/owners/{owner_id}", OwnerView)

    def participant_stakes(self, participant_id: str) -> StakeList:
        return self._call("GET", f"/v1/participants/{participant_id}/stakes", StakeList)

    def exchange_rates(self, day: str) -> ExchangeRateList:
        return self._call("GET", "/v1/exchange-rates", ExchangeRateList, params={"date": day})

    def custody_model(self, facility_id: str, on: str | None = None) -> CustodyModelHistory:
        params = {"on": on} if on else {}
        return self._call(
            "GET", f"/v1/facilities/{facility_id}/custody-model", CustodyModelHistory, params=params
        )


_JSON = {"Content-Type": "application/json"}


def _raise_for(response: httpx.Response) -> None:
    """A :class:`ClientError` for an error answer: its problem document, or (from something that is not the
    ledger, e.g. a proxy) the status line and the start of the body."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = " ".join(response.text.split())
        problem = {"title": response.reason_phrase, "detail": text[:300] or response.reason_phrase}
    raise ClientError(response.status_code, problem)
