"""``ledger verify``: offline checks of checkpoints and proofs (no database, no network)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import Progress, inline_or_file, log_key_option
from ledger.log.checkpoint import Checkpoint, CheckpointError
from ledger.log.cosignature import WitnessPolicy
from ledger.log.offline import VerificationError, open_signed_checkpoint, verify_consistency, verify_inclusion


def _fail(message: str) -> None:
    click.secho(f"FAILED: {message}", fg="red", err=True)
    sys.exit(1)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        _fail(f"cannot read the {what} {path}: {exc.strerror}")
        raise AssertionError from exc


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        document = json.loads(_read(path, what))
    except json.JSONDecodeError as exc:
        _fail(f"the {what} {path} is not JSON: {exc}")
        raise AssertionError from exc
    if not isinstance(document, dict):
        _fail(f"the {what} {path} is not a JSON object")
    return dict(document)


def _checkpoint(path: Path, key: str, policy: WitnessPolicy | None = None) -> Checkpoint:
    note = _read(path, "checkpoint")
    try:
        checkpoint = open_signed_checkpoint(note, inline_or_file(key))
    except VerificationError as exc:
        _fail(f"{path}: {exc}")
        raise AssertionError from exc
    if policy is not None:
        try:
            cosigned = policy.check(note)
        except CheckpointError as exc:
            _fail(f"{path}: {exc}")
            raise AssertionError from exc
        if cosigned:
            click.echo(
                f"cosigned by {', '.join(sorted(cosigned))} (quorum {policy.quorum} of {len(policy.witnesses)})"
            )
    return checkpoint


def _policy(witnesses: tuple[str, ...], quorum: int | None) -> WitnessPolicy:
    try:
        return WitnessPolicy.of([inline_or_file(w) for w in witnesses], quorum)
    except CheckpointError as exc:
        _fail(f"bad witness policy: {exc}")
        raise AssertionError from exc


def witness_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--witness`` (repeatable) and ``--quorum``: accept a checkpoint only when cosigned by enough known
    witnesses (C2SP tlog-cosignature)."""
    func = click.option(
        "--quorum",
        type=click.IntRange(min=1),
        default=None,
        help="how many of the --witness keys must have cosigned (default: all of them)",
    )(func)
    return click.option(
        "--witness",
        "witnesses",
        multiple=True,
        help="a witness's verifier key (name+id+base64, type 0x04) or a file holding it; repeatable",
    )(func)


@click.group()
def verify() -> None:
    """Verify checkpoints and proofs offline: exit 0 when valid, 1 with the reason otherwise."""


KEY_HELP = (
    "the log's verifier key (name+hash+base64, from `GET /v1/log/key` or var/log.vkey), or a file holding it"
)


@verify.command("checkpoint")
@click.argument("file", type=click.Path(path_type=Path))
@log_key_option(required=True, help=KEY_HELP)
@witness_options
def verify_checkpoint(file: Path, key: str, witnesses: tuple[str, ...], quorum: int | None) -> None:
    """Check a checkpoint's signature by the log key (and its cosignatures, with --witness)."""
    checkpoint = _checkpoint(file, key, _policy(witnesses, quorum))
    root = base64.b64encode(checkpoint.root_hash).decode()
    click.echo(f"OK: checkpoint of {checkpoint.origin}: tree size {checkpoint.size}, root {root}")


@verify.command("inclusion")
@click.option("--checkpoint", "checkpoint_file", required=True, type=click.Path(path_type=Path))
@log_key_option(required=True, help=KEY_HELP)
@click.option(
    "--proof",
    "proof_file",
    required=True,
    type=click.Path(path_type=Path),
    help="JSON from /v1/log/proofs/inclusion",
)
@click.option(
    "--envelope",
    "envelope_file",
    type=click.Path(path_type=Path),
    help="the event's DSSE envelope (optional)",
)
@witness_options
def verify_inclusion_command(
    checkpoint_file: Path,
    key: str,
    proof_file: Path,
    envelope_file: Path | None,
    witnesses: tuple[str, ...],
    quorum: int | None,
) -> None:
    """Check that an event is in the tree a signed checkpoint commits to."""
    checkpoint = _checkpoint(checkpoint_file, key, _policy(witnesses, quorum))
    proof = _json(proof_file, "proof")
    payload = None
    if envelope_file is not None:
        envelope = _json(envelope_file, "envelope")
        envelope = envelope.get("envelope", envelope)  # accept GET /v1/events/{id} output too
        try:
            payload = base64.b64decode(envelope["payload"], validate=True)
        except (KeyError, TypeError, ValueError):
            _fail(f"{envelope_file} has no valid base64 payload")
    try:
        verify_inclusion(checkpoint, proof, payload)
    except VerificationError as exc:
        _fail(str(exc))
    click.echo(f"OK: {proof['event_id']} is entry {proof['log_index']} of the log of size {checkpoint.size}")


@verify.command("consistency")
@click.option(
    "--old", "old_file", required=True, type=click.Path(path_type=Path), help="the earlier checkpoint"
)
@click.option(
    "--new", "new_file", required=True, type=click.Path(path_type=Path), help="the later checkpoint"
)
@log_key_option(required=True, help=KEY_HELP)
@click.option(
    "--proof",
    "proof_file",
    required=True,
    type=click.Path(path_type=Path),
    help="JSON from /v1/log/proofs/consistency",
)
@witness_options
def verify_consistency_command(
    old_file: Path, new_file: Path, key: str, proof_file: Path, witnesses: tuple[str, ...], quorum: int | None
) -> None:
    """Check that the newer checkpoint's tree extends the older one without rewriting it."""
    policy = _policy(witnesses, quorum)
    old, new = _checkpoint(old_file, key, policy), _checkpoint(new_file, key, policy)
    try:
        verify_consistency(old, new, _json(proof_file, "proof"))
    except VerificationError as exc:
        _fail(str(exc))
    click.echo(f"OK: the log of size {new.size} extends the log of size {old.size} without changing it")


def print_determination(determination: Any, echo: Any = click.echo) -> None:
    """A person's view of a determination: verdict, share against threshold, every reason, every source."""
    verdict = determination.verdict.replace("_", " ").upper()
    threshold = determination.threshold
    profile = determination.profile
    echo(
        f"{verdict}: batch {determination.batch} under {profile['id']} version {profile.get('version', '?')} "
        f"({profile['content_hash']})"
    )
    required = f" against {threshold.share} required from {threshold.in_force_from}" if threshold else ""
    echo(
        f"  qualifying share {determination.qualifying_share} ({determination.qualifying_share_percent} %) of "
        f"traced {determination.share_basis}: {determination.qualifying_total} of {determination.total} "
        f"{determination.unit}{required}"
    )
    if threshold is not None:
        echo(f"  threshold: {threshold.why}")
    for reason in determination.reasons:
        mark = {"pass": "+", "fail": "-", "info": "i"}[reason.outcome]
        echo(f"  [{mark}] {reason.code}: {reason.message}")
    for source in determination.sources:
        value = (
            f", traced value {source.traced_value} {source.currency}"
            if source.traced_value is not None
            else ""
        )
        echo(
            f"  source {source.batch} ({source.mineral}, {source.kind} at {source.facility}, {source.country}): "
            f"{source.traced_mass_g} g of the batch{value}, qualifying fraction {source.qualifying_fraction} "
            f"({source.rule})"
        )


@verify.command("bundle")
@click.argument("file", type=click.Path(path_type=Path))
@log_key_option(required=False, help=KEY_HELP + "; compared with the key pinned in the bundle")
@witness_options
def verify_bundle_command(
    file: Path, key: str | None, witnesses: tuple[str, ...], quorum: int | None
) -> None:
    """Re-check a proof bundle: signatures, inclusion proofs, checkpoint (and its cosignatures, with --witness),
    and the verdict, with no database."""
    policy = _policy(witnesses, quorum)
    from ledger.rules.bundle import BundleError, verify_bundle
    from ledger.rules.profiles import ProfileError, Profiles

    document = _json(file, "bundle")
    if document.get("format") in ORIGIN_FORMATS:
        _verify_origin_bundle(document, key, policy)
        return
    try:
        local = Profiles().by_id
    except ProfileError:
        local = None
    try:
        with Progress("verifying signatures", "events") as bar:
            result = verify_bundle(
                document,
                vkey=inline_or_file(key) if key else None,
                local_profiles=local,
                witnesses=policy,
                progress=bar.update,
            )
    except BundleError as exc:
        _fail(str(exc))
        return
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(
        f"OK: {result.entries} events, every signature and inclusion proof verified against checkpoint "
        f"{result.checkpoint.origin} size {result.checkpoint.size}; the determination reproduces:"
    )
    print_determination(result.determination)


ORIGIN_FORMATS = ("mineral-ledger/origin-bundle/v1", "mineral-ledger/certificate-bundle/v1")


def print_origin(determination: Any, echo: Any = click.echo) -> None:
    """A trade-agreement origin determination, for people."""
    agreement = determination.agreement
    verdict = (
        f"originating under {agreement['id']}, criterion {determination.criterion}"
        if determination.verdict == "originating"
        else f"not originating under {agreement['id']}"
    )
    echo(
        f"  batch {determination.batch} (HS {determination.hs6 or 'unclassified'}) at {determination.at}: {verdict} "
        f"(agreement version {agreement['version']}, {agreement['content_hash']})"
    )
    for figure in determination.rvc:
        echo(f"  RVC {figure.method}: {figure.formula}")
    for material in determination.materials:
        status = "originating" if material.originating else "non-originating"
        echo(f"  material {material.batch} (HS {material.hs6 or '-'}): {status}, {material.why}")
    for reason in determination.not_originating:
        echo(f"  [-] {reason.code}: {reason.message}")


def _verify_origin_bundle(document: dict[str, Any], key: str | None, policy: WitnessPolicy) -> None:
    from ledger.rules.agreement import AgreementError, Agreements
    from ledger.rules.bundle import BundleError
    from ledger.rules.origin_bundle import (
        CERTIFICATE_BUNDLE_FORMAT,
        verify_certificate_bundle,
        verify_origin_bundle,
    )

    try:
        local = Agreements().by_id
    except AgreementError:
        local = None
    vkey = inline_or_file(key) if key else None
    try:
        with Progress("verifying signatures", "events") as bar:
            if document.get("format") == CERTIFICATE_BUNDLE_FORMAT:
                certified = verify_certificate_bundle(
                    document, vkey=vkey, local_agreements=local, witnesses=policy, progress=bar.update
                )
            else:
                result = verify_origin_bundle(
                    document, vkey=vkey, local_agreements=local, witnesses=policy, progress=bar.update
                )
    except BundleError as exc:
        _fail(str(exc))
        return
    if document.get("format") == CERTIFICATE_BUNDLE_FORMAT:
        for warning in certified.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        certificate = certified.certificate
        click.echo(
            f"OK: {certified.entries} events, every signature and inclusion proof verified against checkpoint "
            f"{certified.checkpoint.origin} size {certified.checkpoint.size}; certificate {certificate.id} "
            f"({certificate.agreement}), signed by {certified.certifier} as {certificate.certifier_role}, in event "
            f"{certified.event_id}; every good's recorded determination reproduces:"
        )
        for determination in certified.determinations:
            print_origin(determination)
        return
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(
        f"OK: {result.entries} events, every signature and inclusion proof verified against checkpoint "
        f"{result.checkpoint.origin} size {result.checkpoint.size}; the origin determination reproduces:"
    )
    print_origin(result.determination)
