"""Per-key limits for `/v1`: requests in flight at once, and requests per minute (token bucket).

Limits are kept per process: with several web replicas each enforces them on its own share.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


class KeyLimiter:
    def __init__(self, *, max_concurrent: int, per_minute: int) -> None:
        self.max_concurrent = max_concurrent
        self.per_minute = per_minute
        self._buckets: dict[Hashable, _Bucket] = {}
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, key: Hashable) -> Iterator[None]:
        """Hold one of `key`'s concurrent slots for the block; RateLimited when none is left."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._buckets[key].in_flight -= 1

    def acquire(self, key: Hashable) -> None:
        """Take a slot and a request's worth of rate; release the slot with `release`."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(tokens=self.per_minute, updated=now))
            rate = self.per_minute / 60.0
            bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.in_flight >= self.max_concurrent:
                raise RateLimited(
                    f"Too many concurrent requests for this key (at most {self.max_concurrent}).", 1
                )
            if bucket.tokens < 1:
                wait = math.ceil((1 - bucket.tokens) / rate)
                raise RateLimited(
                    f"Rate limit of {self.per_minute} requests per minute reached.", wait
                )
            bucket.tokens -= 1
            bucket.in_flight += 1
