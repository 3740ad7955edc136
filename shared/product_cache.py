"""A per-process cache of products read from commercetools, for the event app's order events.

During a sale the same products are read for every order; reusing them for a short while (60 s by default) saves
one commercetools query per order. Bounded (least recently used out) and thread-safe. A product's category paths
come from its expanded categories, so they are cached with it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

Fetch = Callable[[list[str]], dict[str, dict[str, Any]]]


class ProductCache:
    def __init__(self, ttl_seconds: float, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._max, self._clock = ttl_seconds, max_entries, clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, ids: Iterable[str], fetch: Fetch) -> dict[str, dict[str, Any]]:
        """These products by id: the fresh cached ones, the others from `fetch` (one call for all missing)."""
        ids = sorted(set(ids))
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        now = self._clock()
        with self._lock:
            for product_id in ids:
                entry = self._entries.get(product_id)
                if entry is not None and entry[0] > now:
                    self._entries.move_to_end(product_id)
                    found[product_id] = entry[1]
                else:
                    missing.append(product_id)
        if missing:
            fetched = fetch(missing)
            found.update(fetched)
            if self._max > 0 and self._ttl > 0:
                with self._lock:
                    for product_id, product in fetched.items():
                        self._entries[product_id] = (now + self._ttl, product)
                        self._entries.move_to_end(product_id)
                    while len(self._entries) > self._max:
                        self._entries.popitem(last=False)
        return found
