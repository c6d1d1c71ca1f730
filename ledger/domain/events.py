"""Event payloads: the canonical JSON documents that DSSE envelopes carry.

Every payload has ``kind`` (which event), ``actor`` (the participant that signs it) and ``timestamp`` (RFC 3339
with the signer's UTC offset, which is kept: the local date decides which threshold applies). The rest depends on
the kind. Decoding is strict: an unknown field, a wrong type or a float is refused and named.

Ids (participants, facilities, batches, attestations) are lowercase ASCII so that look-alike ids cannot coexist.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

import msgspec

from ledger.domain import vocab
from ledger.domain.canonical import check_strings as _check_all_strings
from ledger.domain.canonical import check_structure, parse_canonical
from ledger.errors import InvalidCertificate, InvalidInput

ID_PATTERN = r"^[a-z0-9][a-z0-9._:-]{0,127}$"
DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$"
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
EVENT_ID_PATTERN = r"^sha256:[0-9a-f]{64}$"
KEY_ID_PATTERN = r"^[0-9a-f]{64}$"

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="lowercase ASCII id: a-z 0-9 . _ : -")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
DecimalString = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN, description="non-negative decimal")]
Timestamp = Annotated[str, msgspec.Meta(pattern=TIMESTAMP_PATTERN, description="RFC 3339 with UTC offset")]
DateString = Annotated[str, msgspec.Meta(pattern=DATE_PATTERN, description="YYYY-MM-DD")]
EventId = Annotated[str, msgspec.Meta(pattern=EVENT_ID_PATTERN)]
KeyId = Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]
Grams = Annotated[int, msgspec.Meta(gt=0, le=2**53 - 1, description="mass in integer grams")]
Share = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN, description="fraction between 0 and 1")]
FRACTION_PATTERN = r"^((0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?|(0|[1-9][0-9]{0,17})/[1-9][0-9]{0,17})$"
ExactShare = Annotated[
    str,
    msgspec.Meta(
        pattern=FRACTION_PATTERN,
        description='fraction between 0 and 1, as a decimal ("0.25") or exactly as n/d ("1/3")',
    ),
]
PositiveDecimal = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN, description="positive decimal")]
HS6_PATTERN = r"^[0-9]{6}$"
HS6 = Annotated[
    str,
    msgspec.Meta(
        pattern=HS6_PATTERN,
        description="Harmonized System subheading: 6 digits (chapter, heading, subheading)",
    ),
]

MAX_LIST = 1000


class Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Money(Base):
    amount: DecimalString
    currency: Currency


class GovernmentStake(Base):
    """A foreign government's hold on a participant: each measure kept separately, as a fraction 0..1."""

    country: Country
    equity: ExactShare = "0"
    votes: ExactShare = "0"
    board_seats: ExactShare = "0"


class Ownership(Base):
    incorporated_in: Country
    headquartered_in: Country
    government_stakes: Annotated[list[GovernmentStake], msgspec.Meta(max_length=50)] = []


class ParticipantInfo(Base):
    id: Id
    name: Text
    roles: Annotated[list[str], msgspec.Meta(min_length=1, max_length=9)]
    country: Country
    ownership: Ownership


class NewKey(Base):
    public_key: Annotated[str, msgspec.Meta(description="standard base64 of the raw 32-byte Ed25519 key")]


class FacilityInfo(Base):
    id: Id
    participant: Id
    kind: str
    country: Country
    name: Text
    loss_tolerance: Share = "0.005"
    """Largest fraction of a received batch's mass that may be declared lost in transit to this facility."""


class EventBase(Base, tag_field="kind"):
    actor: Id
    timestamp: Timestamp


# --- registry events (signed by the registrar) -------------------------------------------------------------


class ParticipantAdmitted(EventBase, tag="participant_admitted"):
    participant: ParticipantInfo
    keys: Annotated[list[NewKey], msgspec.Meta(max_length=8)] = []


class FacilityRegistered(EventBase, tag="facility_registered"):
    facility: FacilityInfo


class KeyAdded(EventBase, tag="key_added"):
    participant: Id
    public_key: str


class KeyRevoked(EventBase, tag="key_revoked"):
    participant: Id
    key_id: KeyId
    reason: Text
    effective_at: Timestamp | None = None
    """When the key stopped being trustworthy; earlier than ``timestamp`` for a compromise report."""


class OwnershipChanged(EventBase, tag="ownership_changed"):
    participant: Id
    effective_date: DateString
    ownership: Ownership


class OwnerInfo(Base):
    """An owner that is not a participant: a government, a state enterprise, a holding company, a fund, a person."""

    id: Id
    name: Text
    kind: str
    """``vocab.OWNER_KINDS``; a profile says which kinds it treats as a government."""
    country: Country


class OwnerRegistered(EventBase, tag="owner_registered"):
    owner: OwnerInfo


class StakeRecorded(EventBase, tag="stake_recorded"):
    """``holder`` (an owner or a participant) holds these shares of ``subject`` (an owner or a participant) from
    ``effective_date``; a later record for the same pair replaces it (all zero ends the holding)."""

    holder: Id
    subject: Id
    effective_date: DateString
    equity: ExactShare = "0"
    votes: ExactShare = "0"
    board_seats: ExactShare = "0"


class ExchangeRate(Base):
    from_: Currency = msgspec.field(name="from")
    to: Currency
    rate: PositiveDecimal
    """Units of ``to`` for one unit of ``from``."""


class ExchangeRatesPublished(EventBase, tag="exchange_rates"):
    """Reference exchange rates for one date (decimal strings, converted exactly)."""

    date: DateString
    rates: Annotated[list[ExchangeRate], msgspec.Meta(min_length=1, max_length=500)]
    source: Text


class ProfilePublished(EventBase, tag="profile_published"):
    """A rule profile (or a new version of one) as signed data: the whole profile as JSON."""

    profile: dict[str, Any]


class AgreementPublished(EventBase, tag="agreement_published"):
    """A trade-agreement origin profile (or a new version of one) as signed data: the whole document as JSON
    (``ledger/rules/agreement.py`` validates it; parties, product-specific rules, de minimis, transit)."""

    agreement: dict[str, Any]


class CustodyModelDeclared(EventBase, tag="custody_model"):
    """A facility's chain-of-custody model (ISO 22095) from ``effective_date``."""

    facility: Id
    model: str
    """``vocab.CUSTODY_MODELS``."""
    effective_date: DateString
    period: str = "quarter"
    """Mass-balance period: ``month``, ``quarter`` or ``year``."""
    conversion_factors: Annotated[dict[str, Share], msgspec.Meta(max_length=20)] = {}
    """Per process type: output mass per unit of input mass, for credits under the credit method."""


# --- custody events (signed by the participant doing the work) ---------------------------------------------


class NewBatch(Base):
    id: Id
    mineral: str
    form: str
    mass_g: Grams
    value: Money | None = None
    hs6: HS6 | None = None
    """The good's tariff classification (6-digit HS subheading), for trade-agreement origin; optional."""


class Extract(EventBase, tag="extract"):
    facility: Id
    batch: NewBatch


class RouteLeg(Base):
    country: Country
    customs_control: bool
    """Whether the goods stayed under customs control (bonded, sealed) throughout this leg."""
    operations: Annotated[list[str], msgspec.Meta(max_length=len(vocab.TRANSIT_OPERATIONS))] = []
    """What was done to the goods in this country (closed vocabulary ``vocab.TRANSIT_OPERATIONS``)."""
    released_for_free_circulation: bool = False
    """Whether the goods were released into free circulation (customs-cleared for the home market) there."""


class Transfer(EventBase, tag="transfer"):
    batch: Id
    parent: EventId
    to: Id
    route: Annotated[list[RouteLeg], msgspec.Meta(min_length=1, max_length=50)]
    to_facility: Id | None = None


class Receive(EventBase, tag="receive"):
    batch: Id
    parent: EventId
    facility: Id
    mass_g: Grams


class Input(Base):
    batch: Id
    parent: EventId
    mass_g: Grams
    value: Money | None = None
    """Value of this material as used in the production (USMCA Art. 4.7): counts in the value of non-originating
    materials when the material does not originate. Optional; declared by the producer."""


class Output(Base):
    id: Id
    mineral: str
    form: str
    mass_g: Grams
    value: Money | None = None
    hs6: HS6 | None = None
    """The output good's tariff classification (6-digit HS subheading), for trade-agreement origin; optional."""
    transaction_value: Money | None = None
    """Transaction value of the good (USMCA Art. 4.5.2, adjusted to an FOB basis), for regional value content."""
    net_cost: Money | None = None
    """Net cost of the good (USMCA Art. 4.5.3): total cost less sales promotion, royalties, shipping and packing,
    and non-allowable interest."""
    total_cost: Money | None = None
    """Total cost of the good, where a rule measures de minimis against it (USMCA Art. 4.12)."""


class Transform(EventBase, tag="transform"):
    facility: Id
    process: str
    inputs: Annotated[list[Input], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    outputs: Annotated[list[Output], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    value_added: Money


class SplitPart(Base):
    id: Id
    mass_g: Grams


class Split(EventBase, tag="split"):
    batch: Id
    parent: EventId
    outputs: Annotated[list[SplitPart], msgspec.Meta(min_length=2, max_length=MAX_LIST)]


class MergeInput(Base):
    batch: Id
    parent: EventId


class Merge(EventBase, tag="merge"):
    inputs: Annotated[list[MergeInput], msgspec.Meta(min_length=2, max_length=MAX_LIST)]
    output: Id


class Feedstock(Base):
    """What a recycler took in: described, not traced (recycled material starts a new source)."""

    description: Text
    category: str
    """``vocab.FEEDSTOCK_CATEGORIES``: post-consumer, pre-consumer (manufacturing scrap) or end-of-life battery."""
    mass_g: Grams
    origin_country: Country | None = None
    """Where the feedstock was collected, if known."""


class Recycle(EventBase, tag="recycle"):
    """A recycler recovers material from feedstock at a recycler facility; every output is a new source."""

    facility: Id
    feedstock: Annotated[list[Feedstock], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    outputs: Annotated[list[Output], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    inputs: Annotated[list[Input], msgspec.Meta(max_length=MAX_LIST)] = []
    """Ledger batches consumed as feedstock (scrap that was itself tracked); optional."""


class Claim(EventBase, tag="claim"):
    """Under the mass-balance credit method, the facility's operator allocates credits of a period to an output
    batch made there: ``mass_g`` of that batch counts as qualifying under ``profile``."""

    facility: Id
    profile: Id
    period: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}(-[0-9]{2}|-Q[1-4])?$")]
    """``YYYY``, ``YYYY-Qn`` or ``YYYY-MM``, matching the facility's declared period length."""
    batch: Id
    mass_g: Grams


# --- attestations (signed by an auditor; revoked or suspended by that auditor or the registrar) --------------


class AttestationSubject(Base):
    """Exactly one of ``facility`` or ``participant`` (an attestation of a participant covers all its facilities)."""

    facility: Id | None = None
    participant: Id | None = None


class AttestationInfo(Base):
    id: Id
    subject: AttestationSubject
    standard: Annotated[
        str, msgspec.Meta(pattern=r"^(irma|rmap|iso14001|oecd_ddg|other:[a-z0-9._ -]{1,60})$")
    ]
    level: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    valid_from: DateString
    valid_to: DateString
    report_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    minerals: Annotated[list[str], msgspec.Meta(max_length=10)] = []
    """Minerals in scope; empty means all."""
    activities: Annotated[list[str], msgspec.Meta(max_length=3)] = []
    """Activities in scope (extraction, processing, recycling); empty means all."""


class Attest(EventBase, tag="attest"):
    attestation: AttestationInfo


class RevokeAttestation(EventBase, tag="revoke_attestation"):
    attestation: Id
    effective_date: DateString
    reason: Text


class SuspendAttestation(EventBase, tag="suspend_attestation"):
    attestation: Id
    effective_date: DateString
    reason: Text


# --- reaffirmation of events signed with a key later reported compromised ----------------------------------


class Reaffirm(EventBase, tag="reaffirm"):
    """The participant (with a key that is valid now) or the registrar vouches that events signed with a key
    after its reported compromise are genuine. Until then those events are suspect: audit lists them and
    eligibility fails any batch whose material they touched."""

    events: Annotated[list[EventId], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    statement: Text


# --- certifications of origin (signed by the importer, exporter or producer that certifies) ------------------


class CertificateContact(Base):
    """A person named on a certification of origin (USMCA Annex 5-A, elements 2 to 5). Every field is checked
    by :func:`check_certificate`, which names the element that is missing or malformed."""

    name: str | None = None
    address: str | None = None
    phone: str | None = None
    email: str | None = None
    title: str | None = None
    """The certifier's title (element 2); not asked of the exporter, producer or importer."""


class CertifiedGood(Base):
    """Element 6 (description and HS classification to six digits) and element 7 (origin criterion) of one good,
    with the batch it is and the recorded origin determination that supports it."""

    batch: str | None = None
    description: str | None = None
    hs6: str | None = None
    origin_criterion: str | None = None
    determination: str | None = None
    """Event id of the recorded origin determination of ``batch`` under the certificate's agreement."""


class BlanketPeriod(Base):
    """Element 8: the period a certification covers for multiple shipments of identical goods (at most 12
    months, USMCA Art. 5.2.4(b))."""

    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None


class CertificateSignature(Base):
    """Element 9: the certifier's signature (the DSSE signature of the envelope), date and the statement."""

    name: str | None = None
    date: str | None = None
    statement: str | None = None


class CertificateInfo(Base):
    """A certification of origin with the nine minimum data elements of USMCA Annex 5-A."""

    id: Id
    agreement: Id
    certifier_role: str | None = None
    """Element 1: ``importer``, ``exporter`` or ``producer``."""
    certifier: CertificateContact | None = None
    """Element 2: name, title, address, telephone number and email address of the certifier."""
    exporter: CertificateContact | None = None
    """Element 3: the exporter, if different from the certifier (required when the certifier is the producer)."""
    producer: CertificateContact | str | None = None
    """Element 4: the producer, if different from the certifier or exporter; or ``Various``, or ``Available upon
    request by the importing authorities``."""
    importer: CertificateContact | None = None
    """Element 5: the importer, if known."""
    goods: Annotated[list[CertifiedGood], msgspec.Meta(max_length=MAX_LIST)] = []
    """Elements 6 and 7."""
    blanket_period: BlanketPeriod | None = None
    """Element 8, for a blanket certification; omitted for a single shipment."""
    signature: CertificateSignature | None = None
    """Element 9."""


class CertificateIssued(EventBase, tag="certificate"):
    """A certification of origin, signed by the importer, exporter or producer that certifies it."""

    certificate: CertificateInfo


# --- determinations (signed by the ledger's own log key) ----------------------------------------------------

LEDGER_ACTOR = "ledger"
"""The reserved actor of events the ledger signs itself, with its log key."""


class DeterminationRecorded(EventBase, tag="determination"):
    batch: Id
    requested_by: Id
    determination: dict[str, Any]
    """The engine's full determination document (profile id and content hash, verdict, share, reasons...)."""


Event = (
    ParticipantAdmitted
    | FacilityRegistered
    | KeyAdded
    | KeyRevoked
    | OwnershipChanged
    | Extract
    | Transfer
    | Receive
    | Transform
    | Split
    | Merge
    | Attest
    | RevokeAttestation
    | SuspendAttestation
    | DeterminationRecorded
    | Reaffirm
    | Recycle
    | Claim
    | OwnerRegistered
    | StakeRecorded
    | ExchangeRatesPublished
    | ProfilePublished
    | CustodyModelDeclared
    | AgreementPublished
    | CertificateIssued
)
REGISTRY_KINDS = frozenset(
    {
        "participant_admitted",
        "facility_registered",
        "key_added",
        "key_revoked",
        "ownership_changed",
        "owner_registered",
        "stake_recorded",
        "exchange_rates",
        "profile_published",
        "agreement_published",
    }
)
"""Registry events: signed by the registrar only."""
FACT_KINDS = REGISTRY_KINDS | {"custody_model"}
"""Events that are facts the eligibility engine reads whatever the batch (registry data and declarations)."""
CUSTODY_KINDS = frozenset(
    {"extract", "transfer", "receive", "transform", "split", "merge", "recycle", "claim"}
)
ATTESTATION_KINDS = frozenset({"attest", "revoke_attestation", "suspend_attestation"})

_ISO_Z = re.compile(r"Z$")

MIN_YEAR = 1970
MAX_YEAR = 9998
"""Timestamps (in UTC) and dates lie in these years: nothing the ledger records is older than 1970, and a year
of headroom below 9999 keeps date arithmetic (the day after, the end of a period) from overflowing."""


def parse_timestamp(text: str, field: str = "timestamp") -> datetime:
    """Parse an RFC 3339 timestamp that names its UTC offset; the offset is kept in the result.

    In UTC it must fall in the years MIN_YEAR..MAX_YEAR (``9999-12-31T23:59:59-23:59`` is in year 10000).
    Valid timestamps are remembered (acceptance parses an event's own time and its parents' again)."""
    parsed = _parsed_timestamps.get(text)
    if parsed is not None:
        return parsed
    parsed = _parse_timestamp(text, field)
    if len(_parsed_timestamps) >= _PARSED_TIMESTAMPS_KEPT:
        _parsed_timestamps.clear()
    _parsed_timestamps[text] = parsed
    return parsed


_parsed_timestamps: dict[str, datetime] = {}
_PARSED_TIMESTAMPS_KEPT = 65_536


def _parse_timestamp(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(_ISO_Z.sub("+00:00", text))
    except ValueError:
        raise InvalidInput(f"{field} {text!r} is not a valid RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise InvalidInput(f"{field} {text!r} has no UTC offset; write e.g. 2026-03-01T09:30:00-05:00")
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = None
    if year is None or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(
            f"{field} {text!r} is out of range: a timestamp must fall in the years {MIN_YEAR} to {MAX_YEAR} "
            "once converted to UTC"
        )
    return value


def parse_date(text: str, field: str) -> date:
    """Parse a ``YYYY-MM-DD`` calendar date in the years MIN_YEAR..MAX_YEAR."""
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field} {text!r} is not a valid calendar date (YYYY-MM-DD)") from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise InvalidInput(
            f"{field} {text!r} is out of range: a date must fall in the years {MIN_YEAR} to {MAX_YEAR}"
        )
    return value


def kind_of(event: Event) -> str:
    """The ``kind`` tag of an event."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_typed_decoder = msgspec.json.Decoder(Event, strict=True)
_sorted_encoder = msgspec.json.Encoder(order="sorted")
_NEEDS_GENERAL_PATH = re.compile(rb"[\xf0-\xf4]|\\u[dD][89a-fA-F]")
"""Characters outside the BMP (UTF-16 key order differs from code-point order) or escaped surrogates."""


def _needs_general_path(payload: bytes) -> bool:
    # ASCII text without a \u escape holds neither (both tests run in C, much faster than the regular expression)
    return (
        not (payload.isascii() and b"\\u" not in payload) and _NEEDS_GENERAL_PATH.search(payload) is not None
    )


_CONTROL_ESCAPE = re.compile(rb"\\(?:[bf]|u00[01])")
"""How canonical JSON writes a control character other than tab, line feed and carriage return (``\\b``, ``\\f``,
``\\u00xx``); it also matches an escaped backslash before such text, which :func:`check_strings` then clears."""


def decode_payload(payload: bytes) -> Event:
    """Decode an event payload, insisting that it is RFC 8785 canonical and valid for its kind.

    First, without recursion, the bytes must be UTF-8 and nested at most ``canonical.MAX_DEPTH`` levels, so that
    no decoder recurses on a hostile document. Fast path: decode straight into the typed event and re-encode it
    with sorted keys; equal bytes prove the payload canonical (msgspec escapes strings as RFC 8785 does, and
    without characters outside the BMP its key order is RFC 8785's), and hence free of duplicate keys. Anything
    else (an error to explain, an explicit default value, an astral character) takes the general path, which
    names what is wrong. No string anywhere in the event may hold a control character other than tab, line feed
    and carriage return (:func:`check_strings`).
    """
    check_structure(payload, "payload")
    event: Event | None
    try:
        event = _typed_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        event = None
    if event is not None and _sorted_encoder.encode(event) == payload and not _needs_general_path(payload):
        if b"\\" in payload and _CONTROL_ESCAPE.search(payload):
            check_strings(encode_event(event))
        check_vocabulary(event)
        return event
    return decode_event(parse_canonical(payload))


def decode_event(document: Any) -> Event:
    """Turn a decoded canonical JSON document into a typed event, naming the first field that is wrong."""
    try:
        event: Event = msgspec.convert(document, type=Event, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"event payload is invalid: {exc}") from None
    check_strings(document)
    check_vocabulary(event)
    return event


def check_strings(document: Any) -> None:
    """Refuse an event document with a string (a name, a reason, a level, a profile's text, a key...) that holds
    a NUL or another control character but tab, line feed and carriage return, naming the field: no text needs
    one, and PostgreSQL cannot store a NUL, so both databases must refuse it alike, before storage."""
    _check_all_strings(document, "payload")


def _country(value: str, field: str) -> None:
    if value not in vocab.COUNTRIES:
        raise InvalidInput(f"{field} {value!r} is not an ISO 3166-1 alpha-2 country code")


def parse_share(value: str) -> Fraction:
    """An exact share from a decimal (``"0.25"``) or a fraction (``"1/3"``) string."""
    if "/" in value:
        numerator, denominator = value.split("/")
        return Fraction(int(numerator), int(denominator))
    return Fraction(Decimal(value))


def _share(value: str, field: str) -> None:
    if parse_share(value) > 1:
        raise InvalidInput(f"{field} is {value}, but a share is a fraction between 0 and 1")


def _one_of(value: str, allowed: frozenset[str], field: str) -> None:
    if value not in allowed:
        raise InvalidInput(f"{field} {value!r} is not one of {', '.join(sorted(allowed))}")


def _money(value: Money | None, field: str) -> None:
    if value is not None and value.currency not in vocab.CURRENCIES:
        raise InvalidInput(f"{field}.currency {value.currency!r} is not an ISO 4217 currency code")


def _material(mineral: str, form: str, field: str, *, mixed: bool = False) -> None:
    if mixed and mineral == vocab.MIXED:
        pass
    elif mineral not in vocab.MINERALS:
        raise InvalidInput(f"{field}.mineral {mineral!r} is not one of {', '.join(sorted(vocab.MINERALS))}")
    if form not in vocab.FORMS:
        raise InvalidInput(f"{field}.form {form!r} is not one of {', '.join(sorted(vocab.FORMS))}")


def _ownership(value: Ownership, field: str) -> None:
    _country(value.incorporated_in, f"{field}.incorporated_in")
    _country(value.headquartered_in, f"{field}.headquartered_in")
    seen: set[str] = set()
    for index, stake in enumerate(value.government_stakes):
        where = f"{field}.government_stakes[{index}]"
        _country(stake.country, f"{where}.country")
        if stake.country in seen:
            raise InvalidInput(f"{where} repeats country {stake.country}; give one stake per government")
        seen.add(stake.country)
        _share(stake.equity, f"{where}.equity")
        _share(stake.votes, f"{where}.votes")
        _share(stake.board_seats, f"{where}.board_seats")


def check_vocabulary(event: Event) -> None:
    """Checks that need no ledger state: vocabularies, country and currency codes, dates, shares."""
    parse_timestamp(event.timestamp)
    match event:
        case ParticipantAdmitted(participant=p):
            _country(p.country, "participant.country")
            for role in p.roles:
                if role not in vocab.ROLES:
                    raise InvalidInput(
                        f"participant.roles contains {role!r}; roles are {', '.join(sorted(vocab.ROLES))}"
                    )
            if len(set(p.roles)) != len(p.roles):
                raise InvalidInput("participant.roles lists a role twice")
            _ownership(p.ownership, "participant.ownership")
        case FacilityRegistered(facility=f):
            _country(f.country, "facility.country")
            if f.kind not in vocab.FACILITY_KINDS:
                raise InvalidInput(
                    f"facility.kind {f.kind!r} is not one of {', '.join(sorted(vocab.FACILITY_KINDS))}"
                )
            _share(f.loss_tolerance, "facility.loss_tolerance")
        case KeyRevoked(effective_at=effective_at) if effective_at is not None:
            parse_timestamp(effective_at, "effective_at")
        case OwnershipChanged(effective_date=effective_date, ownership=ownership):
            parse_date(effective_date, "effective_date")
            _ownership(ownership, "ownership")
        case Extract(batch=batch):
            _material(batch.mineral, batch.form, "batch")
            _money(batch.value, "batch.value")
            _hs6(batch.hs6, "batch.hs6")
        case Transfer(route=route):
            for index, leg in enumerate(route):
                _country(leg.country, f"route[{index}].country")
                for operation in leg.operations:
                    _one_of(operation, vocab.TRANSIT_OPERATIONS, f"route[{index}].operations entry")
                if len(set(leg.operations)) != len(leg.operations):
                    raise InvalidInput(f"route[{index}].operations lists an operation twice")
        case Transform(process=process, outputs=outputs, value_added=value_added):
            _one_of(process, vocab.PROCESS_TYPES, "process")
            for index, output in enumerate(outputs):
                _material(output.mineral, output.form, f"outputs[{index}]", mixed=True)
                _money(output.value, f"outputs[{index}].value")
            _money(value_added, "value_added")
            _origin_values(event.inputs, outputs)
        case Recycle(feedstock=feedstock, outputs=outputs):
            for index, item in enumerate(feedstock):
                _one_of(item.category, vocab.FEEDSTOCK_CATEGORIES, f"feedstock[{index}].category")
                if item.origin_country is not None:
                    _country(item.origin_country, f"feedstock[{index}].origin_country")
            for index, output in enumerate(outputs):
                _material(output.mineral, output.form, f"outputs[{index}]")
                _money(output.value, f"outputs[{index}].value")
            _origin_values(event.inputs, outputs)
        case CertificateIssued(certificate=certificate):
            check_certificate(certificate, parse_timestamp(event.timestamp).date())
        case OwnerRegistered(owner=owner):
            _one_of(owner.kind, vocab.OWNER_KINDS, "owner.kind")
            _country(owner.country, "owner.country")
        case StakeRecorded(holder=holder, subject=subject, effective_date=day):
            parse_date(day, "effective_date")
            if holder == subject:
                raise InvalidInput(f"holder and subject are both {holder!r}; nobody holds a stake in itself")
            for name in ("equity", "votes", "board_seats"):
                _share(getattr(event, name), name)
        case ExchangeRatesPublished(date=day, rates=rates):
            parse_date(day, "date")
            pairs: set[tuple[str, str]] = set()
            for index, rate in enumerate(rates):
                for side, code in (("from", rate.from_), ("to", rate.to)):
                    if code not in vocab.CURRENCIES:
                        raise InvalidInput(f"rates[{index}].{side} {code!r} is not an ISO 4217 currency code")
                if rate.from_ == rate.to:
                    raise InvalidInput(f"rates[{index}] converts {rate.from_} into itself")
                if Decimal(rate.rate) == 0:
                    raise InvalidInput(f"rates[{index}].rate is 0; a rate is positive")
                pair = (rate.from_, rate.to)
                if pair in pairs or pair[::-1] in pairs:
                    raise InvalidInput(f"rates[{index}] gives {rate.from_}/{rate.to} a second time for {day}")
                pairs.add(pair)
        case CustodyModelDeclared(model=model, period=period, conversion_factors=factors, effective_date=day):
            _one_of(model, vocab.CUSTODY_MODELS, "model")
            _one_of(period, vocab.MASS_BALANCE_PERIODS, "period")
            parse_date(day, "effective_date")
            for process, factor in factors.items():
                _one_of(process, vocab.PROCESS_TYPES, "conversion_factors key")
                if Decimal(factor) == 0 or Decimal(factor) > 1:
                    raise InvalidInput(
                        f"conversion_factors[{process!r}] is {factor}; a conversion factor lies in (0, 1]"
                    )
        case Attest(attestation=a):
            subjects = [s for s in (a.subject.facility, a.subject.participant) if s is not None]
            if len(subjects) != 1:
                raise InvalidInput("attestation.subject names exactly one of facility or participant")
            levels = vocab.STANDARD_LEVELS.get(a.standard)
            if levels is not None and a.level not in levels:
                raise InvalidInput(
                    f"attestation.level {a.level!r} is not a {a.standard} level; use one of {', '.join(levels)}"
                )
            start = parse_date(a.valid_from, "attestation.valid_from")
            end = parse_date(a.valid_to, "attestation.valid_to")
            if end < start:
                raise InvalidInput(
                    f"attestation.valid_to {a.valid_to} is before valid_from {a.valid_from}; both dates are inclusive"
                )
            for mineral in a.minerals:
                if mineral not in vocab.MINERALS:
                    raise InvalidInput(
                        f"attestation.minerals contains {mineral!r}, not one of {', '.join(sorted(vocab.MINERALS))}"
                    )
            for activity in a.activities:
                if activity not in vocab.ACTIVITIES:
                    raise InvalidInput(
                        f"attestation.activities contains {activity!r}, not one of {', '.join(sorted(vocab.ACTIVITIES))}"
                    )
        case RevokeAttestation(effective_date=day) | SuspendAttestation(effective_date=day):
            parse_date(day, "effective_date")
        case _:
            pass


def _hs6(value: str | None, field: str) -> None:
    """A 6-digit HS subheading in a chapter the Harmonized System has (01 to 97; chapter 77 is reserved)."""
    if value is None:
        return
    chapter = int(value[:2])
    if not 1 <= chapter <= 97 or chapter == 77:
        raise InvalidInput(
            f"{field} {value!r} is not an HS subheading: its chapter {value[:2]} does not exist (chapters are 01 to "
            "97, 77 reserved)"
        )


def _origin_values(inputs: list[Input], outputs: list[Output]) -> None:
    """Materials' values and a good's transaction value, net cost and total cost are compared with one another
    (regional value content, de minimis): within one production they are declared in one currency, the
    producer's own accounts, so that no exchange rate enters the ratio."""
    declared: list[tuple[str, Money]] = []
    for index, output in enumerate(outputs):
        _hs6(output.hs6, f"outputs[{index}].hs6")
        for name in ("transaction_value", "net_cost", "total_cost"):
            money = getattr(output, name)
            if money is not None:
                _money(money, f"outputs[{index}].{name}")
                declared.append((f"outputs[{index}].{name}", money))
    for index, item in enumerate(inputs):
        if item.value is not None:
            _money(item.value, f"inputs[{index}].value")
            declared.append((f"inputs[{index}].value", item.value))
    if declared:
        first_field, first = declared[0]
        for field, money in declared[1:]:
            if money.currency != first.currency:
                raise InvalidInput(
                    f"{field} is in {money.currency} but {first_field} is in {first.currency}; declare the values "
                    "of one production (materials, transaction value, net cost, total cost) in one currency"
                )


CERTIFIER_ROLES = ("importer", "exporter", "producer")
"""Annex 5-A element 1: who may complete a certification of origin (USMCA Art. 5.2.1)."""
ORIGIN_CRITERIA = ("A", "B", "C", "D")
"""Annex 5-A element 7: the origin criteria of USMCA Art. 4.2 (a) to (d)."""
PRODUCER_PHRASES = ("Various", "Available upon request by the importing authorities")
"""Annex 5-A element 4: what a certifier may state instead of naming the producer."""
CERTIFICATION_STATEMENT = "I certify that the goods described in this document qualify as originating"
"""Annex 5-A element 9: the statement must begin with these words (and say the information is true and
accurate)."""
BLANKET_MONTHS = 12
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{4,29}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
ELEMENT_NAMES = {
    1: "certifier",
    2: "certifier",
    3: "exporter",
    4: "producer",
    5: "importer",
    6: "description of the good",
    7: "origin criterion",
    8: "blanket period",
    9: "authorized signature and date",
}


def _element(number: int, message: str) -> InvalidCertificate:
    return InvalidCertificate(
        f"certificate element {number} ({ELEMENT_NAMES[number]}): {message}", element=number
    )


def _text(number: int, value: str | None, what: str, limit: int = 500) -> None:
    if value is None or not value.strip():
        raise _element(number, f"{what} is missing")
    if len(value) > limit:
        raise _element(number, f"{what} is longer than {limit} characters")


def _contact(number: int, contact: CertificateContact | None, who: str, *, title: bool = False) -> None:
    """Name, address, telephone number and email address (and the certifier's title), each present and well formed."""
    if contact is None:
        raise _element(
            number, f"the {who} is missing; give name, address, telephone number and email address"
        )
    _text(number, contact.name, f"the {who}'s name")
    if title:
        _text(number, contact.title, f"the {who}'s title")
    elif contact.title is not None:
        raise _element(number, f"a title is asked only of the certifier, not of the {who}")
    _text(number, contact.address, f"the {who}'s address")
    _text(number, contact.phone, f"the {who}'s telephone number", 30)
    if not _PHONE.match(contact.phone or ""):
        raise _element(
            number,
            f"the {who}'s telephone number {contact.phone!r} is not a telephone number (e.g. +1 555 0100)",
        )
    _text(number, contact.email, f"the {who}'s email address", 254)
    if not _EMAIL.match(contact.email or ""):
        raise _element(number, f"the {who}'s email address {contact.email!r} is not an email address")


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (the last day of the month when it has fewer days)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


def _certificate_date(number: int, text: str | None, what: str) -> date:
    if text is None:
        raise _element(number, f"{what} is missing")
    try:
        return parse_date(text, what)
    except InvalidInput:
        raise _element(number, f"{what} {text!r} is not a calendar date (YYYY-MM-DD)") from None


def check_certificate(certificate: CertificateInfo, signed_on: date) -> None:
    """The nine minimum data elements of a certification of origin (USMCA Annex 5-A), each present and well
    formed; the error names the element. ``signed_on`` is the local date of the event's timestamp."""
    role = certificate.certifier_role
    if role is None:
        raise _element(1, f"the certifier's role is missing; state one of {', '.join(CERTIFIER_ROLES)}")
    if role not in CERTIFIER_ROLES:
        raise _element(1, f"the certifier's role {role!r} is not one of {', '.join(CERTIFIER_ROLES)}")
    _contact(2, certificate.certifier, "certifier", title=True)
    if certificate.exporter is not None:
        _contact(3, certificate.exporter, "exporter")
    elif role == "importer":
        raise _element(
            3,
            "the exporter is missing; an importer that certifies must name the exporter (only a producer that "
            "does not know the exporter may leave it out)",
        )
    producer = certificate.producer
    if isinstance(producer, str):
        if producer not in PRODUCER_PHRASES:
            raise _element(
                4,
                f"{producer!r} is neither a producer's details nor one of the statements "
                + " or ".join(repr(p) for p in PRODUCER_PHRASES),
            )
    elif producer is not None:
        _contact(4, producer, "producer")
    elif role != "producer":
        raise _element(
            4,
            "the producer is missing; name the producer, or state 'Various' (several producers) or "
            "'Available upon request by the importing authorities'",
        )
    if certificate.importer is not None:
        _contact(5, certificate.importer, "importer")
    if not certificate.goods:
        raise _element(6, "no good is described; list each good with its description and HS subheading")
    batches: set[str] = set()
    for index, good in enumerate(certificate.goods):
        which = f"goods[{index}]"
        if good.batch is None or not re.match(ID_PATTERN, good.batch):
            raise _element(6, f"{which}.batch {good.batch!r} is not a batch id")
        if good.batch in batches:
            raise _element(6, f"{which} lists batch {good.batch!r} a second time")
        batches.add(good.batch)
        _text(6, good.description, f"{which}.description")
        if good.hs6 is None or not re.match(HS6_PATTERN, good.hs6):
            raise _element(6, f"{which}.hs6 {good.hs6!r} is not a 6-digit HS subheading")
        try:
            _hs6(good.hs6, f"{which}.hs6")
        except InvalidInput as exc:
            raise _element(6, exc.detail) from None
        if good.origin_criterion not in ORIGIN_CRITERIA:
            raise _element(
                7,
                f"{which}.origin_criterion {good.origin_criterion!r} is not one of {', '.join(ORIGIN_CRITERIA)}",
            )
        if good.determination is None or not re.match(EVENT_ID_PATTERN, good.determination):
            raise _element(
                7,
                f"{which}.determination {good.determination!r} is not the event id of a recorded origin "
                "determination; record one (POST /v1/batches/{id}/origin/determinations) and name it",
            )
    if certificate.blanket_period is not None:
        period = certificate.blanket_period
        start = _certificate_date(8, period.from_, "blanket_period.from")
        end = _certificate_date(8, period.to, "blanket_period.to")
        if end < start:
            raise _element(8, f"blanket_period.to {period.to} is before blanket_period.from {period.from_}")
        limit = add_months(start, BLANKET_MONTHS)
        if end >= limit:
            raise _element(
                8,
                f"the blanket period {period.from_} to {period.to} is longer than {BLANKET_MONTHS} months; it may "
                f"end on {(limit - timedelta(days=1)).isoformat()} at the latest",
            )
    signature = certificate.signature
    if signature is None:
        raise _element(9, "the signature, its date and the certification statement are missing")
    signed = _certificate_date(9, signature.date, "signature.date")
    if signed > signed_on:
        raise _element(
            9, f"signature.date {signature.date} is after the event's own date {signed_on.isoformat()}"
        )
    _text(9, signature.statement, "signature.statement", 2000)
    statement = " ".join((signature.statement or "").split()).lower()
    if not statement.startswith(CERTIFICATION_STATEMENT.lower()) or "true and accurate" not in statement:
        raise _element(
            9,
            f"signature.statement must begin {CERTIFICATION_STATEMENT!r} and state that the information is true "
            "and accurate",
        )


def encode_event(event: Event) -> dict[str, Any]:
    """The JSON document of an event (builtins only), ready for canonical encoding."""
    document: dict[str, Any] = msgspec.to_builtins(event)
    return document
