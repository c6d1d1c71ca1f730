"""Per-token rate limiting: a token bucket per API token, in the process (each API process limits on its own)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger.errors import LedgerError


class RateLimited(LedgerError):
    """Too many requests with one token."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second on average, bursts of up to ``burst``; ``rate`` 0 turns limiting off."""

    MAX_BUCKETS = 100_000
    """Buckets kept before idle ones are forgotten (a full bucket is the same as no bucket)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> None:
        """Spend one request for ``key`` or raise :class:`RateLimited` with the seconds to wait."""
        if self.rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.rate)
            error = RateLimited(
                f"this token made more than {self.burst} requests in a burst or more than {self.rate:g} per second "
                f"on average (LEDGER_RATE_LIMIT, LEDGER_RATE_BURST); retry in {wait} s"
            )
            error.retry_after = wait
            raise error
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
