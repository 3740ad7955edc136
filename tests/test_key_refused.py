"""Klaviyo refusing the API key (401/403: revoked or rotated) is an outage, not bad data: deliveries are answered
503 (they come back once the key is fixed), one ERROR line a minute at most, `GET /health` says so (still 200),
and an import run stops with a clear error instead of counting every record failed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from shared.dead_letters import CONTAINER
from tests.builders import message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import import_record, make_order

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"


def created() -> dict[str, Any]:
    return message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))


def dead_letters(ct: FakeCommercetools) -> list[str]:
    return [o["key"] for o in ct.store.get("custom-objects", {}).values() if o["container"] == CONTAINER]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_an_outage_not_a_dead_letter(event_app: TestClient, ct: FakeCommercetools,
                                                      klaviyo: FakeKlaviyo, status: int,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ct.add("customers", fixture("customer"))
    assert event_app.get("/health").json()["klaviyo"] == "ok"
    klaviyo.fail_next("*", r"/api/.*", status, times=1000)
    answers = [event_app.post("/", json=pubsub(created())).status_code for _ in range(5)]
    assert answers == [503] * 5
    assert dead_letters(ct) == []
    health = event_app.get("/health")
    assert health.status_code == 200 and health.json()["klaviyo"] == "key refused"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    key_errors = [e for e in logged if e["severity"] == "ERROR"]
    assert len(key_errors) == 1 and "KLAVIYO_AUTH_KEY" in key_errors[0]["message"]  # one a minute at most
    assert all("pk_test" not in json.dumps(e) for e in logged)

    klaviyo.clear_faults()  # the key is fixed
    assert event_app.post("/", json=pubsub(created())).status_code == 204
    assert event_app.get("/health").json()["klaviyo"] == "ok"


def test_an_import_run_stops_with_a_clear_error_while_the_key_is_refused(ct: FakeCommercetools,
                                                                         klaviyo: FakeKlaviyo, cli: Cli) -> None:
    for n in range(1, 4):
        ct.add("orders", make_order(n))
    klaviyo.fail_next("*", r"/api/.*", 401, times=1000)
    code, _out, err = cli("sync", "orders")
    assert code != 0
    record = import_record(ct, "orders")
    assert record["counts"]["failed"] == 0 and record["counts"]["sent"] == 0
    assert record["status"] != "failed"  # paused: the next run resumes it once the key is fixed
    assert "refused the API key" in record["lastError"]
    posts = [r for r in klaviyo.requests if r.method == "POST"]
    assert len(posts) <= 2  # stopped at the first refusal, not one try per event

    klaviyo.clear_faults()
    code, _out, _err = cli("sync", "orders")
    assert code == 0 and import_record(ct, "orders")["status"] == "completed"


def test_a_run_of_every_import_stops_at_the_first_refusal(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                          cli: Cli) -> None:
    ct.add("orders", make_order(1))
    ct.add("categories", fixture("category_women"))
    klaviyo.fail_next("*", r"/api/.*", 403, times=1000)
    code, out, _err = cli("sync", "all")
    assert code != 0
    assert len(klaviyo.requests) == 1  # categories asked once; the other imports were not started on a dead key
    categories = import_record(ct, "categories")
    assert categories["status"] == "running" and "refused the API key" in categories["lastError"]  # resumable
    assert "refused the API key" in out
    assert import_record(ct, "orders")["counts"]["failed"] == 0
