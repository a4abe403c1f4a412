"""Per-key limits for `/v1`: requests per minute, and requests in flight at once.

With `ALIGNLOOP_REDIS_URL` set both live in Redis, so every web process and replica shares one
limit per key; without it they live in this process's memory (one web process: embedded mode).

- The rate is `limits`' moving window: at most `per_minute` requests in any 60 seconds, counted
  exactly. A fixed window would let a client send twice the limit across a window boundary, and
  the moving window's cost (one list entry per request in the window) is small at these limits.
- The in-flight cap is a Redis sorted set per key, one member per running request, scored by
  when its lease ends. A process that dies mid-request never releases its slots; they stop
  counting when their lease (`v1_slot_lease_seconds`) ends, rather than never.
- If Redis is configured but unreachable, requests are let through (fail open) with a warning
  in the log when the outage starts and a line when it ends: a limiter outage should not take
  the API down with it. Redis is tried again every `OUTAGE_RETRY_S` meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter

import redis
from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from app.errors import RateLimited

log = logging.getLogger(__name__)

KEY_PREFIX = "alignloop:v1"
REDIS_TIMEOUT_S = 0.5  # a limiter that cannot answer this fast is treated as down
# While Redis is down, try it again after this long rather than on every request: a Redis that
# drops packets would otherwise cost each request the whole timeout.
OUTAGE_RETRY_S = 5.0
UNREACHABLE = (redis.RedisError, StorageError)

# Drop the expired leases, then take a slot if fewer than ARGV[1] are held.
# KEYS[1] the key's set; ARGV: max, now, lease end, member, lease seconds.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class KeyLimiter:
    """`acquire(key)` before a request starts (429 when over either limit) and `release(key,
    slot)` with what it returned once the request ends."""

    def __init__(
        self,
        *,
        max_concurrent: int,
        per_minute: int,
        redis_url: str | None = None,
        slot_lease_s: int = 900,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.per_minute = per_minute
        self.slot_lease_s = slot_lease_s
        if redis_url:
            storage = RedisStorage(
                redis_url,
                key_prefix=f"{KEY_PREFIX}:rate",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
            )
            self._redis: redis.Redis | None = storage.storage
            self._take_slot = self._redis.register_script(_TAKE_SLOT)
        else:
            storage, self._redis = MemoryStorage(), None
        self._rate = MovingWindowRateLimiter(storage)
        self._in_flight: Counter[str] = Counter()  # without Redis
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_try = 0.0

    def acquire(self, key: str) -> str:
        """Take a request's worth of rate and an in-flight slot for `key`; returns the slot
        (for `release`). Blocks on Redis: call it from a thread in async code."""
        if self._down_since is not None and time.monotonic() - self._last_try < OUTAGE_RETRY_S:
            return ""  # failing open until the next try
        self._last_try = time.monotonic()
        try:
            slot = self._take(key)
            self._reachable()
            return slot
        except UNREACHABLE as exc:
            self._unreachable(exc)
            return ""

    def release(self, key: str, slot: str) -> None:
        if self._redis is None:
            with self._lock:
                self._in_flight[key] -= 1
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]
        elif slot:
            try:
                self._redis.zrem(self._slots_key(key), slot)
            except redis.RedisError as exc:  # the lease ends it instead
                self._unreachable(exc)

    def _take(self, key: str) -> str:
        # The slot first: a request refused for concurrency does not spend its rate.
        slot = self._take_slot_of(key)
        item = RateLimitItemPerMinute(self.per_minute)
        try:
            if self._rate.hit(item, key):
                return slot
            reset_at = self._rate.get_window_stats(item, key).reset_time
        except BaseException:
            self.release(key, slot)
            raise
        self.release(key, slot)
        wait = math.ceil(reset_at - time.time())
        raise RateLimited(f"Rate limit of {self.per_minute} requests per minute reached.", wait)

    def _take_slot_of(self, key: str) -> str:
        if self._redis is None:
            with self._lock:
                taken = self._in_flight[key] < self.max_concurrent
                if taken:
                    self._in_flight[key] += 1
            slot = "local"
        else:
            now, slot = time.time(), uuid.uuid4().hex
            lease = [self.max_concurrent, now, now + self.slot_lease_s, slot, self.slot_lease_s]
            taken = bool(self._take_slot(keys=[self._slots_key(key)], args=lease))
        if not taken:
            raise RateLimited(
                f"Too many concurrent requests for this key (at most {self.max_concurrent}).", 1
            )
        return slot

    @staticmethod
    def _slots_key(key: str) -> str:
        return f"{KEY_PREFIX}:in-flight:{key}"

    def _unreachable(self, exc: Exception) -> None:
        with self._lock:
            starting, self._down_since = self._down_since is None, self._down_since or time.time()
        if starting:
            log.warning("rate limits are not enforced: Redis is unreachable (%s)", exc)

    def _reachable(self) -> None:
        with self._lock:
            down_since, self._down_since = self._down_since, None
        if down_since is not None:
            log.warning("rate limits enforced again after %.0f s", time.time() - down_since)
