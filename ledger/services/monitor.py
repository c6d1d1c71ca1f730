"""``ledger monitor``: follow a ledger from outside and raise an alarm on any inconsistency, rollback or split view.

The monitor keeps its own state in a directory: a verified copy of the log (``monitor.db``, kept by the same code
as ``ledger mirror``, so every new entry is replayed through signatures, hash chains and the acceptance rules),
the history of every checkpoint it accepted (``checkpoints.jsonl``) and the alarms it raised (``alarms.jsonl``).

Each round:

1. fetches the log's latest checkpoint and verifies the log's signature and, with a witness policy, a quorum of
   cosignatures (a fresh checkpoint is given a few seconds to collect them);
2. checks it against the last checkpoint in its history: a smaller tree is a rollback, the same size with another
   root a split view, a larger one must come with a valid consistency proof; then replays the new entries;
3. compares its view with each witness's (``GET <witness>/<origin hash>/checkpoint``): the same size with another
   root, or a tree the log cannot prove consistent with it, means the log shows the witness and the monitor
   different histories.

Any failure is an :class:`Alarm`: recorded, posted as JSON to the webhook if one is configured, and the command
exits non-zero.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ledger.errors import LedgerError
from ledger.log.checkpoint import Checkpoint, CheckpointError
from ledger.log.cosignature import WitnessPolicy
from ledger.log.offline import VerificationError, open_signed_checkpoint, verify_consistency
from ledger.log.witness import origin_hash
from ledger.services.backup import mirror_round
from ledger.store.db import create_engine, upgrade

QUORUM_GRACE_SECONDS = 5.0
"""How long a round waits for a fresh checkpoint to collect a quorum of cosignatures before raising an alarm."""

HISTORY_FILE = "checkpoints.jsonl"
ALARMS_FILE = "alarms.jsonl"
DATABASE_FILE = "monitor.db"


@dataclass(frozen=True)
class Alarm:
    """Something a monitor must tell a person: ``kind`` is one of rollback, split-view, inconsistent, quorum,
    invalid-entry, bad-signature, unreachable."""

    kind: str
    detail: str
    url: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass
class RoundResult:
    before: int = 0
    after: int = 0
    alarms: list[Alarm] = field(default_factory=list)


class Monitor:
    def __init__(
        self,
        url: str,
        state_dir: Path,
        log_vkey: str,
        token: str,
        policy: WitnessPolicy | None = None,
        witness_urls: tuple[str, ...] = (),
        webhook: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.state_dir = state_dir
        self.log_vkey = log_vkey.strip()
        self.token = token
        self.policy = policy or WitnessPolicy()
        self.witness_urls = tuple(u.rstrip("/") for u in witness_urls)
        self.webhook = webhook
        self._last: dict[str, Any] | None = None
        state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.state_dir / DATABASE_FILE).resolve()}"

    def history(self) -> list[dict[str, Any]]:
        """Every checkpoint this monitor accepted, oldest first (read from its state directory)."""
        path = self.state_dir / HISTORY_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def last_seen(self) -> dict[str, Any] | None:
        """The last checkpoint this monitor accepted: read from the history once, then kept as it is appended
        (the history only grows, and a round looks at the last record several times)."""
        if self._last is None:
            history = self.history()
            self._last = history[-1] if history else None
        return self._last

    def _remember(self, checkpoint: Checkpoint, note: str) -> None:
        record = {
            "size": checkpoint.size,
            "root_hash": base64.b64encode(checkpoint.root_hash).decode(),
            "note": note,
            "seen_at": datetime.now(UTC).isoformat(),
        }
        self._append(HISTORY_FILE, record)
        self._last = record

    async def _raise(self, alarm: Alarm, client: httpx.AsyncClient) -> None:
        self._append(ALARMS_FILE, asdict(alarm))
        if self.webhook:
            # the alarm is recorded and the exit status says it: a dead webhook must not hide it
            with contextlib.suppress(httpx.HTTPError):
                await client.post(
                    self.webhook, json={"source": "ledger monitor", **asdict(alarm)}, timeout=10
                )

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.state_dir / name, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    async def round(self) -> RoundResult:
        """One round; the alarms it raised (none: the log is consistent with everything this monitor has seen)."""
        result = RoundResult()
        async with httpx.AsyncClient(timeout=30) as client:
            alarm = await self._check(client, result)
            if alarm is not None:
                result.alarms.append(alarm)
            if not result.alarms:
                result.alarms.extend(await self._compare_witnesses(client))
            for each in result.alarms:
                await self._raise(each, client)
        return result

    async def _fetch_checkpoint(self, client: httpx.AsyncClient) -> tuple[str, Checkpoint] | Alarm:
        """The log's latest checkpoint, verified with the log key, or the alarm that it cannot be had."""
        try:
            response = await client.get(f"{self.url}/v1/log/checkpoint")
        except httpx.HTTPError as exc:
            return Alarm("unreachable", f"the log at {self.url} cannot be reached: {exc!r}", self.url)
        if response.status_code != 200:
            return Alarm(
                "unreachable", f"the log answered {response.status_code} to /v1/log/checkpoint", self.url
            )
        try:
            return response.text, open_signed_checkpoint(response.text, self.log_vkey)
        except VerificationError as exc:
            return Alarm("bad-signature", str(exc), self.url)

    def _against_history(self, checkpoint: Checkpoint) -> Alarm | None:
        last = self.last_seen()
        if last is None:
            return None
        root = last["root_hash"]
        if checkpoint.size < last["size"]:
            return Alarm(
                "rollback",
                f"the log's checkpoint has {checkpoint.size} entries, fewer than the {last['size']} (root {root}) "
                "this monitor saw before: the log was rolled back",
                self.url,
            )
        if checkpoint.size == last["size"] and base64.b64encode(checkpoint.root_hash).decode() != root:
            return Alarm(
                "split-view",
                f"the log shows a tree of {checkpoint.size} entries with another root than the one this monitor "
                f"saw before ({root})",
                self.url,
            )
        return None

    async def _check(self, client: httpx.AsyncClient, result: RoundResult) -> Alarm | None:
        deadline = time.monotonic() + QUORUM_GRACE_SECONDS
        while True:
            fetched = await self._fetch_checkpoint(client)
            if isinstance(fetched, Alarm):
                return fetched
            note, checkpoint = fetched
            alarm = self._against_history(checkpoint)
            if alarm is not None:
                return alarm
            try:
                self.policy.check(note)
                break
            except CheckpointError as exc:
                if (
                    time.monotonic() > deadline
                ):  # a fresh checkpoint gets a few seconds to collect cosignatures
                    return Alarm("quorum", f"checkpoint of size {checkpoint.size}: {exc}", self.url)
            await asyncio.sleep(0.25)
        last = self.last_seen()
        engine = create_engine(self.database_url, statement_timeout_ms=0)
        try:
            await upgrade(engine)  # the monitor's own copy: created on the first round, a no-op after
            done = await mirror_round(engine, self.url, self.token, self.log_vkey, note=note)
        except LedgerError as exc:
            text = exc.detail
            kind = (
                "rollback"
                if "rolled" in text
                else "split-view"
                if "split view" in text
                else "inconsistent"
                if "extension" in text or "consistent" in text
                else "invalid-entry"
            )
            return Alarm(kind, text, self.url)
        finally:
            await engine.dispose()
        result.before, result.after = done.before, done.after
        if last is None or last["size"] != checkpoint.size:
            self._remember(checkpoint, note)
        return None

    async def _compare_witnesses(self, client: httpx.AsyncClient) -> list[Alarm]:
        last = self.last_seen()
        if last is None or not self.witness_urls:
            return []
        mine_note = last["note"]
        mine = open_signed_checkpoint(mine_note, self.log_vkey)
        alarms = []
        for witness_url in self.witness_urls:
            try:
                response = await client.get(f"{witness_url}/{origin_hash(mine.origin)}/checkpoint")
            except httpx.HTTPError as exc:
                alarms.append(Alarm("unreachable", f"witness {witness_url}: {exc!r}", witness_url))
                continue
            if response.status_code == 404:
                continue  # it has not cosigned this log yet
            try:
                theirs = open_signed_checkpoint(response.text, self.log_vkey)
            except VerificationError as exc:
                alarms.append(Alarm("bad-signature", f"witness {witness_url} serves: {exc}", witness_url))
                continue
            if theirs.size == mine.size:
                if theirs.root_hash != mine.root_hash:
                    alarms.append(self._split(witness_url, mine, theirs))
                continue
            old, new = (theirs, mine) if theirs.size < mine.size else (mine, theirs)
            try:
                proof = await client.get(
                    f"{self.url}/v1/log/proofs/consistency", params={"first": old.size, "second": new.size}
                )
                verify_consistency(old, new, proof.json() if proof.status_code == 200 else {})
            except (VerificationError, ValueError, httpx.HTTPError) as exc:
                alarms.append(
                    Alarm(
                        "split-view",
                        f"the log cannot prove the tree of {theirs.size} entries that witness {witness_url} cosigned "
                        f"consistent with the tree of {mine.size} entries it showed this monitor: {exc}",
                        witness_url,
                    )
                )
        return alarms

    def _split(self, witness_url: str, mine: Checkpoint, theirs: Checkpoint) -> Alarm:
        return Alarm(
            "split-view",
            f"witness {witness_url} cosigned a tree of {theirs.size} entries with root "
            f"{base64.b64encode(theirs.root_hash).decode()}, the log showed this monitor root "
            f"{base64.b64encode(mine.root_hash).decode()} for the same size",
            witness_url,
        )
