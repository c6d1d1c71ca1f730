"""Determinations in words, for people: the verdict first, naming the reason that decided it (a foreign entity of
concern, a failed ESG gate, a share below the threshold), then the share against the threshold. Used by the demo
and by ``ledger eligibility``."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.rules.engine import Reason, Verdict

PRECEDENCE = (
    "foreign-entity-of-concern",
    "suspect-event",
    "attestation-missing",
    "share-below-threshold",
)
"""Failing reasons named first when several fail: one that fails a batch outright before one about the share."""


def deciding_reason(verdict: Verdict, reasons: Sequence[Reason]) -> Reason | None:
    """The reason a person should read first: for a batch that is not eligible, the failing reason that decided
    (a foreign entity of concern before anything about the share); otherwise the threshold comparison."""
    failing = [r for r in reasons if r.outcome == "fail"]
    if verdict.verdict == "not_eligible" and failing:
        for code in PRECEDENCE:
            for reason in failing:
                if reason.code == code:
                    return reason
        return failing[0]
    for reason in reasons:
        if reason.code in ("share-meets-threshold", "no-threshold-in-force", "no-critical-mineral"):
            return reason
    return None


def headline(verdict: Verdict, reasons: Sequence[Reason]) -> str:
    """One line: ``not eligible under ptz-2026 v1: foreign entity of concern: participant ...``."""
    profile = verdict.profile
    under = (
        f"under {profile.get('id')} v{profile.get('version')}"
        if profile.get("version")
        else f"under {profile.get('id')}"
    )
    words = verdict.verdict.replace("_", " ")
    reason = deciding_reason(verdict, reasons)
    if reason is None:
        return f"{words} {under}"
    return f"{words} {under}: {reason.code.replace('-', ' ')}: {reason.message}"


def share_line(verdict: Verdict) -> str:
    """The share against the threshold, and whether it decided."""
    basis = "traced value" if verdict.share_basis == "value" else "traced mass"
    text = f"qualifying share of {basis}: {verdict.qualifying_share_percent} %"
    if verdict.threshold is not None:
        text += f" (required {verdict.threshold.share}, in force from {verdict.threshold.in_force_from})"
    if verdict.foreign_entity_of_concern:
        text += "; not what decided: a foreign entity of concern fails the batch whatever its share"
    return text
