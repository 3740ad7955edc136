"""Erasure records: a customer deleted with `customer.deletion.enabled` stays erased.

After a deletion, any later event about the person (a state change or refund of an old order, a bulk re-import,
a dead-letter replay) would create the Klaviyo profile again: events carry the email, and Klaviyo creates
profiles from events. So each erased customer gets a record (commercetools custom object, container
`klaviyo-connector-erasures`, key = the customer id) holding:

- `customerId`: orders of the customer carry it;
- `emailHash`: HMAC-SHA256 of the lower-cased email, never the email itself, so that guest orders placed with
  that email (no customer id) are recognised too;
- `erasedAt`.

The HMAC key is 32 random octets made once per commercetools project and kept in a custom object
(`klaviyo-connector-keys` / `erasure-hmac`), created with a version-checked create (`version: 0`: only if it does
not exist), so that every instance, the event app and the job alike, agrees on it; the loser of a race reads the
winner's. It depends on no credential, so rotating the Klaviyo key or the commercetools client changes nothing.
A keyed hash rather than a plain one: the emails a shop sees are guessable, and a plain SHA-256 of each could be
matched against a list; without the key (which stays in the project) the hashes say nothing.

Cost: a realtime order delivery makes one more commercetools read (the record by customer id, or for a guest
order one query by hash); the key is read once per process and kept. A process also remembers, for
`REMEMBER_SECONDS`, what it found erased: that memory can only skip more (it can never bring a profile back); not
erased is never remembered, since another instance may erase the customer at any moment. Bulk imports look up a
page's ids and hashes in batched queries (`IN_VALUES` values each). Where the order's customer is read
anyway (`shared.order_customers`), a customer who exists was never erased: the record is looked up only for one
gone from commercetools.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from shared.commercetools import IN_VALUES, Commercetools, literal, object_key
from shared.dead_letter_store import remove_mentioning
from shared.errors import Conflict

log = logging.getLogger(__name__)

CONTAINER = "klaviyo-connector-erasures"
KEY_CONTAINER = "klaviyo-connector-keys"
KEY_NAME = "erasure-hmac"
REMEMBER_SECONDS = 300.0
REASON = "the customer was erased (erasure record): nothing is sent about them"


def normalised(email: str) -> str:
    """Klaviyo matches emails case-insensitively; so do the hashes."""
    return email.strip().lower()


class Erasures:
    """One per process (in `shared.processors.Context`): the HMAC key once read, and the ids and hashes found
    erased lately."""

    def __init__(self, remember_seconds: float = REMEMBER_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._remember, self._clock = remember_seconds, clock
        self._key: bytes | None = None
        self._erased: dict[str, float] = {}  # "id:<customer id>" / "hash:<hex>" -> until when
        self._lock = threading.Lock()

    # --- the key ------------------------------------------------------------------------------------------------

    def key(self, commercetools: Commercetools) -> bytes:
        if self._key is None:
            stored = commercetools.get_custom_object(KEY_CONTAINER, KEY_NAME)
            if stored is None:
                value = {"algorithm": "HMAC-SHA256", "key": base64.b64encode(secrets.token_bytes(32)).decode(),
                         "createdAt": _now()}
                try:
                    stored = commercetools.put_custom_object(KEY_CONTAINER, KEY_NAME, value, version=0)
                except Conflict:  # another instance created it first: use theirs
                    stored = commercetools.get_custom_object(KEY_CONTAINER, KEY_NAME)
                    if stored is None:
                        raise
            self._key = base64.b64decode(stored["value"]["key"])
        return self._key

    def email_hash(self, commercetools: Commercetools, email: str) -> str:
        return hmac.new(self.key(commercetools), normalised(email).encode(), hashlib.sha256).hexdigest()

    # --- memory -------------------------------------------------------------------------------------------------

    def _remembered(self, name: str) -> bool:
        with self._lock:
            until = self._erased.get(name)
            if until is None:
                return False
            if until < self._clock():
                del self._erased[name]
                return False
            return True

    def _note(self, names: Iterable[str]) -> None:
        with self._lock:
            until = self._clock() + self._remember
            for name in names:
                self._erased[name] = until

    def forget(self) -> None:
        with self._lock:
            self._erased.clear()

    # --- writing ------------------------------------------------------------------------------------------------

    def record(self, commercetools: Commercetools, customer_id: str, email: str | None) -> dict[str, Any]:
        """Create (or complete) the customer's erasure record, then remove the dead letters holding their data."""
        key = object_key(customer_id)
        existing = commercetools.get_custom_object(CONTAINER, key)
        old = existing["value"] if existing else {}
        value = {"customerId": customer_id, "erasedAt": old.get("erasedAt") or _now()}
        # a redelivery (or the other deletion notification) may find the profile gone: the first hash stays
        email_hash = old.get("emailHash") or (self.email_hash(commercetools, email) if email else None)
        if email_hash:
            value["emailHash"] = email_hash
        commercetools.put_custom_object(CONTAINER, key, value)
        self._note([f"id:{customer_id}", *([f"hash:{email_hash}"] if email_hash else [])])
        removed = remove_mentioning(commercetools, [customer_id, *([email] if email else [])])
        log.info("customer erased: erasure record kept", extra={"customer_id": customer_id,
                                                                "dead_letters_removed": removed})
        return value

    # --- reading ------------------------------------------------------------------------------------------------

    def customer_erased(self, commercetools: Commercetools, customer_id: str) -> bool:
        """One read (none when remembered)."""
        if self._remembered(f"id:{customer_id}"):
            return True
        if commercetools.get_custom_object(CONTAINER, object_key(customer_id)) is None:
            return False
        self._note([f"id:{customer_id}"])
        return True

    def order_erased(self, commercetools: Commercetools, order: dict[str, Any]) -> bool:
        """An order of an erased customer, or a guest order with an erased email (one read either way)."""
        if order.get("customerId"):
            return self.customer_erased(commercetools, order["customerId"])
        email = order.get("customerEmail")
        if not email:
            return False
        digest = self.email_hash(commercetools, email)
        if self._remembered(f"hash:{digest}"):
            return True
        if not commercetools.query(f"custom-objects/{CONTAINER}", where=[f"value(emailHash = {literal(digest)})"],
                                   limit=1):
            return False
        self._note([f"hash:{digest}"])
        return True

    def erased_orders(self, commercetools: Commercetools, orders: list[dict[str, Any]]) -> set[str]:
        """The ids of these orders that `order_erased` would skip, in batched queries (bulk import)."""
        by_customer: dict[str, list[str]] = {}
        by_hash: dict[str, list[str]] = {}
        for order in orders:
            if order.get("customerId"):
                by_customer.setdefault(order["customerId"], []).append(order["id"])
            elif order.get("customerEmail"):
                digest = self.email_hash(commercetools, order["customerEmail"])
                by_hash.setdefault(digest, []).append(order["id"])
        ids, hashes = self.erased(commercetools, by_customer, by_hash)
        return {order_id for c in ids for order_id in by_customer[c]} | \
            {order_id for h in hashes for order_id in by_hash[h]}

    def erased(self, commercetools: Commercetools, customer_ids: Iterable[str], hashes: Iterable[str] = (),
               ) -> tuple[set[str], set[str]]:
        """Which of these customer ids and email hashes are erased: queries of `IN_VALUES` values."""
        wanted = [("id", k) for k in sorted(set(customer_ids))] + [("hash", h) for h in sorted(set(hashes))]
        found_ids: set[str] = set()
        found_hashes: set[str] = set()
        for start in range(0, len(wanted), IN_VALUES):
            chunk = wanted[start:start + IN_VALUES]
            keys = [object_key(v) for kind, v in chunk if kind == "id"]
            digests = [v for kind, v in chunk if kind == "hash"]
            clauses = ([f"key in ({', '.join(literal(k) for k in keys)})"] if keys else []) + \
                ([f"value(emailHash in ({', '.join(literal(h) for h in digests)}))"] if digests else [])
            for obj in commercetools.custom_objects(CONTAINER, where=[" or ".join(clauses)]):
                value = obj.get("value") or {}
                if value.get("customerId"):
                    found_ids.add(value["customerId"])
                if value.get("emailHash"):
                    found_hashes.add(value["emailHash"])
        found_ids &= {v for kind, v in wanted if kind == "id"}
        found_hashes &= {v for kind, v in wanted if kind == "hash"}
        self._note([*(f"id:{i}" for i in found_ids), *(f"hash:{h}" for h in found_hashes)])
        return found_ids, found_hashes


def entries(commercetools: Commercetools) -> list[dict[str, Any]]:
    """Every erasure record (value plus `key`), oldest first."""
    found = [{**obj["value"], "key": obj["key"], "version": obj["version"]}
             for obj in commercetools.custom_objects(CONTAINER)]
    return sorted(found, key=lambda e: e.get("erasedAt", ""))


def remove(commercetools: Commercetools, key: str) -> bool:
    """Delete one erasure record; False when there was none."""
    if commercetools.get_custom_object(CONTAINER, key) is None:
        return False
    commercetools.delete_custom_object(CONTAINER, key)
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
