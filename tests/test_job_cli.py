"""`python -m job ...`: sync, request, run, status and stop from the command line, and dry runs that send nothing
to Klaviyo. The commands run in-process (`job.__main__.main`) with the environment pointing at the fakes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from job.service import JobService
from job.state import ImportStore
from tests.conftest import Cli
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import (
    PREFIX,
    ROOT,
    event_key,
    event_keys,
    import_record,
    make_customer,
    make_order,
    order_keys,
    seed_catalog,
    seed_ours,
)

DRY_RUN = "klaviyo-connector-imports-dry-run"


def table(out: str) -> dict[str, list[str]]:
    """The status table printed by the commands, by import type (type → the other columns)."""
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return {row[0]: row[1:] for row in rows if row and row[0] in ("categories", "products", "customers", "orders")}


def seed_orders(ct: FakeCommercetools, count: int) -> list[dict[str, Any]]:
    orders = [make_order(n) for n in range(1, count + 1)]
    for order in orders:
        ct.add("orders", order)
    return orders


def test_sync_runs_an_import_in_the_foreground(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    orders = seed_orders(ct, 3)

    code, out, err = cli("sync", "orders", "--ids", orders[0]["id"], orders[1]["id"],
                         config={"job": {"pageSize": 1}})

    assert code == 0
    assert table(out)["orders"][:5] == ["completed", "2", str(sum(len(order_keys(o)) for o in orders[:2])), "0", "0"]
    assert err.splitlines()[-1].startswith("orders: 2 of 2 (100.0 %), sent 8, ")  # progress against the total
    assert event_keys(klaviyo.events) == Counter(order_keys(orders[0]) + order_keys(orders[1]))
    assert import_record(ct, "orders")["request"] == {"ids": [orders[0]["id"], orders[1]["id"]]}


def test_sync_with_filters_from_flags(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    for n, created in ((1, "2026-01-05T00:00:00.000Z"), (2, "2026-02-05T00:00:00.000Z"),
                       (3, "2026-03-05T00:00:00.000Z")):
        ct.add("orders", make_order(n, created=created, modified="2026-04-01T00:00:00.000Z"))

    code, _out, _err = cli("sync", "orders", "--created-from", "2026-02-01T00:00:00Z", "--created-to",
                           "2026-03-01T00:00:00Z", "--modified-from", "2026-03-31T00:00:00Z", "--start-id",
                           make_order(2)["id"])

    assert code == 0
    assert {uid for metric, uid in event_keys(klaviyo.events) if metric == "Placed Order"} == {make_order(2)["id"]}
    assert import_record(ct, "orders")["request"] == {
        "startId": make_order(2)["id"], "createdFrom": "2026-02-01T00:00:00.000Z",
        "createdTo": "2026-03-01T00:00:00.000Z", "modifiedFrom": "2026-03-31T00:00:00.000Z"}


def test_delete_all_needs_the_type_repeated(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    seed_ours(klaviyo, ct, "category", f"{PREFIX}c1", {"external_id": "c1", "name": "C"})

    code, out, err = cli("sync", "categories", "--delete-all")
    assert code == 2 and 'confirm it with "confirmDeletion": "categories"' in err
    code, out, err = cli("sync", "categories", "--delete-all", "--confirm", "products")
    assert code == 2 and klaviyo.categories != {}

    code, out, _err = cli("sync", "categories", "--delete-all", "--confirm", "categories")
    assert code == 0 and table(out)["categories"][:4] == ["completed", "1", "1", "0"]
    assert klaviyo.categories == {}


def test_request_status_run_and_stop(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    ct.add("customers", make_customer(1))
    orders = seed_orders(ct, 1)

    assert cli("status")[:2] == (0, "no imports\n")
    assert cli("request", "customers") == (0, "customers: requested\n", "")
    assert cli("request", "orders", "--ids", orders[0]["id"])[0] == 0
    code, out, _err = cli("status")
    assert code == 0 and {t: row[0] for t, row in table(out).items()} == {"customers": "requested",
                                                                         "orders": "requested"}
    assert klaviyo.requests == []  # only recorded

    assert cli("stop", "customers") == (0, "customers: cancelled\n", "")
    assert cli("stop", "customers") == (1, "no customers import is running\n", "")
    code, out, _err = cli("run")
    assert code == 0 and list(table(out)) == ["orders"] and table(out)["orders"][0] == "completed"
    assert klaviyo.profiles == {}  # the cancelled customers import did not run
    assert event_keys(klaviyo.events) == Counter(order_keys(orders[0]))


def test_sync_says_when_another_runner_holds_the_import(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli,
                                                        services: Callable[..., JobService]) -> None:
    service = services()
    service.request("orders", {})
    ImportStore(service.context.commercetools, lease_seconds=600).acquire("orders", "another-runner")

    code, _out, err = cli("sync", "orders", "--no-wait")

    assert code == 3
    assert err.startswith("error: the orders import is running: its lock is held by runner another-runner until ")
    assert klaviyo.requests == []


def test_a_bad_flag_is_refused_before_anything_is_done(ct: FakeCommercetools, cli: Cli) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("sync", "payments")
    assert exit_info.value.code == 2
    assert cli("sync", "categories", "--created-from", "2026-01-01T00:00:00Z")[0] == 2
    assert ct.find_requests("POST", "custom-objects") == []


# --- dry run ----------------------------------------------------------------------------------------------------


def dry_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_a_dry_run_writes_the_requests_and_sends_nothing(ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli,
                                                         tmp_path: Path) -> None:
    orders = seed_orders(ct, 3)
    out_file = tmp_path / "dry" / "klaviyo.jsonl"

    code, out, _err = cli("sync", "orders", "--dry-run",
                          config={"job": {"pageSize": 2}, "dryRun": {"file": str(out_file)}})

    assert code == 0
    assert f"dry run: nothing was sent; the requests are in {out_file}" in out
    assert klaviyo.requests == []
    lines = dry_lines(out_file)
    assert [(line["method"], line["path"]) for line in lines] == [("POST", "/api/event-bulk-create-jobs")] * 2
    events = [{**event["attributes"], "profile": entry["attributes"]["profile"]}
              for line in lines for entry in line["body"]["data"]["attributes"]["events-bulk-create"]["data"]
              for event in entry["attributes"]["events"]["data"]]
    assert Counter(event_key(e) for e in events) == Counter(k for o in orders for k in order_keys(o))


def test_a_dry_run_of_the_catalog_writes_every_job_and_sends_nothing(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli, tmp_path: Path,
        services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    out_file = tmp_path / "catalog.jsonl"
    pending = services().request("products", {"startId": "a"})[0].summary()  # a real import, waiting

    code, _out, _err = cli("sync", "all", "--dry-run", config={"dryRun": {"file": str(out_file)}})

    assert code == 0 and klaviyo.requests == []
    paths = Counter(line["path"] for line in dry_lines(out_file))
    assert paths == {"/api/catalog-category-bulk-create-jobs": 1, "/api/catalog-item-bulk-create-jobs": 1,
                     "/api/catalog-variant-bulk-create-jobs": 1}
    items = next(line for line in dry_lines(out_file) if "item" in line["path"])["body"]["data"]["attributes"]
    assert sorted(i["attributes"]["external_id"] for i in items["items"]["data"]) == sorted(
        p["id"] for p in (ct.get("products", i) for i in ct.store["products"]))
    # A dry run keeps its state apart: it neither replaces nor resumes real imports, nor shows among them.
    assert {import_record(ct, t, DRY_RUN)["status"] for t in ("categories", "products", "customers", "orders")} \
        == {"completed"}
    assert [import_record(ct, t) for t in ("categories", "customers", "orders")] == [None] * 3
    assert import_record(ct, "products")["status"] == "requested"
    assert import_record(ct, "products")["requestedAt"] == pending["requestedAt"]
    assert [row[0] for row in table(cli("status")[1]).values()] == ["requested"]


def test_python_m_job_runs_as_a_program(ct: FakeCommercetools, klaviyo: FakeKlaviyo, env: dict[str, str]) -> None:
    orders = seed_orders(ct, 1)
    result = subprocess.run([sys.executable, "-m", "job", "sync", "orders"], cwd=ROOT,
                            env={**env, "LOG_LEVEL": "ERROR"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert table(result.stdout)["orders"][0] == "completed"
    assert event_keys(klaviyo.events) == Counter(order_keys(orders[0]))
    assert env["KLAVIYO_AUTH_KEY"] not in result.stdout + result.stderr  # no secret in the output
