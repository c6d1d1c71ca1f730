"""One tree of domain errors, mapped to HTTP once, at the edge (``api.errors``).

Every error carries a sentence a person can act on (``detail``), a stable machine-readable ``code``,
and optional structured ``extra`` members that end up in the RFC 9457 problem document.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """Base of every error the core raises on purpose."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "ledger-error"
    title: ClassVar[str] = "Request rejected"
    retry_after: int | None = None
    """Seconds after which the same request may succeed (sent as Retry-After)."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra


class InvalidInput(LedgerError):
    """The input is malformed or violates the schema."""

    status = 400
    code = "invalid-input"
    title = "Invalid input"


class NonCanonicalPayload(InvalidInput):
    """The payload bytes are not the RFC 8785 canonical form of their own content."""

    code = "non-canonical-payload"
    title = "Payload is not canonical JSON"


class InvalidEvent(LedgerError):
    """The event is well-formed but breaks a rule of the ledger (mass balance, custody, vocabulary...)."""

    status = 422
    code = "invalid-event"
    title = "Event rejected"


class MassImbalance(InvalidEvent):
    """Outputs would weigh more than inputs, or a batch would give more than it holds."""

    code = "mass-imbalance"
    title = "Mass does not balance"


class OwnershipCycle(InvalidEvent):
    """A stake would make an owner hold itself through a chain of holdings."""

    code = "ownership-cycle"
    title = "Ownership would form a cycle"


class BadSignature(LedgerError):
    """A DSSE signature does not verify against the key it names."""

    status = 422
    code = "bad-signature"
    title = "Signature does not verify"


class UnknownKey(LedgerError):
    """The envelope names a key id the registry does not know, or that is not the signer's."""

    status = 422
    code = "unknown-key"
    title = "Unknown signing key"


class RevokedKey(UnknownKey):
    """The key was revoked at the time the envelope was accepted."""

    code = "revoked-key"
    title = "Signing key revoked"


class Unauthenticated(LedgerError):
    """No usable credentials (missing, unknown, revoked or expired token)."""

    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(LedgerError):
    """Credentials are valid but do not allow this action."""

    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(LedgerError):
    """The resource does not exist (or the caller may not know that it does)."""

    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(LedgerError):
    """The request conflicts with the current state (an id that already exists...)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class InsufficientBalance(Conflict):
    """A mass-balance claim asks for more credits than the facility's period has left."""

    code = "insufficient-balance"
    title = "Not enough mass-balance credits"


class StaleParent(Conflict):
    """Compare-and-swap on a batch head failed: the named parent is no longer the head."""

    code = "stale-parent"
    title = "Parent is not the current head"


class NotYetIntegrated(Conflict):
    """The event is in the log (it has an index) but the Merkle tree does not cover it yet."""

    code = "not-yet-integrated"
    title = "Event not yet in the Merkle tree"
    retry_after = 1


class ProofUnavailable(InvalidInput):
    """A proof was asked for sizes the tree cannot answer (beyond its size, or first > second)."""

    code = "proof-unavailable"
    title = "Proof not available"


class LogRefusesToSign(LedgerError):
    """The log found a tree that does not extend the last checkpoint it signed, and signs nothing until an operator
    looks (see ledger/services/log_guard.py)."""

    status = 503
    code = "log-refuses-to-sign"
    title = "The log refuses to sign"


class NotMigrated(LedgerError):
    """The database schema is missing or older than this code."""

    status = 503
    code = "not-migrated"
    title = "Database not migrated"


class Overloaded(LedgerError):
    """The service sheds load; the client should retry after ``retry_after`` seconds."""

    status = 503
    code = "overloaded"
    title = "Service overloaded"

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class NotStored(Overloaded):
    """Part of a large submission could not be written (the database failed after earlier chunks were stored): the
    envelopes so marked are not in the log, and resubmitting them is safe (those already in the log come back as
    duplicates)."""

    code = "not-stored"
    title = "Not stored; resubmit"


class ReplicaBehind(Overloaded):
    """The read replica has not yet replayed the log entries a read asked for (``X-Min-Log-Size``)."""

    code = "replica-behind"
    title = "Read replica behind"


class StorageRefused(InvalidEvent):
    """The database refused to store an event that passed every check (a value it cannot hold, say)."""

    code = "storage-refused"


class Backdated(InvalidEvent):
    """An event dated before what the log allows: too long before its acceptance, before its signing key, or
    before the event it builds on."""

    code = "backdated"


class InvalidCertificate(InvalidInput):
    """A certification of origin lacks one of the minimum data elements (USMCA Annex 5-A), or one is malformed;
    ``element`` names it (1 to 9)."""

    status = 422
    code = "invalid-certificate"
    title = "Invalid certification of origin"
