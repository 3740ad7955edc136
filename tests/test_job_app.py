"""The job application's HTTP surface: the reference's management routes behind BULK_API_TOKEN, and `POST /` for
Connect's scheduler. Imports requested through the routes run in the background against the fake servers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from job.app import create_app
from job.service import JobService
from job.state import ImportStore
from shared.config import Settings
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import (
    PREFIX,
    event_keys,
    import_record,
    job_config,
    make_customer,
    make_order,
    order_keys,
    seed_catalog,
    seed_ours,
)

TOKEN = "bulk-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = [("POST", "/sync/orders"), ("POST", "/sync/orders/stop"), ("GET", "/sync/status")]


@pytest.fixture
def app(configure: Callable[..., Settings], started: Callable[[Any], TestClient]) -> Callable[..., TestClient]:
    """`app(config=None, token=TOKEN)`: the job app on the fake servers (closed afterwards)."""

    def make(config: dict[str, Any] | None = None, token: str | None = TOKEN) -> TestClient:
        extra = {"BULK_API_TOKEN": token} if token is not None else {}
        return started(create_app(configure(config, **extra)))

    return make


def wait_for(client: TestClient, *import_types: str) -> dict[str, dict[str, Any]]:
    """GET /sync/status until these imports are no longer active (they run in the background)."""
    give_up = time.monotonic() + 20
    while True:
        response = client.get("/sync/status", headers=AUTH)
        assert response.status_code == 200
        found = {s["type"]: s for s in response.json()["imports"]}
        if all(found.get(t, {}).get("status") not in ("requested", "running") for t in import_types):
            return found
        if time.monotonic() > give_up:
            raise AssertionError(f"still active: {found}")
        time.sleep(0.02)


def seed_orders(ct: FakeCommercetools, count: int) -> list[dict[str, Any]]:
    orders = [make_order(n) for n in range(1, count + 1)]
    for order in orders:
        ct.add("orders", order)
    return orders


# --- the token --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_the_routes_are_off_while_no_token_is_configured(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                         app: Callable[..., TestClient], method: str,
                                                         path: str) -> None:
    client = app(token=None)
    response = client.request(method, path, headers=AUTH)
    assert response.status_code == 403
    assert "BULK_API_TOKEN" in response.json()["message"]
    assert "Authorization: Bearer" in response.json()["message"]
    assert ct.requests == [] and klaviyo.requests == []


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                                           "Bearer ", TOKEN])
def test_the_routes_refuse_a_missing_or_wrong_token(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                    app: Callable[..., TestClient], method: str, path: str,
                                                    authorization: str | None) -> None:
    client = app()
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert ct.requests == [] and klaviyo.requests == []


# --- POST /sync/{type} ------------------------------------------------------------------------------------------


def test_sync_accepts_the_request_and_runs_it_in_the_background(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                                app: Callable[..., TestClient]) -> None:
    orders = seed_orders(ct, 3)
    client = app(job_config(pageSize=2))

    response = client.post("/sync/orders", headers=AUTH, json={"ids": [orders[0]["id"], orders[2]["id"]]})

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "orders import accepted"
    assert [(s["type"], s["status"], s["request"]) for s in body["imports"]] == [
        ("orders", "requested", {"ids": [orders[0]["id"], orders[2]["id"]]})]
    done = wait_for(client, "orders")["orders"]
    assert done["status"] == "completed" and done["counts"]["read"] == 2
    assert event_keys(klaviyo.events) == Counter(order_keys(orders[0]) + order_keys(orders[2]))


def test_sync_all_requests_every_type(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                      app: Callable[..., TestClient]) -> None:
    seed_catalog(ct)
    ct.add("customers", make_customer(1))
    seed_orders(ct, 1)
    client = app()

    response = client.post("/sync/all", headers=AUTH)

    assert response.status_code == 202
    assert [s["type"] for s in response.json()["imports"]] == ["categories", "products", "customers", "orders"]
    done = wait_for(client, "categories", "products", "customers", "orders")
    assert {t: s["status"] for t, s in done.items()} == dict.fromkeys(done, "completed")
    assert len(klaviyo.categories) == 5 and len(klaviyo.items) == 2 and len(klaviyo.profiles) == 1
    assert len(klaviyo.events) == 4


def test_sync_answers_409_while_the_import_runs(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                app: Callable[..., TestClient],
                                                services: Callable[..., JobService]) -> None:
    service = services()
    service.request("orders", {})
    ImportStore(service.context.commercetools, lease_seconds=600).acquire("orders", "another-runner")
    before = import_record(ct, "orders")
    client = app()

    response = client.post("/sync/orders", headers=AUTH, json={})

    assert response.status_code == 409
    assert response.json()["message"].startswith(
        "the orders import is running: its lock is held by runner another-runner until ")
    assert import_record(ct, "orders") == before
    assert klaviyo.requests == []


@pytest.mark.parametrize(("path", "body", "problem"), [
    ("/sync/orders", b"{not json", "the body is not JSON"),
    ("/sync/orders", b"[]", "the body must be a JSON object"),
    ("/sync/orders", b'{"since": "2026-01-01"}', "unknown field(s): since"),
    ("/sync/orders", b'{"deleteAll": true, "confirmDeletion": "orders"}', "deleteAll applies to categories and "
                                                                          "products only"),
    ("/sync/categories", b'{"deleteAll": true}', 'confirm it with "confirmDeletion": "categories"'),
    ("/sync/products", b'{"deleteAll": true, "confirmDeletion": "yes"}',
     'confirm it with "confirmDeletion": "products"'),
    ("/sync/all", b'{"createdFrom": "2026-01-01T00:00:00Z"}', "'createdFrom' does not apply to categories"),
    ("/sync/customers", b'{"modifiedTo": "31/01/2026"}', "ISO 8601"),
])
def test_sync_refuses_a_bad_body_with_400(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                          app: Callable[..., TestClient], path: str, body: bytes,
                                          problem: str) -> None:
    client = app()
    response = client.post(path, headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 400
    assert problem in response.json()["message"]
    assert ct.find_requests("POST", "custom-objects") == [] and klaviyo.requests == []


def test_an_unknown_type_is_not_found(app: Callable[..., TestClient]) -> None:
    client = app()
    assert client.post("/sync/payments", headers=AUTH).status_code == 404
    assert client.post("/sync/payments/stop", headers=AUTH).status_code == 404


def test_delete_all_runs_only_with_its_confirmation(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                    app: Callable[..., TestClient]) -> None:
    for n in range(3):
        seed_ours(klaviyo, ct, "category", f"{PREFIX}c{n}", {"external_id": f"c{n}", "name": "C"})
    client = app(job_config(pageSize=2))

    refused = client.post("/sync/categories", headers=AUTH, json={"deleteAll": True})
    assert refused.status_code == 400 and len(klaviyo.categories) == 3
    accepted = client.post("/sync/categories", headers=AUTH,
                           json={"deleteAll": True, "confirmDeletion": "categories"})
    assert accepted.status_code == 202

    done = wait_for(client, "categories")["categories"]
    assert done["status"] == "completed" and done["request"] == {"deleteAll": True}
    assert klaviyo.categories == {}


def test_a_request_arriving_during_a_run_is_run_too(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                   app: Callable[..., TestClient]) -> None:
    seed_catalog(ct)
    seed_orders(ct, 4)
    ct.fail_next("GET", r"^/test-project/orders$", 200, delay=0.1, times=1000)
    client = app(job_config(pageSize=1))
    assert client.post("/sync/orders", headers=AUTH).status_code == 202
    give_up = time.monotonic() + 20
    while (import_record(ct, "orders") or {}).get("status") != "running" and time.monotonic() < give_up:
        time.sleep(0.01)

    # categories come before orders in a run: the run under way has passed them already
    assert client.post("/sync/categories", headers=AUTH).status_code == 202

    done = wait_for(client, "orders", "categories")
    assert done["orders"]["status"] == done["categories"]["status"] == "completed"
    assert len(klaviyo.categories) == 5


# --- stop and status --------------------------------------------------------------------------------------------


def test_stop_cancels_an_import_and_says_when_there_is_none(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                            app: Callable[..., TestClient],
                                                            services: Callable[..., JobService]) -> None:
    services().request("customers", {})  # requested, not yet run
    client = app()

    response = client.post("/sync/customers/stop", headers=AUTH)

    assert response.status_code == 200
    assert response.json()["message"] == "customers import stopped"
    assert [(s["type"], s["status"]) for s in response.json()["imports"]] == [("customers", "cancelled")]
    assert import_record(ct, "customers")["status"] == "cancelled"
    again = client.post("/sync/customers/stop", headers=AUTH)
    assert again.status_code == 400
    assert again.json()["message"] == "no customers import is currently running"
    assert client.post("/", json={}).json() == {"imports": []}  # a cancelled import is not run
    assert klaviyo.requests == []


def test_status_lists_every_import_without_its_lock(ct: FakeCommercetools, app: Callable[..., TestClient],
                                                    services: Callable[..., JobService]) -> None:
    service = services()
    service.request("orders", {"startId": "b"})
    service.request("categories", {})
    ImportStore(service.context.commercetools, lease_seconds=600).acquire("orders", "runner-x")
    client = app()

    imports = client.get("/sync/status", headers=AUTH).json()["imports"]

    assert [(s["type"], s["status"], s["running"], s["request"]) for s in imports] == [
        ("categories", "requested", False, {}), ("orders", "running", True, {"startId": "b"})]
    assert all("lease" not in s for s in imports)
    assert set(imports[1]) == {"type", "status", "request", "checkpoint", "counts", "requestedAt", "startedAt",
                               "updatedAt", "finishedAt", "lastError", "errors", "running"}


# --- POST / (the scheduler) -------------------------------------------------------------------------------------


def test_the_scheduler_works_on_pending_imports_and_answers_a_summary(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                                      app: Callable[..., TestClient],
                                                                      services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 2)
    ct.add("customers", make_customer(1))
    service = services()
    service.request("orders", {})
    service.request("customers", {})
    client = app(job_config(pageSize=1), token=None)  # the scheduler needs no token

    response = client.post("/")

    assert response.status_code == 200
    summaries = response.json()["imports"]
    assert [(s["type"], s["status"], s["counts"]["read"]) for s in summaries] == [
        ("customers", "completed", 1), ("orders", "completed", 2)]
    assert event_keys(klaviyo.events) == Counter(k for o in orders for k in order_keys(o))
    assert client.post("/").json() == {"imports": []}  # nothing pending any more


def test_the_scheduler_answers_503_while_commercetools_is_unavailable(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, app: Callable[..., TestClient]) -> None:
    client = app()
    ct.fail_next("GET", "custom-objects", 429, headers={"Retry-After": "0"}, times=100)  # after every retry

    response = client.post("/")

    assert response.status_code == 503
    assert "commercetools 429" in response.json()["message"]
    status = client.get("/sync/status", headers=AUTH)
    assert status.status_code == 503
    assert klaviyo.requests == []


def test_on_one_port_with_the_event_app_the_scheduler_runs_at_post_job(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, configure: Callable[..., Settings],
        services: Callable[..., JobService]) -> None:
    from connector.app import create_app as create_connector_app

    [order] = seed_orders(ct, 1)
    services().request("orders", {})
    with TestClient(create_connector_app(configure(BULK_API_TOKEN=TOKEN))) as client:
        # The single port also takes public deliveries: the scheduler's run needs the token there.
        assert client.post("/job").status_code == 401
        assert client.post("/job", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert klaviyo.requests == []  # nothing ran
        response = client.post("/job", headers=AUTH)
        assert response.status_code == 200
        assert [(s["type"], s["status"]) for s in response.json()["imports"]] == [("orders", "completed")]
        assert client.get("/sync/status", headers=AUTH).json()["imports"][0]["status"] == "completed"
        assert client.get("/sync/status").status_code == 401
        assert client.get("/health").json()["app"] == "event+job"
    assert event_keys(klaviyo.events) == Counter(order_keys(order))


def test_health_answers_without_a_token(ct: FakeCommercetools, app: Callable[..., TestClient]) -> None:
    response = app(token=None).get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok" and response.json()["app"] == "job"
    assert ct.requests == []
