"""Client-side pacing for Klaviyo's per-account rate limits (fixed 1-second and 1-minute windows).

Staying under the documented limits avoids spending requests on 429s; a 429 that still comes (another client
of the same account) is honoured by the transport through Retry-After.
"""

from __future__ import annotations

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
}


class RateLimiter:
    def __init__(self, limits: dict[str, Limit] | None = None, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._limits = limits or LIMITS
        self._clock, self._sleep = clock, sleep
        self._windows: dict[str, list[float | int]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Wait until one more `key` request fits both windows; returns the seconds waited."""
        limit = self._limits.get(key)
        if limit is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                second, minute = int(now), int(now // 60)
                window = self._windows.setdefault(key, [second, 0, minute, 0])
                if window[0] != second:
                    window[0], window[1] = second, 0
                if window[2] != minute:
                    window[2], window[3] = minute, 0
                if window[1] < limit.burst and window[3] < limit.steady:
                    window[1] += 1
                    window[3] += 1
                    return waited
                pause = (second + 1 - now) if window[3] < limit.steady else ((minute + 1) * 60 - now)
            pause = max(pause, 0.001)
            self._sleep(pause)
            waited += pause
