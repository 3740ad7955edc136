"""Out-of-order protection: remember the last version of each resource we applied, skip older ones.

commercetools numbers every change of a resource (`version`; a message's `resourceVersion`), and subscriptions
deliver at least once and in no guaranteed order. A processor asks `is_stale(type, id, version)` before working
and calls `applied(type, id, version)` once the work is done, so a late `ProductUnpublished` (version 6) that
arrives after the sync of version 7 cannot delete a published product.

Choice and limits (kept because it is cheap: no storage round trip on the realtime path):
- the memory is **per app instance** (`shared.processors.Context.versions`, one guard per context) and bounded
  (least recently used entries are forgotten beyond `max_entries`);
- a restart forgets everything, and two instances of the event app do not share what they applied;
- so the guard only narrows the window. The processors do not rely on it alone: they re-read the resource from
  commercetools and send its *current* state, and an unpublish is skipped when the product is published again.
- A missing version (None) is never stale and is not recorded. Equal versions are not stale: a redelivery of
  the message already applied is simply applied again (the writes are idempotent).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_MAX_ENTRIES = 10_000


class VersionGuard:
    """A thread-safe, bounded LRU map (resource type, id) → highest version applied."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._versions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def last(self, resource_type: str, resource_id: str) -> int | None:
        """The highest version applied for this resource, if this process remembers one."""
        with self._lock:
            return self._versions.get((resource_type, resource_id))

    def is_stale(self, resource_type: str, resource_id: str, version: int | None) -> bool:
        """True when a newer version of this resource was already applied."""
        if not _is_version(version):
            return False
        with self._lock:
            key = (resource_type, resource_id)
            last = self._versions.get(key)
            if last is None:
                return False
            self._versions.move_to_end(key)
            return version < last  # type: ignore[operator]

    def stale_reason(self, resource_type: str, resource_id: str, version: int | None) -> str | None:
        """`is_stale` as a processor's ignore reason (None: go ahead)."""
        if not self.is_stale(resource_type, resource_id, version):
            return None
        last = self.last(resource_type, resource_id)
        return f"{resource_type} version {version} is older than version {last}, already applied"

    def applied(self, resource_type: str, resource_id: str, version: int | None) -> None:
        """Record that this version was applied (a lower version than the one remembered changes nothing)."""
        if not _is_version(version):
            return
        with self._lock:
            key = (resource_type, resource_id)
            last = self._versions.get(key)
            self._versions[key] = version if last is None else max(last, version)  # type: ignore[type-var]
            self._versions.move_to_end(key)
            while len(self._versions) > self._max:
                self._versions.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (tests; a process that wants a clean slate)."""
        with self._lock:
            self._versions.clear()


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

