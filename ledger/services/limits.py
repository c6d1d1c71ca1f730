"""Rate limiting with the ``limits`` library: per API token, and per client address on failed authentication.

The counts live where every API process sees them: Redis at ``LEDGER_RATE_LIMIT_URL`` (``redis://host:6379/0``),
so that N workers together allow the limit, not N times it. With no URL they live in the process, which is right
for a single process only (``ledger serve --workers N`` refuses that: :func:`require_shared_limits`).

Both are moving windows (the ``limits`` moving-window strategy: exact counts over the last so many seconds):

- per token, ``LEDGER_RATE_BURST`` requests in any one second (or ``LEDGER_RATE_LIMIT``, if that is more) and
  ``LEDGER_RATE_LIMIT`` per second on average over any minute (over ``LEDGER_RATE_BURST / LEDGER_RATE_LIMIT``
  seconds if that is longer, so that a whole burst fits): the earlier token bucket's two figures, a burst and a
  sustained rate, as moving windows;
- per client address, ``LEDGER_AUTH_FAIL_LIMIT`` failed authentications in any minute; beyond, every request from
  that address is refused (before its token is even looked up) until the oldest failure is a minute old. Token
  guessing is slowed, and so is the database work it causes.

Exceeding either answers 429 ``rate-limited`` with ``Retry-After`` (the seconds until the window frees a slot). If
the shared store cannot be reached the request is refused with 503 ``overloaded`` (the limits fail closed).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MovingWindowSupport, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from ledger.errors import InvalidInput, LedgerError, Overloaded, Unauthenticated
from ledger.services.tokens import Caller
from ledger.settings import Settings

AUTH_FAIL_WINDOW_SECONDS = 60
"""The window of ``LEDGER_AUTH_FAIL_LIMIT``."""

SUSTAINED_WINDOW_SECONDS = 60
"""The shortest window over which ``LEDGER_RATE_LIMIT`` holds on average."""

SHARED_SCHEMES = ("redis://", "rediss://", "redis+unix://")

T = TypeVar("T")

REDIS_TIMEOUT_SECONDS = 1.0
"""Connect and command timeout of the shared store: a request never hangs on it."""


class RateLimited(LedgerError):
    """Too many requests with one token, or too many failed authentications from one address."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


class _Authenticator(Protocol):
    async def authenticate(self, token: str) -> Caller: ...


class InProcessStorage(Storage, MovingWindowSupport):
    """Moving windows kept in this process, for one API process: a ``limits`` storage used in place of its
    ``MemoryStorage``, which reads ``time.time()`` itself and expires entries from a timer thread, so that the clock
    can be set (tests) and nothing runs beside the event loop. An entry made at ``t`` counts until ``t + expiry``."""

    STORAGE_SCHEME = None

    MAX_KEYS = 100_000
    """Keys kept before those with nothing left in their window are forgotten (an empty window is no window)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._sweep_at = self.MAX_KEYS

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _window(self, key: str, expiry: float, now: float) -> deque[float]:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._sweep_at:
                self._sweep(now)
            window = self._windows[key] = deque()
        while window and window[0] <= now - expiry:
            window.popleft()
        return window

    def _sweep(self, now: float) -> None:
        # every key still here has an entry younger than its expiry, i.e. recent traffic: bounded by the load
        longest = max(SUSTAINED_WINDOW_SECONDS, AUTH_FAIL_WINDOW_SECONDS)
        for key in [k for k, w in self._windows.items() if not w or w[-1] <= now - longest]:
            del self._windows[key]
        self._sweep_at = max(self.MAX_KEYS, 2 * len(self._windows))

    def acquire_now(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = self.clock()
        window = self._window(key, expiry, now)
        if len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        return True

    def window_now(self, key: str, expiry: int) -> tuple[float, int]:
        now = self.clock()
        window = self._window(key, expiry, now)
        return (window[0], len(window)) if window else (now, 0)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.acquire_now(key, limit, expiry, amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self.window_now(key, expiry)

    # the rest of the ``limits`` storage interface (counters for the fixed-window strategies, unused here)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self.clock()
        window = self._window(key, expiry, now)
        window.extend([now] * amount)
        return len(window)

    async def get(self, key: str) -> int:
        return len(self._windows.get(key, ()))

    async def get_expiry(self, key: str) -> float:
        return self.clock()

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        return count

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)


def shared(url: str) -> bool:
    return url.startswith(SHARED_SCHEMES)


class RateLimiter:
    """Per-token limits (``rate`` requests per second on average, ``burst`` in any second; ``rate`` 0 turns them
    off) and per-address limits on failed authentication (``auth_fail_limit`` a minute; 0 turns them off), kept
    in Redis at ``storage_url`` or, when it is empty, in the process (with ``clock``, which tests may set)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.time,
        *,
        storage_url: str = "",
        auth_fail_limit: int = 20,
        key_prefix: str = "ledger",
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.auth_fail_limit = max(0, auth_fail_limit)
        self.storage_url = storage_url
        self._local: InProcessStorage | None = None
        storage: Storage
        if not storage_url:
            storage = self._local = InProcessStorage(clock)
            self._clock = clock
        elif shared(storage_url):
            storage = RedisStorage(
                storage_url,
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._clock = time.time  # what ``limits`` stamps Redis entries with
        else:
            raise InvalidInput(
                f"LEDGER_RATE_LIMIT_URL must be a redis://, rediss:// or redis+unix:// URL (or empty for limits "
                f"in the process), not {storage_url.split('://', 1)[0]!r}://..."
            )
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        self.token_limits: list[RateLimitItem] = []
        if rate > 0:
            # a token bucket (the figures' first meaning) allows ``burst + rate * T`` in any T seconds: at most
            # ``burst`` (or ``rate``, if more) in a second, and ``rate`` a second on average over longer spans
            self.burst = max(self.burst, math.ceil(rate))
            sustained = max(SUSTAINED_WINDOW_SECONDS, math.ceil(self.burst / rate))
            self.token_limits = [
                RateLimitItemPerSecond(self.burst, 1, namespace="token"),
                RateLimitItemPerSecond(max(1, math.floor(rate * sustained)), sustained, namespace="token"),
            ]
        self.auth_fail_item = RateLimitItemPerSecond(
            max(1, self.auth_fail_limit), AUTH_FAIL_WINDOW_SECONDS, namespace="auth-fail"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            settings.rate_limit,
            settings.rate_burst,
            storage_url=settings.rate_limit_url,
            auth_fail_limit=settings.auth_fail_limit,
        )

    @property
    def is_shared(self) -> bool:
        return self._local is None

    # --- per token ------------------------------------------------------------------------------------------

    async def hit(self, token_id: str) -> None:
        """Count one request with the token, or raise :class:`RateLimited` with the seconds to wait. (A request
        that the one-second window lets through and the longer one refuses still counts in the first.)"""
        for item in self.token_limits:
            if not await self._call(self._strategy.hit(item, token_id)):
                raise self._token_refusal(await self._wait(item, token_id))

    def check(self, token_id: str) -> None:
        """:meth:`hit`, synchronously, for limits kept in the process (the original call in ``api/auth.py``)."""
        if self._local is None:
            raise RuntimeError("limits kept in Redis are checked with `await RateLimiter.authenticate(...)`")
        for item in self.token_limits:
            key = item.key_for(token_id)
            if not self._local.acquire_now(key, item.amount, item.get_expiry()):
                start, _ = self._local.window_now(key, item.get_expiry())
                raise self._token_refusal(self._seconds_until(start + item.get_expiry()))

    def _token_refusal(self, wait: int) -> RateLimited:
        error = RateLimited(
            f"this token made more than {self.burst} requests in one second or more than {self.rate:g} per second "
            f"on average (LEDGER_RATE_BURST, LEDGER_RATE_LIMIT); retry in {wait} s"
        )
        error.retry_after = wait
        return error

    # --- per client address, failed authentication ---------------------------------------------------------------

    async def check_failed_auth(self, address: str | None) -> None:
        """Raise :class:`RateLimited` if ``address`` failed authentication ``auth_fail_limit`` times within the
        window (every request from it is refused until then, valid token or not)."""
        if not self.auth_fail_limit or not address:
            return
        item = self.auth_fail_item
        if not await self._call(self._strategy.test(item, address)):
            wait = await self._wait(item, address)
            error = RateLimited(
                f"{self.auth_fail_limit} failed authentications from {address} within "
                f"{AUTH_FAIL_WINDOW_SECONDS} s (LEDGER_AUTH_FAIL_LIMIT); retry in {wait} s"
            )
            error.retry_after = wait
            raise error

    async def record_failed_auth(self, address: str | None) -> None:
        if self.auth_fail_limit and address:
            await self._call(self._strategy.hit(self.auth_fail_item, address))

    async def authenticate(self, tokens: _Authenticator, token: str, client: Any = None) -> Caller:
        """The caller behind ``token`` (``tokens.authenticate``), with both limits: the address (``client``: a
        host string or an object with ``.host``, such as Litestar's ``request.client``) is refused while it has
        too many failures, a failure is counted against it, and a success is counted against the token."""
        address = client if isinstance(client, str) or client is None else getattr(client, "host", None)
        await self.check_failed_auth(address)
        try:
            caller = await tokens.authenticate(token)
        except Unauthenticated:
            await self.record_failed_auth(address)
            raise
        await self.hit(caller.token_id)
        return caller

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except StorageError as exc:
            raise Overloaded(
                "the shared rate-limit store (LEDGER_RATE_LIMIT_URL) did not answer; retry shortly "
                f"({type(exc.storage_error).__name__})"
            ) from exc

    async def _wait(self, item: RateLimitItem, key: str) -> int:
        """Whole seconds until ``item``'s window for ``key`` frees a slot (at least 1)."""
        stats = await self._call(self._strategy.get_window_stats(item, key))
        return self._seconds_until(stats.reset_time)

    def _seconds_until(self, moment: float) -> int:
        return max(1, math.ceil(moment - self._clock()))

    async def close(self) -> None:
        """Close the connections to the shared store, if any."""
        if self._local is None:
            bridge = getattr(self._storage, "bridge", None)
            client = getattr(bridge, "storage", None)
            if client is not None:
                await client.aclose()


def require_shared_limits(settings: Settings, workers: int) -> None:
    """For ``ledger serve --workers N``: more than one process needs its limits counted in a shared store, or
    every worker would allow the whole limit (N times it in all)."""
    if workers <= 1 or shared(settings.rate_limit_url):
        return
    limited = [
        name
        for name, on in (
            ("LEDGER_RATE_LIMIT", settings.rate_limit > 0),
            ("LEDGER_AUTH_FAIL_LIMIT", settings.auth_fail_limit > 0),
        )
        if on
    ]
    if limited:
        raise InvalidInput(
            f"--workers {workers} needs the rate limits ({', '.join(limited)}) counted where every worker sees "
            "them: set LEDGER_RATE_LIMIT_URL=redis://HOST:6379/0, or serve with one worker, or turn the limits "
            "off (LEDGER_RATE_LIMIT=0, LEDGER_AUTH_FAIL_LIMIT=0)"
        )
