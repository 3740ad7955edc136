"""What the job tests share: building commercetools data, the expected Klaviyo events, running the job service.

No tests here; `tests/test_job_*.py` import from this module (their fixtures, `services` among them, are in
`tests/conftest.py`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from job.service import JobService
from shared.ownership import CATEGORY_CONTAINER, mark
from tests.builders import PROJECT
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

CONTAINER = "klaviyo-connector-imports"
PREFIX = "$custom:::$default:::"
CATEGORIES = ("category_women", "category_pants", "category_jeans", "e2e_category_tops", "e2e_category_sale")
PRODUCTS = ("product_jeans", "product_shirt")
STATE_METRICS = {"Complete": "Fulfilled Order", "Confirmed": "Fulfilled Order", "Cancelled": "Cancelled Order"}


def stored(value: Any) -> Any:
    """A resource as commercetools stores it: references without the `obj` an expansion adds."""
    if isinstance(value, dict):
        return {k: stored(v) for k, v in value.items() if k != "obj"}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return value


def order_id(n: int) -> str:
    return f"0rde0000-0000-4000-8000-{n:012d}"


def make_order(n: int, *, state: str = "Open", created: str | None = None, modified: str | None = None,
               email: str | None = None, customer_id: str | None = None, payments: bool = False) -> dict[str, Any]:
    """Order number `n`: the `order_placed` fixture with its own ids (order and lines), dates and state."""
    order = stored(fixture("order_placed"))
    order["id"] = order_id(n)
    order["orderNumber"] = f"T-{n:04d}"
    order["orderState"] = state
    order["createdAt"] = created or f"2026-10-{n % 28 + 1:02d}T10:00:00.000Z"
    order["lastModifiedAt"] = modified or order["createdAt"]
    order["customerEmail"] = email or f"buyer{n}@example.com"
    if customer_id is None:
        order.pop("customerId", None)
    else:
        order["customerId"] = customer_id
    for index, line in enumerate(order["lineItems"]):
        line["id"] = f"11ne0000-0000-4000-8000-{n:08d}{index:04d}"
    if not payments:
        order.pop("paymentInfo", None)
    return order


def order_keys(order: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, unique_id) of every event the order stands for, from the test's own data: Placed Order (the order
    id), one Ordered Product per line item (the line id), and Fulfilled / Cancelled Order (the order id)."""
    keys = [("Placed Order", order["id"])] + [("Ordered Product", line["id"]) for line in order["lineItems"]]
    if order["orderState"] in STATE_METRICS:
        keys.append((STATE_METRICS[order["orderState"]], order["id"]))
    return keys


def event_key(event: dict[str, Any]) -> tuple[str, str]:
    return event["metric"]["data"]["attributes"]["name"], event["unique_id"]


def event_keys(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(event_key(e) for e in events)


def make_customer(n: int, **fields: Any) -> dict[str, Any]:
    customer = fixture("customer")
    customer.update(id=f"c0570000-0000-4000-8000-{n:012d}", email=f"customer{n}@example.com",
                    customerNumber=f"C-{n}", createdAt=f"2026-09-{n % 28 + 1:02d}T08:00:00.000Z")
    customer["lastModifiedAt"] = customer["createdAt"]
    for address in customer["addresses"]:  # a phone number of their own (Klaviyo matches profiles by it)
        for name in ("phone", "mobile"):
            if address.get(name):
                address[name] = f"+447700{n:06d}"
    customer.update(fields)
    return customer


def seed_catalog(ct: FakeCommercetools) -> None:
    for name in CATEGORIES:
        ct.add("categories", fixture(name))
    for name in PRODUCTS:
        ct.add("products", stored(fixture(name)))


def job_config(**job: Any) -> dict[str, Any]:
    return {"job": job}


def import_record(ct: FakeCommercetools, import_type: str, container: str = CONTAINER) -> dict[str, Any] | None:
    """The stored import record (the custom object's value), as commercetools holds it."""
    obj = ct.get_custom_object(container, import_type)
    return obj["value"] if obj else None


def klaviyo_writes(klaviyo: FakeKlaviyo) -> list[tuple[str, str]]:
    """Method and path of every write Klaviyo received."""
    return [(r.method, r.path) for r in klaviyo.requests if r.method != "GET"]


def ct_queries(ct: FakeCommercetools, resource: str) -> list[dict[str, list[str]]]:
    """The query parameters of every query of this commercetools resource, in order."""
    return [r.query for r in ct.find_requests("GET", rf"^/test-project/{resource}$")]


ROOT = Path(__file__).resolve().parent.parent


def process_env(env: dict[str, str], config: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `python -m job` subprocess on the fake servers (with NODE_CONFIG `config`)."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
    values = {**{k: v for k, v in os.environ.items() if k in keep}, **env, **extra}
    if config is not None:
        values["NODE_CONFIG"] = json.dumps(config)
    return values


def run_until_done(service: JobService, import_type: str, *, budget_seconds: float = 60.0,
                   max_runs: int = 50) -> list[list[dict[str, Any]]]:
    """Run the service like the scheduler does (for this import type only, so that the budget is all its own)
    until the import is no longer active; every run's summaries."""
    runs = []
    for _ in range(max_runs):
        summaries = service.run(budget_seconds=budget_seconds, types=(import_type,))
        runs.append(summaries)
        record = service.store.get(import_type)
        if record is None or record.status not in ("requested", "running"):
            return runs
    raise AssertionError(f"the {import_type} import did not finish in {max_runs} runs: {runs[-1]}")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def seed_klaviyo(klaviyo: FakeKlaviyo, kind: str, catalog_id: str, attributes: dict[str, Any],
                 relationships: dict[str, Any] | None = None) -> None:
    """Put a catalog object in the fake Klaviyo as if created earlier (by us, or by another integration)."""
    store = {"item": klaviyo.items, "variant": klaviyo.variants, "category": klaviyo.categories}[kind]
    store[catalog_id] = {"attributes": dict(attributes), "relationships": dict(relationships or {})}


def seed_ours(klaviyo: FakeKlaviyo, ct: FakeCommercetools, kind: str, catalog_id: str, attributes: dict[str, Any],
              relationships: dict[str, Any] | None = None, *, product_id: str | None = None) -> None:
    """A catalog object written earlier by the connector for this project: an item or variant with our mark in
    its custom_metadata (`product_id`: the product it belongs to, the item's own id by default), a category with
    our record in commercetools."""
    attributes = dict(attributes)
    external_id = catalog_id.removeprefix(PREFIX)
    if kind == "category":
        ct.add("custom-objects", {"container": CATEGORY_CONTAINER, "key": external_id,
                                  "value": {"categoryId": external_id}})
    else:
        attributes["custom_metadata"] = {**attributes.get("custom_metadata", {}),
                                         **mark(PROJECT, product_id or external_id)}
    seed_klaviyo(klaviyo, kind, catalog_id, attributes, relationships)
