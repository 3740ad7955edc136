"""End to end through the event app: customer and category deliveries reach Klaviyo exactly as its API expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from shared.config import Settings
from shared.ownership import CATEGORY_CONTAINER
from tests.builders import change, message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
JEANS = "c3a1b2d4-0000-4000-8000-00000000jean"
EXPECTED_PROFILE = {
    "email": "roberto.smith@example.com",
    "external_id": CUSTOMER_ID,
    "first_name": "Roberto",
    "last_name": "Smith",
    "title": "Mr",
    "organization": "Klaviyo",
    "phone_number": "+447700900123",
    "location": {"address1": "Apt 5, Flat 2, 221B, Baker Street", "address2": "Back entrance, Ring twice",
                 "city": "London", "country": "GB", "region": "Greater London", "zip": "NW1 6XE"},
    "properties": {"includedField": "kept", "ignoredField": "dropped", "newsletter": False, "points": 0},
}


def writes(klaviyo: FakeKlaviyo) -> list[tuple[str, str, Any]]:
    """The writes Klaviyo accepted (failures, injected or real, left out)."""
    return [(r.method, r.path, r.body) for r in klaviyo.requests if r.method != "GET" and r.status < 400]


def post(app: TestClient, notification: dict[str, Any]) -> int:
    return app.post("/", json=pubsub(notification)).status_code


def seed_categories(ct: FakeCommercetools) -> None:
    for name in ("category_women", "category_pants", "category_jeans"):
        ct.add("categories", fixture(name))


# --- customers ------------------------------------------------------------------------------------------------


def test_customer_created_creates_the_profile(event_app: TestClient, ct: FakeCommercetools,
                                             klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))  # the write is based on the customer as commercetools has it now
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    assert post(event_app, notification) == 204
    lookup = [r for r in klaviyo.requests if r.method == "GET"]
    assert [(r.path, r.query["filter"]) for r in lookup] == [
        ("/api/profiles", f'equals(external_id,"{CUSTOMER_ID}")')]
    assert writes(klaviyo) == [("POST", "/api/profile-import",
                                {"data": {"type": "profile", "attributes": EXPECTED_PROFILE}})]
    request = klaviyo.requests[-1]
    assert request.headers["authorization"] == "Klaviyo-API-Key pk_test_0123456789abcdef"
    assert request.headers["revision"] == "2026-07-15"
    assert request.headers["user-agent"].startswith("commercetools-klaviyo-connector-python/")


def test_customer_created_without_payload_fetches_the_customer(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))
    notification = message("customer", CUSTOMER_ID, "CustomerCreated",
                           payloadNotIncluded={"reason": "too large", "payloadType": "CustomerCreated"})
    assert post(event_app, notification) == 204
    assert [r.path for r in ct.requests if r.method == "GET"] == [f"/test-project/customers/{CUSTOMER_ID}"]
    assert writes(klaviyo)[0][2]["data"]["attributes"] == EXPECTED_PROFILE


def test_existing_profile_is_updated_by_its_id(event_app: TestClient, ct: FakeCommercetools,
                                               klaviyo: FakeKlaviyo) -> None:
    profile_id = klaviyo.add_profile({"email": "roberto.smith@example.com", "external_id": CUSTOMER_ID})
    ct.add("customers", fixture("customer"))
    assert post(event_app, change("ResourceUpdated", "customer", CUSTOMER_ID)) == 204
    assert writes(klaviyo) == [("POST", "/api/profile-import", {"data": {
        "type": "profile", "id": profile_id, "attributes": EXPECTED_PROFILE}})]
    assert klaviyo.profiles[profile_id]["first_name"] == "Roberto"


def test_deduplication_matches_the_email_case_insensitively(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    profile_id = klaviyo.add_profile({"email": "Roberto.Smith@Example.com"})
    customer = fixture("customer")
    customer["email"] = "Roberto.Smith@Example.com"
    ct.add("customers", customer)
    with TestClient(create_app(configure({"customer": {"deduplication": {"enabled": True}}}))) as app:
        assert post(app, message("customer", CUSTOMER_ID, "CustomerCreated", customer=customer)) == 204
    lookups = [r.query["filter"] for r in klaviyo.requests if r.method == "GET"]
    assert lookups == [f'equals(external_id,"{CUSTOMER_ID}")', 'equals(email,"Roberto.Smith@Example.com")']
    (_, _, body), = writes(klaviyo)
    assert body["data"]["id"] == profile_id
    assert klaviyo.profiles[profile_id]["external_id"] == CUSTOMER_ID


@pytest.mark.parametrize("message_type, fields", [
    ("CustomerAddressAdded", {"address": {"id": "a", "country": "GB"}}),
    ("CustomerAddressChanged", {"address": {"id": "a", "country": "GB"}}),
    ("CustomerAddressRemoved", {"address": {"id": "a", "country": "GB"}}),
    ("CustomerFirstNameSet", {"firstName": "Roberto"}),
    ("CustomerLastNameSet", {"lastName": "Smith"}),
    ("CustomerTitleSet", {"title": "Mr"}),
    ("CustomerCompanyNameSet", {"companyName": "Klaviyo"}),
])
def test_customer_field_messages_sync_the_current_customer(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, message_type: str,
        fields: dict[str, Any]) -> None:
    ct.add("customers", fixture("customer"))
    assert post(event_app, message("customer", CUSTOMER_ID, message_type, **fields)) == 204
    assert writes(klaviyo) == [("POST", "/api/profile-import",
                                {"data": {"type": "profile", "attributes": EXPECTED_PROFILE}})]


def test_customer_without_email_is_ignored(event_app: TestClient, ct: FakeCommercetools,
                                          klaviyo: FakeKlaviyo) -> None:
    customer = fixture("customer")
    del customer["email"]
    ct.add("customers", customer, check_shape=False)  # impossible in the API: the connector's defence is tested
    response = event_app.post("/", json=pubsub(message("customer", CUSTOMER_ID, "CustomerCreated",
                                                       customer=customer)))
    assert response.status_code == 204
    assert writes(klaviyo) == []


def test_customer_gone_from_commercetools_is_ignored(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    assert post(event_app, change("ResourceUpdated", "customer", CUSTOMER_ID)) == 204
    assert klaviyo.requests == []


@pytest.mark.parametrize("notification", [
    change("ResourceDeleted", "customer", CUSTOMER_ID),
    message("customer", CUSTOMER_ID, "CustomerDeleted"),
])
def test_deleted_customer_requests_profile_deletion(event_app: TestClient, klaviyo: FakeKlaviyo,
                                                    notification: dict[str, Any]) -> None:
    profile_id = klaviyo.add_profile({"email": "roberto.smith@example.com", "external_id": CUSTOMER_ID})
    assert post(event_app, notification) == 204
    assert writes(klaviyo) == [("POST", "/api/data-privacy-deletion-jobs", {"data": {
        "type": "data-privacy-deletion-job",
        "attributes": {"profile": {"data": {"type": "profile", "id": profile_id, "attributes": {}}}}}})]


def test_customer_deletion_can_be_switched_off(configure: Callable[..., Settings], klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_profile({"email": "roberto.smith@example.com", "external_id": CUSTOMER_ID})
    with TestClient(create_app(configure({"customer": {"deletion": {"enabled": False}}}))) as app:
        assert post(app, change("ResourceDeleted", "customer", CUSTOMER_ID)) == 204
    assert klaviyo.requests == []


# --- categories -----------------------------------------------------------------------------------------------


def test_category_created_creates_the_catalog_category(event_app: TestClient, ct: FakeCommercetools,
                                                       klaviyo: FakeKlaviyo) -> None:
    seed_categories(ct)
    assert post(event_app, message("category", JEANS, "CategoryCreated", category=fixture("category_jeans"))) == 204
    fetch = [r for r in ct.requests if r.method == "GET"]
    assert [(r.path, r.query.get("expand")) for r in fetch] == [
        (f"/test-project/categories/{JEANS}", ["ancestors[*]"])]
    assert writes(klaviyo) == [("POST", "/api/catalog-categories", {"data": {
        "type": "catalog-category",
        "attributes": {"external_id": JEANS, "name": "Women > Pants > Jeans", "integration_type": "$custom",
                       "catalog_type": "$default"}}})]
    assert ct.get_custom_object(CATEGORY_CONTAINER, JEANS) is not None  # marked as ours (Klaviyo keeps no mark)


def test_category_created_twice_updates_instead(event_app: TestClient, ct: FakeCommercetools,
                                                klaviyo: FakeKlaviyo) -> None:
    seed_categories(ct)
    notification = message("category", JEANS, "CategoryCreated")
    assert post(event_app, notification) == 204
    assert post(event_app, notification) == 204  # a redelivery
    kid = f"$custom:::$default:::{JEANS}"
    assert [(r.method, r.path, r.status) for r in klaviyo.requests] == [
        ("POST", "/api/catalog-categories", 201),
        ("POST", "/api/catalog-categories", 409),  # exists: the redelivery turns into an update
        ("PATCH", f"/api/catalog-categories/{kid}", 200)]
    assert len(klaviyo.categories) == 1


def test_category_updated_renames_or_creates(event_app: TestClient, ct: FakeCommercetools,
                                             klaviyo: FakeKlaviyo) -> None:
    seed_categories(ct)
    assert post(event_app, change("ResourceUpdated", "category", JEANS)) == 204  # not in Klaviyo yet: created
    ct.store["categories"][JEANS]["name"]["en-US"] = "Denim"
    assert post(event_app, change("ResourceUpdated", "category", JEANS, version=3)) == 204
    kid = f"$custom:::$default:::{JEANS}"
    assert [(m, p) for m, p, _ in writes(klaviyo)] == [
        ("POST", "/api/catalog-categories"), ("PATCH", f"/api/catalog-categories/{kid}")]
    assert writes(klaviyo)[-1][2] == {"data": {"type": "catalog-category", "id": kid,
                                               "attributes": {"name": "Women > Pants > Denim"}}}
    assert klaviyo.categories[kid]["attributes"]["name"] == "Women > Pants > Denim"


def test_category_deleted_is_deleted(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_categories(ct)
    post(event_app, message("category", JEANS, "CategoryCreated"))
    assert post(event_app, change("ResourceDeleted", "category", JEANS)) == 204
    assert writes(klaviyo)[-1][:2] == ("DELETE", f"/api/catalog-categories/$custom:::$default:::{JEANS}")
    assert klaviyo.categories == {}
    assert post(event_app, change("ResourceDeleted", "category", JEANS, version=4)) == 204  # already gone: fine


# --- routing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, notification", [
    ("CustomerCreated", message("customer", CUSTOMER_ID, "CustomerCreated", customer={"id": CUSTOMER_ID})),
    ("CategoryCreated", message("category", JEANS, "CategoryCreated")),
    ("CategoryResourceDeleted", change("ResourceDeleted", "category", JEANS)),
    ("CustomerResourceUpdated", change("ResourceUpdated", "customer", CUSTOMER_ID)),
])
def test_disabled_processors_do_nothing(configure: Callable[..., Settings], ct: FakeCommercetools,
                                        klaviyo: FakeKlaviyo, name: str, notification: dict[str, Any]) -> None:
    with TestClient(create_app(configure({"disabledEvents": [name]}))) as app:
        response = app.post("/", json=pubsub(notification))
    assert response.status_code == 204
    assert klaviyo.requests == [] and [r for r in ct.requests if r.path != "/oauth/token"] == []


@pytest.mark.parametrize("notification", [
    message("quote", "q-1", "QuoteCreated"),
    message("customer", CUSTOMER_ID, "CustomerEmailVerified"),
    change("ResourceCreated", "subscription", "sub-1"),  # commercetools' test notification
])
def test_notifications_no_processor_handles_are_acknowledged(event_app: TestClient, klaviyo: FakeKlaviyo,
                                                            notification: dict[str, Any]) -> None:
    assert post(event_app, notification) == 204
    assert klaviyo.requests == []


def test_bare_notification_and_sns_envelope_are_accepted(event_app: TestClient, ct: FakeCommercetools,
                                                         klaviyo: FakeKlaviyo) -> None:
    import json

    ct.add("customers", fixture("customer"))
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    assert event_app.post("/", json=notification).status_code == 204
    sns = {"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:eu-central-1:1:t",
           "Message": json.dumps(notification)}
    assert event_app.post("/", json=sns).status_code == 204
    assert [p for _, p, _ in writes(klaviyo)] == ["/api/profile-import", "/api/profile-import"]


def test_health(event_app: TestClient) -> None:
    response = event_app.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
