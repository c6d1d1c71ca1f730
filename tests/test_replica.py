"""Reads from a real PostgreSQL streaming replica (LEDGER_DATABASE_READ_URL), with read-your-writes.

The test builds its own small cluster from the machine's PostgreSQL binaries, so the machine's server is left as
it is: ``initdb`` a primary in a temporary directory (its own port, replication allowed from loopback), then
``pg_basebackup -R`` a standby from it on another port, both run as the ``postgres`` user. Where that cannot be
done (no binaries, no ``postgres`` user, not root), the test is skipped loudly with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from tests.support import free_port, ledger, serving


@dataclass(frozen=True)
class Cluster:
    primary_port: int
    replica_port: int

    def url(self, port: int, database: str = "ledger") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"

    def sql(self, port: int, statement: str, database: str = "ledger") -> str:
        done = subprocess.run(
            [
                _bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _bin(name: str) -> str:
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        candidate = version / "bin" / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name) or name


def _as_postgres(*args: str) -> None:
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr or done.stdout}")


def _wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the test must run as root to start PostgreSQL as the postgres user"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "psql"):
        if not Path(_bin(tool)).exists() and shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = _why_not()
    if reason is not None:
        print(f"\n!!! SKIPPED: no streaming replica test: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="ledger-replica-"))
    os.chmod(root, 0o777)
    primary, replica = root / "primary", root / "replica"
    ports = Cluster(free_port(), free_port())
    started: list[Path] = []
    try:
        _as_postgres(_bin("initdb"), "-D", str(primary), "-A", "trust", "-U", "postgres")
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {ports.primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nfsync = on\n"
            )
        _as_postgres(_bin("pg_ctl"), "-D", str(primary), "-l", str(root / "primary.log"), "-w", "start")
        started.append(primary)
        _wait_port(ports.primary_port)
        _as_postgres(
            _bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(ports.primary_port), "-U", "postgres",
            "-D", str(replica), "-R", "-X", "stream",
        )  # fmt: skip
        with (replica / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {ports.replica_port}\n")
        _as_postgres(_bin("pg_ctl"), "-D", str(replica), "-l", str(root / "replica.log"), "-w", "start")
        started.append(replica)
        _wait_port(ports.replica_port)
        ports.sql(ports.primary_port, "CREATE DATABASE ledger", database="postgres")
        yield ports
    finally:
        for directory in reversed(started):
            with contextlib.suppress(RuntimeError):
                _as_postgres(_bin("pg_ctl"), "-D", str(directory), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_reads_come_from_the_replica_and_can_wait_for_a_write(cluster: Cluster, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": cluster.url(cluster.primary_port),
        "LEDGER_DATABASE_READ_URL": cluster.url(cluster.replica_port),
        "LEDGER_DATA_DIR": str(tmp_path / "var"),
        "LEDGER_REPLICA_WAIT_SECONDS": "1",
    }
    ledger(env, "db", "upgrade")
    ledger(env, "init")
    with serving(env, tmp_path / "server.log") as url:
        token = (tmp_path / "var" / "registrar.token").read_text().strip()
        key = SigningKey.load(tmp_path / "var" / "registrar.key")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def register(owner_id: str) -> dict[str, object]:
            owner = ev.OwnerRegistered(
                actor="registrar",
                timestamp=timestamp_now(),
                owner=ev.OwnerInfo(id=owner_id, name=owner_id, kind="company", country="CA"),
            )
            response = httpx.post(
                f"{url}/v1/events", content=envelope_for(owner, key).to_json(), headers=headers
            )
            assert response.status_code == 201, response.text
            result: dict[str, object] = response.json()
            return result

        # replication running: a write, then a read that asks to see it
        first = register("owner-a")
        wait = {**headers, "X-Min-Log-Size": str(int(str(first["log_index"])) + 1)}
        assert httpx.get(f"{url}/v1/owners/owner-a", headers=wait).status_code == 200
        # replay paused on the standby: the primary has the next write, the replica does not, and reads show it
        cluster.sql(cluster.replica_port, "SELECT pg_wal_replay_pause()")
        second = register("owner-b")
        assert (
            httpx.get(f"{url}/v1/owners/owner-b", headers=headers).status_code == 404
        )  # read from the replica
        wait = {**headers, "X-Min-Log-Size": str(int(str(second["log_index"])) + 1)}
        behind = httpx.get(f"{url}/v1/owners/owner-b", headers=wait)
        assert behind.status_code == 503 and behind.json()["code"] == "replica-behind"
        assert behind.headers["retry-after"] == "1" and "X-Min-Log-Size" in behind.json()["detail"]
        bad = httpx.get(f"{url}/v1/owners/owner-b", headers={**headers, "X-Min-Log-Size": "soon"})
        assert bad.status_code == 400
        cluster.sql(cluster.replica_port, "SELECT pg_wal_replay_resume()")
        assert httpx.get(f"{url}/v1/owners/owner-b", headers=wait).status_code == 200
        # proofs are read from the replica too, and still verify against the primary's checkpoint
        ledger(env, "log", "integrate")
        size = int(str(second["log_index"])) + 1
        proof = httpx.get(
            f"{url}/v1/log/proofs/inclusion",
            params={"event_id": str(second["event_id"])},
            headers={"X-Min-Log-Size": str(size)},
        )
        assert proof.status_code in {200, 409}, proof.text
