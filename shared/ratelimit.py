"""Client-side pacing for Klaviyo's per-account rate limits (fixed 1-second and 1-minute windows).

Staying under the documented limits avoids spending requests on 429s. The windows start on this machine's
clock until Klaviyo says where its own are: every answer that is not a 429 carries `RateLimit-Limit`,
`RateLimit-Remaining` and `RateLimit-Reset` (seconds until the window resets) for the steady window, and
`observe` moves the local window onto Klaviyo's, with Klaviyo's count. A 429 that still comes (another client
of the same account) is honoured by the transport through Retry-After, and `block` holds the key until then.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    burst: int  # per second
    steady: int  # per minute


# Klaviyo's documented limits (OpenAPI x-klaviyo-ratelimit) for the endpoints the bulk import uses.
LIMITS = {
    "events-bulk": Limit(10, 150),
    "profile-bulk-import": Limit(10, 150),
    "catalog-bulk": Limit(75, 700),  # creating a catalog bulk job (75/s, 750/m)
    "catalog-job-status": Limit(75, 700),  # reading one (the same limits as creating)
    "catalog-read": Limit(350, 3500),
    "subscription-bulk": Limit(75, 700),  # profile subscription bulk create / delete jobs (75/s, 750/m)
    "profiles-read": Limit(75, 700),  # GET /api/profiles (75/s, 750/m)
}


@dataclass
class _Window:
    """One fixed window: `limit` requests from `start` to `start + length`, then a new window (same phase)."""

    length: float
    limit: int
    start: float
    count: int = 0

    def roll(self, now: float) -> None:
        if now >= self.start + self.length:
            self.start += math.floor((now - self.start) / self.length) * self.length
            self.count = 0

    @property
    def end(self) -> float:
        return self.start + self.length


@dataclass
class _Key:
    second: _Window
    minute: _Window
    blocked_until: float = 0.0


class RateLimiter:
    def __init__(self, limits: dict[str, Limit] | None = None, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._limits = limits or LIMITS
        self._clock, self._sleep = clock, sleep
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    def _key(self, key: str, limit: Limit, now: float) -> _Key:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key(_Window(1.0, limit.burst, float(math.floor(now))),
                                           _Window(60.0, limit.steady, math.floor(now / 60) * 60.0))
        state.second.roll(now)
        state.minute.roll(now)
        return state

    def acquire(self, key: str) -> float:
        """Wait until one more `key` request fits both windows; returns the seconds waited."""
        limit = self._limits.get(key)
        if limit is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                state = self._key(key, limit, now)
                second, minute = state.second, state.minute
                if state.blocked_until > now:
                    pause = state.blocked_until - now
                elif second.count < second.limit and minute.count < minute.limit:
                    second.count += 1
                    minute.count += 1
                    return waited
                else:
                    pause = (second.end if minute.count < minute.limit else minute.end) - now
            pause = max(pause, 0.001)
            self._sleep(pause)
            waited += pause

    def observe(self, key: str, limit: int, remaining: int, reset: float) -> None:
        """What Klaviyo said of a window (its `RateLimit-*` headers): `limit` requests, `remaining` of them left,
        reset in `reset` seconds.

        Klaviyo's headers describe the steady window: the local one is moved onto it (Klaviyo rounds `reset` up
        to whole seconds, so the local window ends then or up to a second later, never earlier), and takes
        Klaviyo's count when Klaviyo has counted more (another client of the account). The local limit stays
        (it may be lower than Klaviyo's). Headers that describe a burst window (the limit says which: the
        stand-in's may) only raise the count of the current second.
        """
        known = self._limits.get(key)
        if known is None:
            return
        with self._lock:
            now = self._clock()
            state = self._key(key, known, now)
            used = max(0, limit - remaining)
            if limit > known.burst:
                minute, end = state.minute, now + max(reset, 0.0)
                same = abs(end - minute.end) < 1.0
                minute.start = end - minute.length
                minute.count = max(minute.count, used) if same else used
            else:
                state.second.count = max(state.second.count, used)

    def block(self, key: str, seconds: float) -> None:
        """Klaviyo answered 429 with Retry-After: no `key` request before that."""
        if key not in self._limits:
            return
        with self._lock:
            now = self._clock()
            state = self._key(key, self._limits[key], now)
            state.blocked_until = max(state.blocked_until, now + seconds)
