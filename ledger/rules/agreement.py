"""Trade-agreement origin profiles: versioned, signed data that says when a *good* originates under an agreement.

An agreement profile (the built-in ones live under ``ledger/rules/agreements/``; ``usmca`` first) lists the
parties, the product-specific rules of origin by HS code (the tariff change each requires, at the chapter,
heading or subheading level, and/or a minimum regional value content by method), the de minimis share, the
regional value content of origin criterion D, and the transit rule. It is published in the log as an
``agreement_published`` registry event, validated like a file by :func:`parse_agreement`, and named by its
content hash (SHA-256 of its RFC 8785 canonical JSON) in every origin determination, as rule profiles are.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ledger.domain import vocab
from ledger.domain.canonical import canonical_bytes
from ledger.domain.events import DATE_PATTERN, FRACTION_PATTERN, parse_share
from ledger.errors import LedgerError, NotFound

AGREEMENT_DIR = Path(__file__).resolve().parent / "agreements"
DEFAULT_AGREEMENT = "usmca"

Share = Annotated[str, msgspec.Meta(pattern=FRACTION_PATTERN)]
DateText = Annotated[str, msgspec.Meta(pattern=DATE_PATTERN)]
AgreementId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
HsPrefix = Annotated[str, msgspec.Meta(pattern=r"^([0-9]{2}|[0-9]{4}|[0-9]{6})$")]
Level = Literal["chapter", "heading", "subheading"]
Method = Literal["transaction_value", "net_cost"]

LEVEL_DIGITS: dict[str, int] = {"chapter": 2, "heading": 4, "subheading": 6}
"""How many leading digits of the HS code name each level: chapter 85, heading 85.07, subheading 8507.60."""


class AgreementError(LedgerError):
    """An agreement profile is malformed."""

    status = 422
    code = "bad-agreement"
    title = "Malformed agreement profile"


class _Base(msgspec.Struct, forbid_unknown_fields=True, dict=True, omit_defaults=True):
    pass


class RegionalValueContent(_Base):
    """Minimum regional value content by method (USMCA Art. 4.5); a method left out is not allowed by the rule
    (a rule with ``net_cost`` only requires the net-cost method)."""

    transaction_value: Share | None = None
    net_cost: Share | None = None

    def minimum(self, method: Method) -> Fraction | None:
        text = self.transaction_value if method == "transaction_value" else self.net_cost
        return None if text is None else parse_share(text)


class Alternative(_Base):
    """One way to meet a product-specific rule: a tariff change at ``shift`` level for every non-originating
    material (except from the HS codes in ``except_from``), and/or a minimum regional value content."""

    shift: Level | None = None
    except_from: list[HsPrefix] = []
    """Non-originating materials classified under these chapters, headings or subheadings never satisfy the
    change, even where they differ at the level asked ("from any other heading, except from heading 85.07")."""
    rvc: RegionalValueContent | None = None


class ProductRule(_Base):
    """The product-specific rule of origin (USMCA Annex 4-B) for the goods classified under ``hs``."""

    hs: HsPrefix
    """Chapter (2 digits), heading (4) or subheading (6); a good takes the most specific rule that matches."""
    description: str
    alternatives: Annotated[list[Alternative], msgspec.Meta(min_length=1)]
    """Any one of them suffices ("A change to ...; or no change required, provided there is an RVC ...")."""
    de_minimis_basis: Literal["transaction_value", "total_cost"] | None = None
    """What de minimis is measured against for these goods, where the rule says (default: the agreement's)."""


class DeMinimis(_Base):
    """USMCA Art. 4.12: a good whose non-originating materials that do not undergo the required tariff change
    are worth at most ``share`` of its transaction value (or total cost) still originates; their value still
    counts in the value of non-originating materials."""

    share: Share
    basis: Literal["transaction_value", "total_cost"] = "transaction_value"


class TransitRule(_Base):
    """USMCA Art. 4.18: an originating good keeps its status through a non-party only under customs control and
    with only these operations there."""

    requires_customs_control: bool = True
    allowed_operations: list[str] = []


class Agreement(_Base):
    id: AgreementId
    name: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    description: str
    parties: Annotated[list[str], msgspec.Meta(min_length=1)]
    in_force_from: DateText
    """Goods whose determining event has an earlier local date cannot originate under the agreement."""
    de_minimis: DeMinimis
    criterion_d: RegionalValueContent
    """USMCA Art. 4.2(d): the RVC a good needs when a non-originating material cannot shift because it is
    classified in the same subheading as the good."""
    transit: TransitRule
    rules: Annotated[list[ProductRule], msgspec.Meta(min_length=1)]
    accumulation: bool = True
    """USMCA Art. 4.11: a material originating in any party counts as originating in the others."""
    references: list[str] = []

    @cached_property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_bytes(self.document())).hexdigest()

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = msgspec.to_builtins(self)
        return document

    def reference(self) -> dict[str, Any]:
        """How an origin determination names the agreement profile it used."""
        return {"id": self.id, "name": self.name, "version": self.version, "content_hash": self.content_hash}

    @cached_property
    def party_set(self) -> frozenset[str]:
        return frozenset(self.parties)

    @cached_property
    def de_minimis_share(self) -> Fraction:
        return parse_share(self.de_minimis.share)

    def rule_for(self, hs6: str) -> ProductRule | None:
        """The most specific product rule whose HS prefix the good's subheading starts with."""
        for digits in (6, 4, 2):
            found = self._rules_by_prefix.get(hs6[:digits])
            if found is not None:
                return found
        return None

    @cached_property
    def _rules_by_prefix(self) -> dict[str, ProductRule]:
        return {rule.hs: rule for rule in self.rules}


def _check(agreement: Agreement, where: str) -> None:
    def bad(field: str, message: str) -> AgreementError:
        return AgreementError(f"agreement profile {where}: field `{field}` {message}")

    for country in agreement.parties:
        if country not in vocab.COUNTRIES:
            raise bad("parties", f"lists {country!r}, which is not an ISO 3166-1 alpha-2 code")
    if len(set(agreement.parties)) != len(agreement.parties):
        raise bad("parties", "lists a country twice")
    try:
        date.fromisoformat(agreement.in_force_from)
    except ValueError:
        raise bad("in_force_from", f"is {agreement.in_force_from!r}, not a calendar date") from None
    for operation in agreement.transit.allowed_operations:
        if operation not in vocab.TRANSIT_OPERATIONS:
            raise bad(
                "transit.allowed_operations",
                f"lists {operation!r}; allowed: {', '.join(sorted(vocab.TRANSIT_OPERATIONS))}",
            )
    shares = [("de_minimis.share", agreement.de_minimis.share)]
    if agreement.criterion_d.transaction_value is None and agreement.criterion_d.net_cost is None:
        raise bad("criterion_d", "names no method; give transaction_value and/or net_cost")
    shares += [
        (f"criterion_d.{m}", v)
        for m, v in (
            ("transaction_value", agreement.criterion_d.transaction_value),
            ("net_cost", agreement.criterion_d.net_cost),
        )
        if v is not None
    ]
    seen: set[str] = set()
    for i, rule in enumerate(agreement.rules):
        if rule.hs in seen:
            raise bad(
                f"rules[{i}].hs", f"repeats {rule.hs}; give one rule per chapter, heading or subheading"
            )
        seen.add(rule.hs)
        for j, alternative in enumerate(rule.alternatives):
            where_alt = f"rules[{i}].alternatives[{j}]"
            if alternative.shift is None and alternative.rvc is None:
                raise bad(where_alt, "requires nothing; give a tariff `shift` and/or an `rvc`")
            if alternative.except_from and alternative.shift is None:
                raise bad(f"{where_alt}.except_from", "is meaningful only with a `shift`")
            rvc = alternative.rvc
            if rvc is not None:
                if rvc.transaction_value is None and rvc.net_cost is None:
                    raise bad(f"{where_alt}.rvc", "names no method; give transaction_value and/or net_cost")
                shares += [
                    (f"{where_alt}.rvc.{m}", v)
                    for m, v in (("transaction_value", rvc.transaction_value), ("net_cost", rvc.net_cost))
                    if v is not None
                ]
    for field, value in shares:
        if parse_share(value) > 1:
            raise bad(field, f"is {value}; a share lies between 0 and 1")


def parse_agreement(document: Any, where: str) -> Agreement:
    """Validate an agreement profile document (decoded TOML or JSON), naming ``where`` and the field."""
    if not isinstance(document, dict):
        raise AgreementError(f"agreement profile {where} is not a JSON object")
    try:
        agreement = msgspec.convert(document, type=Agreement, strict=True)
    except msgspec.ValidationError as exc:
        raise AgreementError(f"agreement profile {where}: {exc}") from None
    _check(agreement, where)
    return agreement


def load_agreement(path: Path) -> Agreement:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AgreementError(f"agreement profile {path.name} is not valid TOML: {exc}") from None
    return parse_agreement(raw, path.name)


def agreement_from_document(document: Any, where: str = "from the bundle") -> Agreement:
    """An agreement profile carried as JSON (a bundle, an ``agreement_published`` event)."""
    name = document.get("id", "?") if isinstance(document, dict) else "?"
    return parse_agreement(document, f"{name} ({where})")


class Agreements:
    """The built-in agreement profiles and the versions published in the log."""

    def __init__(self, directory: Path = AGREEMENT_DIR) -> None:
        self.builtin: dict[str, Agreement] = {}
        for path in sorted(directory.glob("*.toml")):
            agreement = load_agreement(path)
            if f"{agreement.id}.toml" != path.name:
                raise AgreementError(
                    f"agreement profile {path.name}: field `id` is {agreement.id!r} but the file must be named "
                    "after it"
                )
            self.builtin[agreement.id] = agreement
        self.versions: dict[str, dict[int, Agreement]] = {}

    def add(self, agreement: Agreement) -> None:
        self.versions.setdefault(agreement.id, {})[agreement.version] = agreement

    @property
    def by_id(self) -> dict[str, Agreement]:
        current = dict(self.builtin)
        for agreement_id, versions in self.versions.items():
            current[agreement_id] = versions[max(versions)]
        return current

    def get(self, agreement_id: str | None, version: int | None = None) -> Agreement:
        wanted = agreement_id or DEFAULT_AGREEMENT
        if version is not None:
            found = self.versions.get(wanted, {}).get(version)
            builtin = self.builtin.get(wanted)
            if found is None and builtin is not None and builtin.version == version:
                return builtin
            if found is None:
                raise NotFound(f"agreement profile {wanted!r} has no version {version}")
            return found
        current = self.by_id.get(wanted)
        if current is None:
            raise NotFound(
                f"there is no agreement profile {wanted!r}; agreements are {', '.join(sorted(self.by_id)) or 'none'}"
            )
        return current


__all__ = [
    "Agreement",
    "AgreementError",
    "Agreements",
    "Alternative",
    "ProductRule",
    "RegionalValueContent",
    "agreement_from_document",
    "load_agreement",
    "parse_agreement",
]
