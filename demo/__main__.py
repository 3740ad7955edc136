"""`python -m demo`: the connector end to end with no commercetools or Klaviyo account.

1. A local commercetools stand-in starts, seeded with the sample project (demo/sample.py).
2. The bulk import of everything runs (categories, products, customers, orders), Klaviyo in dry run: every
   request it would send is written to a JSON-lines file instead.
3. The event app starts on a local port and receives a handful of subscription deliveries, as Connect sends them.
4. A summary says what was read and what would have reached Klaviyo.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from demo import sample
from event.app import create_app
from job.service import JobService
from shared.config import load_settings
from shared.context import build_context
from shared.logs import configure_logging
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.commercetools_server import serve

OUT = Path("out/demo")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    requests_file = OUT / "klaviyo-requests.jsonl"
    requests_file.unlink(missing_ok=True)
    configure_logging("WARNING")  # the demo prints its own story; set LOG_LEVEL=INFO to see the JSON logs
    logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "WARNING").upper())

    ct = FakeCommercetools(project_key="demo-shop", client_id="demo-client", client_secret="demo-secret")
    for resource, objects in sample.project().items():
        for obj in objects:
            ct.add(resource, obj)
    ct_server, ct_url = serve(ct)
    settings = load_settings({
        "CT_API_URL": ct_url, "CT_AUTH_URL": ct_url, "CT_PROJECT_ID": "demo-shop",
        "CT_API_CLIENT": json.dumps({"clientId": "demo-client", "secret": "demo-secret"}),
        "PREFERRED_LOCALE": "en-US", "PREFERRED_CURRENCY": "EUR",
        "PRODUCT_URL_TEMPLATE": "https://shop.example.com/products/{{productSlug}}",
        "NODE_CONFIG": json.dumps({"dryRun": {"enabled": True, "file": str(requests_file)},
                                   "product": {"inventory": {"useChannelInventory": sample.CHANNEL}}}),
        "LOG_LEVEL": "WARNING",
    })
    print(f"commercetools stand-in on {ct_url} with the sample project; Klaviyo in dry run\n")

    print("1. Bulk import of everything (what the job application runs on its schedule)")
    service = JobService(build_context(settings))
    service.request("all", {})
    summaries = service.run(budget_seconds=600, progress=_progress)
    print("\r" + " " * 60 + "\r", end="")
    for s in summaries:
        c = s["counts"]
        print(f"   {s['type']:<11} {s['status']:<10} read {c['read']:>3}  sent {c['sent']:>3}  "
              f"skipped {c['skipped']:>2}  failed {c['failed']:>2}")

    print("\n2. Realtime deliveries to the event application (Pub/Sub push envelopes over HTTP)")
    server, url = _serve_event_app(settings)
    try:
        for label, notification in _deliveries(ct):
            body = {"message": {"data": base64.b64encode(json.dumps(notification).encode()).decode(),
                                "messageId": str(uuid.uuid4().int)[:16]}, "subscription": "demo"}
            response = httpx.post(url, json=body, timeout=30)
            outcome = response.headers.get("X-Outcome", "")
            reason = "" if outcome == "processed" else f" ({response.headers.get('X-Outcome-Reason')})"
            print(f"   {response.status_code}  {label:<42} {outcome}{reason}")
    finally:
        server.should_exit = True
        ct_server.shutdown()

    print("\n3. What would have reached Klaviyo")
    for what, count in sorted(_summarise(requests_file).items()):
        print(f"   {count:>4}  {what}")
    print(f"\nEvery request, with its JSON body, is in {requests_file.resolve()}")
    return 0


def _progress(record: Any, _elapsed: float) -> None:
    print(f"\r   {record.type:<11} read {record.counts['read']}", end="", flush=True)


def _serve_event_app(settings: Any) -> tuple[uvicorn.Server, str]:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


def _message(resource: str, resource_id: str, message_type: str, **fields: Any) -> dict[str, Any]:
    return {"notificationType": "Message", "projectKey": "demo-shop", "id": str(uuid.uuid4()), "version": 1,
            "sequenceNumber": 2, "resource": {"typeId": resource, "id": resource_id}, "resourceVersion": 9,
            "type": message_type, "createdAt": sample.iso(sample.START.replace(month=11)), **fields}


def _deliveries(ct: FakeCommercetools) -> list[tuple[str, dict[str, Any]]]:
    """A handful of realistic deliveries; the stand-in's data is changed first, as commercetools would."""
    new_customer = sample.customers(4)[3]
    ct.add("customers", new_customer)
    new_order = list(sample.orders(5))[4]
    new_order["orderState"] = "Open"
    ct.add("orders", new_order)
    first_order = sample.uid("order", 0)
    ct.store["orders"][first_order]["orderState"] = "Complete"
    payment = ct.store["payments"][sample.uid("payment", 1)]
    refund = {"id": sample.uid("transaction", "Refund", 9), "type": "Refund", "amount": sample.money(500),
              "state": "Success", "timestamp": sample.iso(sample.START.replace(month=11))}
    payment["transactions"].append(refund)
    entry = ct.store["inventory"][sample.uid("inventory", "OXFORD-SHIRT-M")]
    entry.update(quantityOnStock=0, availableQuantity=0, version=3)
    product = sample.uid("product", "slim-jeans")
    return [
        ("CustomerCreated (a new customer)", _message("customer", new_customer["id"], "CustomerCreated",
                                                      customer=new_customer)),
        ("OrderCreated (3 lines)", _message("order", new_order["id"], "OrderCreated", order=new_order)),
        ("OrderStateChanged to Complete", _message("order", first_order, "OrderStateChanged",
                                                   orderState="Complete", oldOrderState="Open")),
        ("PaymentTransactionAdded (a third refund)", _message("payment", payment["id"], "PaymentTransactionAdded",
                                                              transaction=refund)),
        ("ProductPublished", _message("product", product, "ProductPublished")),
        ("inventory ResourceUpdated (sold out)", {"notificationType": "ResourceUpdated", "projectKey": "demo-shop",
                                                  "resource": {"typeId": "inventory-entry", "id": entry["id"]},
                                                  "resourceUserProvidedIdentifiers": {"sku": entry["sku"]},
                                                  "version": 3, "oldVersion": 2, "modifiedAt": refund["timestamp"]}),
        ("subscription test notification", {"notificationType": "ResourceCreated", "projectKey": "demo-shop",
                                            "resource": {"typeId": "subscription", "id": str(uuid.uuid4())},
                                            "version": 1, "modifiedAt": refund["timestamp"]}),
    ]


def _summarise(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        method, api_path, body = request["method"], request["path"], request["body"] or {}
        data = body.get("data") or {}
        if api_path == "/api/events":
            counts[f"event     {_metric(data['attributes'])}"] += 1
        elif api_path == "/api/event-bulk-create-jobs":
            for entry in data["attributes"]["events-bulk-create"]["data"]:
                for event in entry["attributes"]["events"]["data"]:
                    counts[f"event     {_metric(event['attributes'])}"] += 1
        elif api_path in ("/api/profile-import", "/api/profile-bulk-import-jobs"):
            rows = data["attributes"]["profiles"]["data"] if api_path.endswith("jobs") else [data]
            counts["profile   create or update"] += len(rows)
        elif api_path.endswith("-jobs"):
            (rows,) = data["attributes"].values()
            kind = data["type"].removeprefix("catalog-").removesuffix("-job").replace("-bulk-", " ")
            counts[f"catalog   {kind}"] += len(rows["data"])
        else:
            kind = api_path.split("/")[2].removeprefix("catalog-").rstrip("s")
            counts[f"catalog   {kind} {dict(POST='create', PATCH='update', DELETE='delete')[method]}"] += 1
    return counts


def _metric(attributes: dict[str, Any]) -> str:
    return attributes["metric"]["data"]["attributes"]["name"]


if __name__ == "__main__":
    sys.exit(main())
