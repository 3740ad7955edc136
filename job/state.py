"""Import requests, progress and locks, kept in commercetools custom objects (one per import type).

Every write is conditioned on the object's `version`, so two writers never overwrite each other silently. The
runner holds a lease (owner + expiry) that it renews with every checkpoint and from a background thread between
them (`renew`), so the lease can be short: a runner that died frees the import once its lease expires (a minute by
default), with no hand work. A stop request wins over a runner: the runner's next save finds the
new version, re-reads, sees `cancelled` and stops; a new request made after its lease expired also wins.
Dry runs keep their records in a container of their own, so they never replace, resume or show as real imports.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.commercetools import Commercetools
from shared.errors import Conflict

CONTAINER = "klaviyo-connector-imports"
DRY_RUN_CONTAINER = "klaviyo-connector-imports-dry-run"  # dry runs never touch (or resume) real imports
IMPORT_TYPES = ("categories", "products", "customers", "orders")  # also the order of `all`
ACTIVE = ("requested", "running")
COUNT_NAMES = ("read", "sent", "skipped", "failed")


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime, timespec: str = "seconds") -> str:
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Busy(Exception):
    """The import is running under a live lease (or another writer got there first)."""


class Cancelled(Exception):
    """The import was stopped while this runner worked on it."""


@dataclass
class ImportRecord:
    type: str
    status: str = "requested"
    request: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))
    requested_at: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)
    lease: dict[str, str] | None = None
    version: int | None = None  # the custom object's version, None before the first write

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> ImportRecord:
        value = obj["value"]
        return cls(
            type=value["type"], status=value["status"], request=value.get("request") or {},
            checkpoint=value.get("checkpoint") or {},
            counts={**dict.fromkeys(COUNT_NAMES, 0), **(value.get("counts") or {})},
            requested_at=value.get("requestedAt"), started_at=value.get("startedAt"),
            updated_at=value.get("updatedAt"), finished_at=value.get("finishedAt"),
            last_error=value.get("lastError"), errors=value.get("errors") or [], lease=value.get("lease"),
            version=obj["version"],
        )

    def to_value(self) -> dict[str, Any]:
        return {
            "type": self.type, "status": self.status, "request": self.request, "checkpoint": self.checkpoint,
            "counts": self.counts, "requestedAt": self.requested_at, "startedAt": self.started_at,
            "updatedAt": self.updated_at, "finishedAt": self.finished_at, "lastError": self.last_error,
            "errors": self.errors[-20:], "lease": self.lease,
        }

    def lease_live(self, at: datetime | None = None) -> bool:
        return bool(self.lease) and parse_iso(self.lease["expiresAt"]) > (at or now())

    def holder(self) -> str:
        """Who holds the lease and until when, for messages (the owner is a host name, process id and token)."""
        lease = self.lease or {}
        return f"runner {lease.get('owner', '?')} until {lease.get('expiresAt', '?')}"

    def summary(self) -> dict[str, Any]:
        value = self.to_value()
        value.pop("lease")
        value["running"] = self.status == "running" and self.lease_live()
        return value


class ImportStore:
    def __init__(self, commercetools: Commercetools, lease_seconds: float = 120.0,
                 container: str = CONTAINER) -> None:
        self._ct = commercetools
        self.lease_seconds = lease_seconds
        self.container = container

    def get(self, import_type: str) -> ImportRecord | None:
        obj = self._ct.get_custom_object(self.container, import_type)
        return ImportRecord.from_object(obj) if obj else None

    def all(self) -> Iterator[ImportRecord]:
        for import_type in IMPORT_TYPES:
            record = self.get(import_type)
            if record:
                yield record

    def _write(self, record: ImportRecord) -> ImportRecord:
        """Write conditioned on `record.version`; `Conflict` when the object changed meanwhile.

        A conflict answered to a retried write whose first attempt went through is not one: the stored value
        is then exactly ours, and the write counts as done.
        """
        record.updated_at = iso(now())
        value = record.to_value()
        try:
            obj = self._ct.put_custom_object(self.container, record.type, value,
                                             version=record.version if record.version is not None else 0)
        except Conflict:
            obj = self._ct.get_custom_object(self.container, record.type)
            if obj is None or _without_nulls(obj["value"]) != _without_nulls(value):
                raise
        record.version = obj["version"]
        return record

    def request(self, import_type: str, options: dict[str, Any]) -> ImportRecord:
        """Record a new request; `Busy` when one of this type is running under a live lease.

        The same request as an unfinished import (stopped by its time budget, a transient failure or a dead
        runner) resumes it from its checkpoint instead of starting over: nothing is sent twice.
        """
        current = self.get(import_type)
        if current and current.status == "running" and current.lease_live():
            raise Busy(f"the {import_type} import is running: its lock is held by {current.holder()}")
        if current and current.status in ACTIVE and current.request == options:
            return current
        record = ImportRecord(type=import_type, request=copy.deepcopy(options), requested_at=iso(now()),
                              version=current.version if current else None)
        try:
            return self._write(record)
        except Conflict:
            raise Busy(f"the {import_type} import changed meanwhile; try again") from None

    def cancel(self, import_type: str) -> ImportRecord | None:
        """Mark an active import cancelled; None when there is nothing active to stop."""
        for _ in range(5):
            current = self.get(import_type)
            if current is None or current.status not in ACTIVE:
                return None
            current.status, current.finished_at, current.lease = "cancelled", iso(now()), None
            try:
                return self._write(current)
            except Conflict:
                continue  # the runner saved a checkpoint meanwhile: read again and retry
        raise Busy(f"could not stop the {import_type} import; try again")

    def acquire(self, import_type: str, owner: str) -> ImportRecord | None:
        """Take the lease of an active import; None when there is none or another runner holds it."""
        current = self.get(import_type)
        if current is None or current.status not in ACTIVE:
            return None
        if current.lease_live() and current.lease["owner"] != owner:
            return None
        if current.status == "requested":
            current.started_at = iso(now())
            current.checkpoint, current.counts = {}, dict.fromkeys(COUNT_NAMES, 0)
            current.errors, current.last_error = [], None
        current.status = "running"
        current.lease = self._lease(owner)
        try:
            return self._write(current)
        except Conflict:
            return None  # another runner won the race

    def save(self, record: ImportRecord, owner: str, *, release: bool = False) -> ImportRecord:
        """Checkpoint and renew the lease (or free it: `release`); `Cancelled` when it was stopped meanwhile."""
        record.lease = self._lease(owner) if record.status == "running" and not release else None
        try:
            return self._write(record)
        except Conflict:
            current = self.get(record.type)
            if current is None or current.status == "cancelled":
                raise Cancelled(record.type) from None
            if current.status != "running" or not current.lease or current.lease.get("owner") != owner:
                # a new request (after our lease expired) or another runner: theirs wins, never overwritten
                raise Busy(f"the {record.type} import was taken over or requested again meanwhile") from None
            record.version = current.version
            return self._write(record)

    def renew(self, record: ImportRecord, owner: str) -> int | None:
        """Write `record` (exactly as last saved) again with a fresh lease; the object's new version, or None when
        it changed meanwhile (stopped, requested again, taken over: the runner's next save finds out which)."""
        renewed = copy.deepcopy(record)
        renewed.lease = self._lease(owner)
        try:
            return self._write(renewed).version
        except Conflict:
            return None

    def _lease(self, owner: str) -> dict[str, str]:
        return {"owner": owner, "expiresAt": iso(now() + timedelta(seconds=self.lease_seconds), "milliseconds")}


def _without_nulls(value: Any) -> Any:
    """A JSON value without null members (commercetools may drop them when it stores a custom object)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
