"""Settings, read once from environment variables. The defaults make ``ledger serve`` work with nothing set."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import InvalidInput


def _env_secret(name: str) -> str:
    """``NAME``, or the contents of the file ``NAME_FILE`` names (a container secret), stripped; empty if neither.

    Setting both is refused, so that no one wonders which one is in force."""
    value = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise InvalidInput(f"set {name} or {name}_FILE, not both")
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise InvalidInput(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None


def _public_url(value: str) -> str:
    if value and (
        not value.startswith(("https://", "http://")) or "/" in value.split("://", 1)[1].strip("/")
    ):
        raise InvalidInput(
            f"LEDGER_PUBLIC_URL={value!r} must be the ledger's origin, such as https://ledger.example.org (no path)"
        )
    return value.rstrip("/")


def _env_duration(name: str, default: int) -> int:
    """Seconds from ``3600``, ``3600s``, ``90m``, ``36h`` or ``7d``."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (raw[:-1], raw[-1]) if raw[-1] in units else (raw, "s")
    try:
        value = int(number) * units[unit]
    except ValueError:
        raise InvalidInput(
            f"environment variable {name}={raw!r} must be a duration such as 7d, 36h or 3600"
        ) from None
    if value <= 0:
        raise InvalidInput(f"environment variable {name}={raw!r} must be positive")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"environment variable {name}={raw!r} must be an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"environment variable {name}={raw!r} must be a number") from None


def _env_positive(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not value > 0:
        raise InvalidInput(f"environment variable {name}={value!r} must be a positive number of seconds")
    return value


def _env_positive_int(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value <= 0:
        raise InvalidInput(
            f"environment variable {name}={value!r} must be a positive whole number of seconds"
        )
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise InvalidInput(f"environment variable {name}={raw!r} must be 1/0, true/false, yes/no or on/off")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///./var/ledger.db"
    """LEDGER_DATABASE_URL: SQLAlchemy async URL; ``postgresql+asyncpg://user@host/db`` for PostgreSQL."""

    database_read_url: str = ""
    """LEDGER_DATABASE_READ_URL: a PostgreSQL streaming replica of LEDGER_DATABASE_URL that serves reads, proofs
    and eligibility; empty (the default) reads the primary. A client that must see its own write sends
    ``X-Min-Log-Size: <log index + 1>``."""

    replica_wait_seconds: float = 5.0
    """LEDGER_REPLICA_WAIT_SECONDS: how long a read with ``X-Min-Log-Size`` waits for the replica to catch up
    before 503 with ``Retry-After``."""

    data_dir: Path = Path("./var")
    """LEDGER_DATA_DIR: where ``ledger init`` keeps the registrar's key and token and the log key (0600)."""

    log_origin: str = "mineral-ledger.example/log"
    """LEDGER_LOG_ORIGIN: the transparency log's origin line in checkpoints (unique per deployment)."""

    max_body_bytes: int = 4 * 1024 * 1024
    """LEDGER_MAX_BODY_BYTES: largest request body accepted (413 beyond)."""

    max_batch_envelopes: int = 1000
    """LEDGER_MAX_BATCH: most envelopes in one ``POST /v1/events/batch``."""

    clock_skew_seconds: int = 300
    """LEDGER_CLOCK_SKEW_SECONDS: how far in the future an event's timestamp may lie."""

    max_backdate_seconds: int = 7 * 86400
    """LEDGER_MAX_BACKDATE: how far before its acceptance an event may be dated, as seconds or with a unit
    (``7d``, ``36h``, ``90m``); default 7 days. Events are recorded as they happen."""

    demo: bool = True
    """LEDGER_DEMO: whether ``make run`` loads the demo supply chain into an empty database."""

    pool_size: int = 10
    """LEDGER_DB_POOL_SIZE: connections per API process (PostgreSQL)."""

    pool_timeout: float = 5.0
    """LEDGER_DB_POOL_TIMEOUT: seconds a request waits for a database connection before it is shed with 503
    ``overloaded`` and ``Retry-After`` (rather than queueing until the client gives up)."""

    statement_timeout_ms: int = 15_000
    """LEDGER_STATEMENT_TIMEOUT_MS: longest a single SQL statement may run on PostgreSQL (0: no limit); a statement
    cancelled at this bound answers 503 ``overloaded``. Migrations run without it."""

    rate_limit: float = 100.0
    """LEDGER_RATE_LIMIT: requests per second per API token, on average (0 turns rate limiting off)."""

    rate_burst: int = 1000
    """LEDGER_RATE_BURST: requests one token may make in a burst (in any one second)."""

    rate_limit_url: str = ""
    """LEDGER_RATE_LIMIT_URL: where the rate limits are counted, shared by every API process
    (``redis://host:6379/0``); empty (the default) counts in the process, for a single process only."""

    auth_fail_limit: int = 20
    """LEDGER_AUTH_FAIL_LIMIT: failed authentications per client address per minute; beyond, that address gets
    429 until the minute has passed (0 turns it off)."""

    token_cache_seconds: float = 2.0
    """LEDGER_TOKEN_CACHE_SECONDS: how long an API process keeps a token it looked up (0 turns the cache off). A
    revocation takes effect at once in the process that revokes, and within this many seconds in the others."""

    verify_processes: int = 2
    """LEDGER_VERIFY_PROCESSES: worker processes a server checks signatures in before the write lock, and in which
    it decodes and checks the payloads of chunks of 32 envelopes or more (0: worker threads for the signatures,
    the event loop for the payloads; threads share the interpreter's lock with the event loop and verify more
    slowly)."""

    read_only: bool = False
    """LEDGER_READ_ONLY: serve reads only (a mirror kept by ``ledger mirror``): every submission is refused with 403
    naming the reason, and this process does not integrate the log."""

    metrics: bool = True
    """LEDGER_METRICS: whether ``GET /metrics`` (Prometheus) answers; ``off`` makes it 404."""

    metrics_token: str = ""
    """LEDGER_METRICS_TOKEN: if set, ``GET /metrics`` needs ``Authorization: Bearer <this>`` (a scraper's secret,
    not an API token); empty (the default) leaves it open, as Prometheus endpoints usually are behind a network."""

    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    """LEDGER_CORS_ORIGINS: comma-separated origins allowed by CORS; empty (the default) turns CORS off."""

    body_timeout_seconds: float = 10.0
    """LEDGER_BODY_TIMEOUT: seconds a request's body may take to arrive in full, from the end of its headers
    (408 beyond), so that a slow client cannot hold a connection and a worker."""

    header_timeout_seconds: float = 10.0
    """LEDGER_HEADER_TIMEOUT: seconds a request's line and headers may take to arrive, from the connection's
    opening or the previous response (``ledger serve`` closes the connection beyond)."""

    keepalive_timeout_seconds: int = 5
    """LEDGER_KEEPALIVE_TIMEOUT: seconds ``ledger serve`` keeps an idle keep-alive connection open."""

    public_url: str = ""
    """LEDGER_PUBLIC_URL: the URL the ledger is published at (``https://ledger.example.org``): the ``did:web`` issuer
    and the links in verifiable credentials are built from it. Empty (the default, for development): from each
    request's own URL, which lets the Host header choose them, so set it wherever the ledger is public."""

    witnesses: tuple[str, ...] = field(default_factory=tuple)
    """LEDGER_WITNESSES: the witnesses that cosign this log's checkpoints (C2SP tlog-witness), one per line or
    separated by commas, each ``<witness vkey> <URL of its submission prefix>`` (or LEDGER_WITNESSES_FILE, a file
    of such lines; ``#`` starts a comment line); empty (the default): none. Their
    cosignatures are collected after each checkpoint is signed, never delaying integration."""

    witness_quorum: int = 0
    """LEDGER_WITNESS_QUORUM: how many of LEDGER_WITNESSES must cosign before a checkpoint counts as witnessed
    (bundles wait briefly for it, ``/readyz`` and the metrics report it); default: all of them."""

    witness_timeout_seconds: float = 5.0
    """LEDGER_WITNESS_TIMEOUT: seconds one request to a witness may take (a slow witness delays only itself)."""

    @property
    def witness_endpoints(self) -> list[tuple[str, str]]:
        """(witness vkey, URL) pairs from LEDGER_WITNESSES, checked."""
        from ledger.log.checkpoint import CheckpointError
        from ledger.log.cosignature import parse_witness_vkey

        pairs = []
        for entry in self.witnesses:
            vkey, _, url = entry.strip().partition(" ")
            url = url.strip()
            try:
                parse_witness_vkey(vkey)
            except CheckpointError as exc:
                raise InvalidInput(f"LEDGER_WITNESSES: {exc}") from None
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(
                    f"LEDGER_WITNESSES: each entry is '<witness vkey> <http(s) URL>'; {entry[:120]!r} has no URL"
                )
            pairs.append((vkey, url.rstrip("/")))
        quorum = self.witness_quorum or len(pairs)
        if quorum > len(pairs):
            raise InvalidInput(
                f"LEDGER_WITNESS_QUORUM={quorum} is more than the {len(pairs)} LEDGER_WITNESSES"
            )
        return pairs

    @property
    def effective_witness_quorum(self) -> int:
        return self.witness_quorum or len(self.witnesses)

    @property
    def log_guard_path(self) -> Path:
        """Where the log keeps, outside the database, the last checkpoint it signed (it refuses to sign a smaller or
        inconsistent one)."""
        return self.data_dir / "log-signed.checkpoint"

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        cors = os.environ.get("LEDGER_CORS_ORIGINS", "")
        return cls(
            database_url=_env_secret("LEDGER_DATABASE_URL") or defaults.database_url,
            database_read_url=_env_secret("LEDGER_DATABASE_READ_URL"),
            replica_wait_seconds=_env_positive("LEDGER_REPLICA_WAIT_SECONDS", defaults.replica_wait_seconds),
            data_dir=Path(os.environ.get("LEDGER_DATA_DIR") or defaults.data_dir),
            log_origin=os.environ.get("LEDGER_LOG_ORIGIN") or defaults.log_origin,
            max_body_bytes=_env_int("LEDGER_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_batch_envelopes=_env_int("LEDGER_MAX_BATCH", defaults.max_batch_envelopes),
            clock_skew_seconds=_env_int("LEDGER_CLOCK_SKEW_SECONDS", defaults.clock_skew_seconds),
            max_backdate_seconds=_env_duration("LEDGER_MAX_BACKDATE", defaults.max_backdate_seconds),
            demo=_env_bool("LEDGER_DEMO", defaults.demo),
            pool_size=_env_int("LEDGER_DB_POOL_SIZE", defaults.pool_size),
            pool_timeout=_env_float("LEDGER_DB_POOL_TIMEOUT", defaults.pool_timeout),
            statement_timeout_ms=_env_int("LEDGER_STATEMENT_TIMEOUT_MS", defaults.statement_timeout_ms),
            rate_limit=_env_float("LEDGER_RATE_LIMIT", defaults.rate_limit),
            rate_burst=_env_int("LEDGER_RATE_BURST", defaults.rate_burst),
            rate_limit_url=_env_secret("LEDGER_RATE_LIMIT_URL"),
            auth_fail_limit=_env_int("LEDGER_AUTH_FAIL_LIMIT", defaults.auth_fail_limit),
            token_cache_seconds=_env_float("LEDGER_TOKEN_CACHE_SECONDS", defaults.token_cache_seconds),
            verify_processes=_env_int("LEDGER_VERIFY_PROCESSES", defaults.verify_processes),
            metrics=_env_bool("LEDGER_METRICS", defaults.metrics),
            read_only=_env_bool("LEDGER_READ_ONLY", defaults.read_only),
            metrics_token=_env_secret("LEDGER_METRICS_TOKEN"),
            cors_origins=tuple(origin.strip() for origin in cors.split(",") if origin.strip()),
            body_timeout_seconds=_env_positive("LEDGER_BODY_TIMEOUT", defaults.body_timeout_seconds),
            header_timeout_seconds=_env_positive("LEDGER_HEADER_TIMEOUT", defaults.header_timeout_seconds),
            public_url=_public_url(os.environ.get("LEDGER_PUBLIC_URL", "").strip()),
            witnesses=tuple(
                entry.strip()
                for entry in _env_secret("LEDGER_WITNESSES").replace(",", "\n").splitlines()
                if entry.strip() and not entry.strip().startswith("#")
            ),
            witness_quorum=_env_int("LEDGER_WITNESS_QUORUM", defaults.witness_quorum),
            witness_timeout_seconds=_env_positive("LEDGER_WITNESS_TIMEOUT", defaults.witness_timeout_seconds),
            keepalive_timeout_seconds=_env_positive_int(
                "LEDGER_KEEPALIVE_TIMEOUT", defaults.keepalive_timeout_seconds
            ),
        )

    @property
    def registrar_key_path(self) -> Path:
        return self.data_dir / "registrar.key"

    @property
    def registrar_token_path(self) -> Path:
        return self.data_dir / "registrar.token"

    @property
    def log_key_path(self) -> Path:
        return self.data_dir / "log.key"
