"""A time budget for the work on one delivery or one job run, shared by every HTTP call made inside it.

The event app must answer within Connect's 10-second acknowledgement deadline, so no retry may sleep past the
budget: when the budget cannot cover a wait, the call fails as transient and the delivery is redelivered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float:
    """Seconds left in the current budget (infinite outside any budget)."""
    deadline = _deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()
