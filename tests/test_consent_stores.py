"""Email / SMS consent and commercetools Stores, end to end on the local stand-ins (commercetools and Klaviyo as
HTTP servers; every Klaviyo request checked against its OpenAPI, subscription jobs applied asynchronously)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from event.deploy import main as deploy_main
from job.service import JobService
from shared.bulk import KlaviyoBulk
from shared.config import ConfigError, Settings
from shared.consent import CONTAINER
from shared.context import build_context, close_context
from tests.builders import change, message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_event_catalog import published
from tests.test_event_catalog import seed as seed_product
from tests.test_event_orders import ORDER_ID, seed_catalog
from tests.test_job_support import make_customer

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
EMAIL = "roberto.smith@example.com"
MOBILE = "+447700900123"  # the customer fixture's billing address mobile
NEWS, SMS_LIST, DE_NEWS = "NewsLst", "SmsLst", "DeNewsLst"
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
EMAIL_CONSENT = {"customer": {"consent": {"email": {"field": "newsletter", "listId": NEWS}}}}
BOTH = {"customer": {"consent": {"email": {"field": "newsletter", "listId": NEWS},
                                 "sms": {"field": "smsOptIn", "listId": SMS_LIST}}}}
DE_STORE = {"locale": "de-DE", "currency": "EUR", "productUrlTemplate": "https://shop.example.de/p/{{productSlug}}"}
DE_STORE_LIST = {**DE_STORE, "consent": {"email": {"listId": DE_NEWS}}}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


NOW = datetime.now(UTC)
FRESH = iso(NOW - timedelta(minutes=5))
OLD = "2026-01-10T08:30:00.000Z"


def customer(version: int = 3, modified: str = FRESH, **fields: Any) -> dict[str, Any]:
    """The customer fixture with these custom fields (None: absent), version and lastModifiedAt."""
    result = fixture("customer")
    result.update(version=version, lastModifiedAt=modified)
    custom = result["custom"]["fields"]
    del custom["newsletter"]
    for name, value in fields.items():
        if value is None:
            custom.pop(name, None)
        else:
            custom[name] = value
    return result


def custom_fields(**fields: Any) -> dict[str, Any]:
    """The customer's `custom` with these fields (and the fixture's type, which the API always has)."""
    return {"type": fixture("customer")["custom"]["type"], "fields": fields}


def put(ct: FakeCommercetools, resource: dict[str, Any]) -> None:
    """Store the customer as commercetools holds it now (replacing an earlier version)."""
    ct.store.setdefault("customers", {})[resource["id"]] = json.loads(json.dumps(resource))


def jobs(klaviyo: FakeKlaviyo, path: str) -> list[dict[str, Any]]:
    """The bodies of the accepted subscription jobs on `path` (create or delete), in order."""
    return [r.body for r in klaviyo.requests if r.method == "POST" and r.path == path and r.status == 202]


def job(channel: str, list_id: str, profiles: list[dict[str, Any]], *, subscribe: bool = True,
        historical: bool = False) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": [{"type": "profile", "attributes": p} for p in profiles]}}
    if historical:
        attributes["historical_import"] = True
    kind = "create" if subscribe else "delete"
    return {"data": {"type": f"profile-subscription-bulk-{kind}-job", "attributes": attributes,
                     "relationships": {"list": {"data": {"type": "list", "id": list_id}}}}}


def consented(email: str = EMAIL, channel: str = "email", at: str | None = None, **identity: str) -> dict:
    marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
    if at:
        marketing["consented_at"] = at
    return {"email": email, **identity, "subscriptions": {channel: {"marketing": marketing}}}


def withdrawn(email: str = EMAIL, channel: str = "email", **identity: str) -> dict:
    return {"email": email, **identity, "subscriptions": {channel: {"marketing": {"consent": "UNSUBSCRIBED"}}}}


def record(ct: FakeCommercetools, customer_id: str = CUSTOMER_ID) -> dict[str, Any] | None:
    stored = ct.get_custom_object(CONTAINER, customer_id)
    return stored["value"] if stored else None


@pytest.fixture
def app_for(configure: Callable[..., Settings],
            started: Callable[[Any], TestClient]) -> Callable[[dict[str, Any]], TestClient]:
    """`app_for(config)`: the event app with this NODE_CONFIG."""
    return lambda config: started(create_app(configure(config)))


def deliver(app: TestClient, notification: dict[str, Any]) -> int:
    return app.post("/", json=pubsub(notification)).status_code


def updated(app: TestClient, version: int) -> int:
    return deliver(app, change("ResourceUpdated", "customer", CUSTOMER_ID, version=version))


# --- realtime consent -----------------------------------------------------------------------------------------


def test_fresh_consent_subscribes_without_consented_at_and_is_recorded(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS, double_optin=True)
    app = app_for(EMAIL_CONSENT)
    fresh = customer(newsletter=True)
    put(ct, fresh)
    assert deliver(app, message("customer", CUSTOMER_ID, "CustomerCreated", customer=fresh)) == 204
    # Fresh consent: Klaviyo records the time and the double opt-in list asks the person to confirm.
    assert jobs(klaviyo, SUBSCRIBE) == [job("email", NEWS, [consented()])]
    assert record(ct) == {"version": 3, "email": True, "emailLists": [NEWS]}
    put(ct, fresh)
    assert updated(app, 3) == 204  # a redelivery, or another message of the same version: nothing again
    assert len(jobs(klaviyo, SUBSCRIBE)) == 1
    assert klaviyo.confirmations_sent == [(NEWS, EMAIL)]
    assert klaviyo.consent(EMAIL) == "NEVER_SUBSCRIBED"  # until the person confirms


def test_late_realtime_consent_is_history_with_the_customers_time(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS, double_optin=True)
    put(ct, customer(modified=OLD, newsletter=True))
    assert updated(app_for(EMAIL_CONSENT), 3) == 204
    assert jobs(klaviyo, SUBSCRIBE) == [job("email", NEWS, [consented(at="2026-01-10T08:30:00Z")], historical=True)]
    assert klaviyo.consent(EMAIL) == "NEVER_SUBSCRIBED"  # Klaviyo processes the job later
    klaviyo.settle()
    assert klaviyo.confirmations_sent == []  # history bypasses double opt-in: nobody is mailed for it
    assert klaviyo.consent(EMAIL) == "SUBSCRIBED"


def test_backfill_after_hours_zero_makes_every_realtime_consent_fresh(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    put(ct, customer(modified=OLD, newsletter=True))
    assert updated(app_for({**EMAIL_CONSENT, "event": {"backfillAfterHours": 0}}), 3) == 204
    assert jobs(klaviyo, SUBSCRIBE) == [job("email", NEWS, [consented()])]


def test_a_future_last_modified_time_is_never_sent_as_consented_at(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    app = app_for({**EMAIL_CONSENT, "event": {"backfillAfterHours": 1}})
    put(ct, customer(modified="2026-01-10T08:30:00+00:00", newsletter=True))
    assert updated(app, 3) == 204
    [body] = jobs(klaviyo, SUBSCRIBE)
    at = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]
    assert at == {"consent": "SUBSCRIBED", "consented_at": "2026-01-10T08:30:00Z"}


def test_absent_or_false_consent_never_unsubscribes(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    app = app_for(EMAIL_CONSENT)
    put(ct, customer(version=3))  # no field: perhaps subscribed through a Klaviyo form
    assert updated(app, 3) == 204
    put(ct, customer(version=4, newsletter=False))  # always false, as far as the connector knows
    assert updated(app, 4) == 204
    assert jobs(klaviyo, SUBSCRIBE) == [] and jobs(klaviyo, UNSUBSCRIBE) == []
    put(ct, customer(version=5, newsletter=True))
    assert updated(app, 5) == 204
    put(ct, customer(version=6))  # the field removed: not an explicit withdrawal
    assert updated(app, 6) == 204
    assert jobs(klaviyo, UNSUBSCRIBE) == []
    assert len(jobs(klaviyo, SUBSCRIBE)) == 1


def test_true_to_false_unsubscribes_once_and_older_versions_are_not_applied(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    app = app_for(EMAIL_CONSENT)
    put(ct, customer(version=3, newsletter=True))
    assert updated(app, 3) == 204
    put(ct, customer(version=4, newsletter=False))
    assert updated(app, 4) == 204
    assert jobs(klaviyo, UNSUBSCRIBE) == [job("email", NEWS, [withdrawn()], subscribe=False)]
    assert record(ct) == {"version": 4, "email": False, "emailLists": []}
    assert updated(app, 4) == 204  # redelivered: already done
    put(ct, customer(version=3, newsletter=True))  # an older read (a lagging replica) must not resubscribe
    assert updated(app, 3) == 204
    assert len(jobs(klaviyo, UNSUBSCRIBE)) == 1 and len(jobs(klaviyo, SUBSCRIBE)) == 1
    klaviyo.settle()
    assert klaviyo.consent(EMAIL) == "UNSUBSCRIBED"


def test_custom_field_changed_from_true_unsubscribes_without_a_record(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    app = app_for(EMAIL_CONSENT)
    put(ct, customer(version=7, newsletter=False))
    other = message("customer", CUSTOMER_ID, "CustomerCustomFieldChanged", name="points", value=1, previousValue=0)
    assert deliver(app, other) == 204
    assert jobs(klaviyo, UNSUBSCRIBE) == []
    changed = message("customer", CUSTOMER_ID, "CustomerCustomFieldChanged", resourceVersion=7,
                      name="newsletter", value=False, previousValue=True)
    assert deliver(app, changed) == 204
    assert jobs(klaviyo, UNSUBSCRIBE) == [job("email", NEWS, [withdrawn()], subscribe=False)]


def test_sms_consent_needs_an_e164_phone_and_logs_why_without_personal_data(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        caplog: pytest.LogCaptureFixture) -> None:
    klaviyo.add_list(NEWS)
    klaviyo.add_list(SMS_LIST)
    app = app_for(BOTH)
    no_phone = customer(version=3, newsletter=True, smsOptIn=True)
    for address in no_phone["addresses"]:
        address.pop("mobile", None)
        address["phone"] = "07700 900123"  # national format: not E.164
    put(ct, no_phone)
    with caplog.at_level(logging.INFO):
        assert updated(app, 3) == 204
    assert jobs(klaviyo, SUBSCRIBE) == [job("email", NEWS, [consented()])]
    reasons = [r.getMessage() for r in caplog.records if "SMS" in r.getMessage()]
    assert reasons == [f"customer {CUSTOMER_ID}: no E.164 phone number on the customer's address: no SMS "
                       "subscription"]
    assert not any("07700" in r.getMessage() or EMAIL in r.getMessage() for r in caplog.records)

    put(ct, customer(version=4, newsletter=True, smsOptIn=True))  # now with the billing mobile
    assert updated(app, 4) == 204
    assert jobs(klaviyo, SUBSCRIBE)[1:] == [job("sms", SMS_LIST, [consented(channel="sms", phone_number=MOBILE)])]
    klaviyo.settle()
    assert klaviyo.consent(EMAIL, "sms") == "SUBSCRIBED"


def test_a_list_that_does_not_exist_is_a_dead_letter_and_a_klaviyo_outage_a_retry(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    app = app_for(EMAIL_CONSENT)
    put(ct, customer(newsletter=True))
    assert updated(app, 3) == 202  # 404 from Klaviyo: can never succeed, recorded
    assert [o["value"]["reason"] for o in ct.store["custom-objects"].values()
            if o["container"] != CONTAINER][0].startswith("klaviyo 404")
    assert record(ct) is None
    klaviyo.add_list(NEWS)
    klaviyo.fail_next("POST", SUBSCRIBE, 503, times=4)  # every attempt the client makes
    assert updated(app, 3) == 503  # delivered again later; nothing recorded as sent
    assert record(ct) is None
    assert klaviyo.faults_pending == 0
    assert updated(app, 3) == 204
    assert record(ct) == {"version": 3, "email": True, "emailLists": [NEWS]}


# --- stores: consent lists, profiles ----------------------------------------------------------------------------


def test_a_customer_of_a_store_lands_on_the_stores_list_and_carries_its_stores(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_list(NEWS)
    klaviyo.add_list(DE_NEWS)
    app = app_for({**EMAIL_CONSENT, "stores": {"de": DE_STORE_LIST}})
    german = customer(newsletter=True)
    german["stores"] = [{"typeId": "store", "key": "de"}]
    put(ct, german)
    assert updated(app, 3) == 204
    assert jobs(klaviyo, SUBSCRIBE) == [job("email", DE_NEWS, [consented()])]
    [profile] = klaviyo.profiles.values()
    assert profile["properties"]["Stores"] == ["de"]
    other = customer(version=4, newsletter=True)
    other["stores"] = [{"typeId": "store", "key": "de"}, {"typeId": "store", "key": "at"}]  # at: not configured
    put(ct, other)
    assert updated(app, 4) == 204
    assert jobs(klaviyo, SUBSCRIBE)[1:] == [job("email", NEWS, [consented()])]  # the global list for `at`
    assert record(ct) == {"version": 4, "email": True, "emailLists": [DE_NEWS, NEWS]}


# --- stores: order events ---------------------------------------------------------------------------------------


def placed(klaviyo: FakeKlaviyo) -> list[dict[str, Any]]:
    return [r.body["data"]["attributes"] for r in klaviyo.requests if r.method == "POST" and r.path == "/api/events"]


def test_an_order_of_a_store_is_named_priced_and_linked_for_that_store(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    app = app_for({"stores": {"de": DE_STORE}})
    order = fixture("order_placed")
    order["store"] = {"typeId": "store", "key": "de"}
    assert deliver(app, message("order", ORDER_ID, "OrderCreated", order=order)) == 204
    events = placed(klaviyo)
    assert [e["metric"]["data"]["attributes"]["name"] for e in events] == [
        "Placed Order", "Ordered Product", "Ordered Product", "Ordered Product"]  # never per store
    assert {e["properties"]["Store"] for e in events} == {"de"}
    first = events[0]
    assert first["properties"]["ItemNames"][0] == "Schmale Jeans"
    assert first["properties"]["Items"][0]["ProductURL"] == "https://shop.example.de/p/schmale-jeans"
    assert first["properties"]["Items"][0]["ProductName"] == "Schmale Jeans"
    assert (first["value_currency"], first["properties"]["Items"][0]["ItemPrice"]) == ("EUR", 49.99)
    assert events[1]["properties"]["ProductURL"] == "https://shop.example.de/p/schmale-jeans"


@pytest.mark.parametrize("store", [None, "fr"], ids=["no store", "unknown store"])
def test_an_order_without_a_configured_store_uses_the_global_settings(
        store: str | None, app_for: Callable[..., TestClient], ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    app = app_for({"stores": {"de": DE_STORE}})
    order = fixture("order_placed")
    if store:
        order["store"] = {"typeId": "store", "key": store}
    assert deliver(app, message("order", ORDER_ID, "OrderCreated", order=order)) == 204
    events = placed(klaviyo)
    assert [e["properties"].get("Store") for e in events] == [store] * 4
    assert events[0]["properties"]["ItemNames"][0] == "Slim Jeans"
    assert events[0]["properties"]["Items"][0]["ProductURL"] == "https://shop.example.com/products/slim-jeans"


def test_the_one_catalog_carries_each_stores_view_of_a_product(
        app_for: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_product(ct)
    app = app_for({"stores": {"de": DE_STORE, "us": {"currency": "USD"}}})
    assert deliver(app, published()) == 204
    [item] = klaviyo.items.values()
    metadata = item["attributes"]["custom_metadata"]
    stores = json.loads(metadata["stores_json"])
    assert stores["de"]["title"] == "Slim-Fit-Jeans"
    assert stores["de"]["url"] == "https://shop.example.de/p/slim-fit-jeans-damen"
    assert stores["de"]["currency"] == "EUR"
    assert (stores["us"]["title"], stores["us"]["currency"]) == ("Slim Fit Jeans", "USD")
    assert stores["us"]["url"] == "https://shop.example.com/products/slim-fit-jeans"
    assert item["attributes"]["title"] == "Slim Fit Jeans"  # the item itself keeps the global settings
    assert len(klaviyo.items) == 1  # one catalog: one item per product, whatever the stores


# --- bulk -------------------------------------------------------------------------------------------------------


@pytest.fixture
def fast_services(configure: Callable[..., Settings]) -> Iterator[Callable[..., JobService]]:
    """JobServices whose Klaviyo bulk sender polls without sleeping (the subscription checks are counted)."""
    contexts = []

    def make(config: dict[str, Any] | None = None) -> JobService:
        context = build_context(configure(config))
        contexts.append(context)
        return JobService(context, lambda k: KlaviyoBulk(k, poll_interval=0.01, sleep=lambda _s: None))

    yield make
    for context in contexts:
        close_context(context)


def test_bulk_import_subscribes_as_history_checks_the_outcome_and_unsubscribes_on_true_to_false(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, fast_services: Callable[..., JobService]) -> None:
    klaviyo.add_list(NEWS, double_optin=True)
    klaviyo.subscription_requests_until_processed = 2  # still processing at the first check
    future = iso(NOW + timedelta(days=2))
    customers = [make_customer(1, custom=custom_fields(newsletter=True)),
                 make_customer(2, custom=custom_fields(newsletter=False)),
                 make_customer(3, custom=custom_fields()),
                 make_customer(4, custom=custom_fields(newsletter=True), lastModifiedAt=future)]
    for item in customers:
        ct.add("customers", item)
    service = fast_services(EMAIL_CONSENT)
    service.request("customers", {})
    [summary] = service.run()
    assert summary["counts"]["failed"] == 0
    [body] = jobs(klaviyo, SUBSCRIBE)
    profiles = body["data"]["attributes"]["profiles"]["data"]
    assert body["data"]["attributes"]["historical_import"] is True
    assert profiles[0]["attributes"] == consented("customer1@example.com", at="2026-09-02T08:00:00Z")
    at = profiles[1]["attributes"]["subscriptions"]["email"]["marketing"]["consented_at"]
    assert profiles[1]["attributes"]["email"] == "customer4@example.com"
    assert datetime.fromisoformat(at) <= datetime.now(UTC)  # never the future lastModifiedAt
    assert jobs(klaviyo, UNSUBSCRIBE) == []
    assert [klaviyo.consent(f"customer{n}@example.com") for n in (1, 2, 3, 4)] == [
        "SUBSCRIBED", "NEVER_SUBSCRIBED", "NEVER_SUBSCRIBED", "SUBSCRIBED"]
    assert klaviyo.confirmations_sent == []
    assert record(ct, customers[0]["id"]) == {"version": 3, "email": True, "emailLists": [NEWS]}

    service.request("customers", {})  # a second run: nothing to send again
    service.run()
    assert len(jobs(klaviyo, SUBSCRIBE)) == 1

    withdrawn_customer = {**customers[0], "version": 4, "custom": custom_fields(newsletter=False)}
    put(ct, withdrawn_customer)
    service.request("customers", {})
    service.run()
    assert jobs(klaviyo, UNSUBSCRIBE) == [job("email", NEWS, [withdrawn("customer1@example.com")], subscribe=False)]
    assert klaviyo.consent("customer1@example.com") == "UNSUBSCRIBED"  # checked by the import itself


def test_bulk_subscription_refused_later_is_counted_failed_and_sent_again_next_run(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, fast_services: Callable[..., JobService]) -> None:
    klaviyo.add_list(NEWS)
    customers = [make_customer(n, custom=custom_fields(newsletter=True)) for n in (1, 2)]
    for item in customers:
        ct.add("customers", item)
    klaviyo.refuse_subscriptions = {"customer2@example.com"}
    service = fast_services(EMAIL_CONSENT)
    service.request("customers", {})
    [summary] = service.run()
    assert summary["counts"]["failed"] == 1
    assert any(customers[1]["id"] in error and "email consent" in error for error in summary["errors"])
    assert not any("customer2@example.com" in error for error in summary["errors"])
    assert record(ct, customers[0]["id"]) is not None and record(ct, customers[1]["id"]) is None
    klaviyo.refuse_subscriptions = set()
    service.request("customers", {})
    [summary] = service.run()
    assert summary["counts"]["failed"] == 0
    sent_twice = [p["attributes"]["email"] for body in jobs(klaviyo, SUBSCRIBE)
                  for p in body["data"]["attributes"]["profiles"]["data"]]
    assert sent_twice == ["customer1@example.com", "customer2@example.com", "customer2@example.com"]
    assert klaviyo.consent("customer2@example.com") == "SUBSCRIBED"


def test_bulk_refusals_cost_only_the_customers_they_concern(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, fast_services: Callable[..., JobService]) -> None:
    klaviyo.add_list(NEWS)  # the `de` store's list does not exist in Klaviyo
    customers = [make_customer(n, custom=custom_fields(newsletter=True)) for n in (1, 2, 3)]
    customers[2]["stores"] = [{"typeId": "store", "key": "de"}]
    for item in customers:
        ct.add("customers", item)
    klaviyo.fail_next("POST", SUBSCRIBE, 400)  # the job of customers 1 and 2, refused as a whole
    service = fast_services({**EMAIL_CONSENT, "stores": {"de": DE_STORE_LIST}})
    service.request("customers", {})
    [summary] = service.run()
    assert summary["counts"]["failed"] == 1
    assert [e for e in summary["errors"] if "consent" in e] == [
        f"customer {customers[2]['id']}: Klaviyo refused the consent change (klaviyo 404: Not found.; "
        "code=not_found; field=/data/relationships/list; detail=A list with id '…' does not exist.)"]
    sizes = [len(r.body["data"]["attributes"]["profiles"]["data"]) for r in klaviyo.calls("POST", SUBSCRIBE)]
    assert sizes == [2, 1, 1, 1]  # the refused job again one profile at a time; then the `de` job
    assert [klaviyo.consent(f"customer{n}@example.com") for n in (1, 2, 3)] == [
        "SUBSCRIBED", "SUBSCRIBED", "NEVER_SUBSCRIBED"]


def test_a_dry_run_writes_the_subscription_jobs_and_records_nothing(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Callable[..., tuple[int, str, str]],
        tmp_path: Path) -> None:
    customers = [make_customer(n, custom=custom_fields(newsletter=True)) for n in (1, 2)]
    for item in customers:
        ct.add("customers", item)
    out_file = tmp_path / "dry.jsonl"
    config = {**EMAIL_CONSENT, "dryRun": {"file": str(out_file)}}
    code, _out, _err = cli("sync", "customers", "--dry-run", config=config)
    assert code == 0 and klaviyo.requests == []
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/api/profile-bulk-import-jobs", SUBSCRIBE]
    assert lines[1]["body"] == job("email", NEWS, [consented("customer1@example.com", at="2026-09-02T08:00:00Z"),
                                                   consented("customer2@example.com", at="2026-09-03T08:00:00Z")],
                                   historical=True)
    assert [record(ct, c["id"]) for c in customers] == [None, None]


def test_bulk_orders_of_a_store_carry_it_with_the_stores_names(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, fast_services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    german = fixture("order_placed")
    german["store"] = {"typeId": "store", "key": "de"}
    ct.add("orders", german)
    plain = fixture("order_placed")
    plain["id"] = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a11"
    plain["lineItems"] = [{**line, "id": line["id"][:-1] + "9"} for line in plain["lineItems"]]
    ct.add("orders", plain)
    service = fast_services({"stores": {"de": DE_STORE}})
    service.request("orders", {})
    service.run()
    placed_orders = {e["properties"]["OrderId"]: e for e in klaviyo.events
                     if e["metric"]["data"]["attributes"]["name"] == "Placed Order"}
    assert placed_orders[ORDER_ID]["properties"]["Store"] == "de"
    assert placed_orders[ORDER_ID]["properties"]["ItemNames"][0] == "Schmale Jeans"
    assert "Store" not in placed_orders[plain["id"]]["properties"]
    assert placed_orders[plain["id"]]["properties"]["ItemNames"][0] == "Slim Jeans"


# --- post-deploy ------------------------------------------------------------------------------------------------


def test_post_deploy_subscribes_to_custom_field_messages_only_with_consent(
        ct: FakeCommercetools, env: dict[str, str]) -> None:
    base = {**env, "CONNECT_GCP_PROJECT_ID": "shop-gcp", "CONNECT_GCP_TOPIC_NAME": "klaviyo-topic"}
    base.pop("KLAVIYO_AUTH_KEY")

    def customer_types() -> list[str]:
        [subscription] = [s for s in ct.store["subscriptions"].values() if s["key"].endswith("-customer")]
        return subscription["messages"][0]["types"]

    assert deploy_main(["post-deploy"], base) == 0
    assert not any("CustomField" in t or "CustomType" in t for t in customer_types())
    assert deploy_main(["post-deploy"], {**base, "NODE_CONFIG": json.dumps(EMAIL_CONSENT)}) == 0
    assert {"CustomerCustomFieldAdded", "CustomerCustomFieldChanged", "CustomerCustomFieldRemoved",
            "CustomerCustomTypeSet", "CustomerCustomTypeRemoved"} <= set(customer_types())


# --- configuration ----------------------------------------------------------------------------------------------


def test_store_and_consent_settings_are_read(configure: Callable[..., Settings]) -> None:
    settings = configure({**BOTH, "stores": {"de": DE_STORE_LIST, "at": {"locale": "de-AT"}},
                          "event": {"backfillAfterHours": 0}})
    assert settings.customer.consent_email.field == "newsletter" and settings.customer.consent_sms.list_id == SMS_LIST
    assert settings.stores["de"].email_list_id == DE_NEWS and settings.stores["de"].currency == "EUR"
    assert settings.stores["at"].locale == "de-AT" and settings.backfill_after_hours == 0
    assert configure().customer.consent_configured is False and configure().stores == {}


@pytest.mark.parametrize(("config", "problem"), [
    ({"customer": {"consent": {"email": {"fields": "x"}}}}, "customer.consent.email.fields: unknown configuration key"),
    ({"customer": {"consent": {"push": {}}}}, "customer.consent.push: unknown configuration key"),
    ({"customer": {"consent": {"email": {"field": "newsletter"}}}}, "customer.consent.email.listId: required"),
    ({"customer": {"consent": {"sms": {"field": True}}}}, "customer.consent.sms.field: must be a string"),
    ({"stores": ["de"]}, "stores: must be a mapping of store keys to overrides"),
    ({"stores": {"de": "de-DE"}}, "stores.de: must be a mapping of overrides"),
    ({"stores": {"d e": {}}}, "stores.d e: is not a commercetools store key"),
    ({"stores": {"de": {"language": "de"}}}, "stores.de.language: unknown configuration key"),
    ({"stores": {"de": {"locale": "German"}}}, "stores.de.locale: 'German' is not a locale"),
    ({"stores": {"de": {"currency": "euro"}}}, "stores.de.currency: 'EURO' is not an ISO 4217 code"),
    ({"stores": {"de": {"productUrlTemplate": "https://x.de/p"}}}, "stores.de.productUrlTemplate: must contain"),
    ({"stores": {"de": {"consent": {"email": {"listId": "L"}}}}},
     "stores.de.consent.email.listId: has no effect unless customer.consent.email.field is set"),
    ({"stores": {"de": {"consent": {"email": "L"}}}}, "stores.de.consent.email: must be a mapping with only listId"),
    ({"stores": {"de": {"consent": {"push": {}}}}}, "stores.de.consent.push: unknown configuration key"),
    ({"stores": {"de": {"klaviyoAuthKeyVar": "DE_KEY"}}}, "stores.de.klaviyoAuthKeyVar: unknown configuration key"),
    ({"event": {"backfillAfterHours": -1}}, "event.backfillAfterHours: must be a number, 0 or more"),
])
def test_configuration_errors_name_the_key(config: dict[str, Any], problem: str,
                                           configure: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as raised:
        configure(config)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_invalid_store_configuration_stops_start_up_with_exit_code_2(
        cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("status", config={"stores": {"de": {"locale": "German"}}})
    assert exited.value.code == 2
    assert "stores.de.locale: 'German' is not a locale" in capsys.readouterr().err
